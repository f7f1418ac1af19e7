// common.h: small things every layer, the model and the trainers share.
//  - Rng: a 64-bit xoshiro256** generator with a Box-Muller normal. Written out (rather than
//    std::mt19937 + std::normal_distribution) because its whole state is four integers that a
//    checkpoint can store, and its output is the same with every compiler, so --resume and
//    initialisation are bit-exact everywhere.
//  - check(): turns a broken precondition into an exception with a one-line message; the
//    binaries catch it in main, print "error: <message>" and exit non-zero.
//  - FOCUS_HOST_DEVICE: marks a function that compiles for the CPU and, under nvcc, the GPU too, so
//    that the CPU reference and a kernel share one formula.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>

#ifdef __CUDACC__
#define FOCUS_HOST_DEVICE __host__ __device__
#else
#define FOCUS_HOST_DEVICE
#endif

namespace focus {

struct Error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// printf-style formatting into a std::string, for error messages.
template <typename... Args>
std::string format(const char* fmt, Args... args) {
    int n = std::snprintf(nullptr, 0, fmt, args...);
    std::string s(n > 0 ? n : 0, '\0');
    std::snprintf(s.data(), s.size() + 1, fmt, args...);
    return s;
}

inline void check(bool ok, const std::string& message) {
    if (!ok) throw Error(message);
}

// The main() of every binary: runs `run`, and any exception (a focus::Error for bad input) ends
// the program with one line "error: <message>" on stderr and exit status 1.
template <typename Run>
int run_reporting_errors(Run run, int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}

struct Rng {
    uint64_t s[4];

    explicit Rng(uint64_t seed = 0) { reseed(seed); }

    void reseed(uint64_t seed) {
        // splitmix64 spreads one seed over the four state words (all-zero state is invalid).
        for (auto& word : s) {
            seed += 0x9E3779B97F4A7C15ull;
            uint64_t z = seed;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
            word = z ^ (z >> 31);
        }
    }

    uint64_t next_u64() {
        auto rotl = [](uint64_t x, int k) { return (x << k) | (x >> (64 - k)); };
        uint64_t result = rotl(s[1] * 5, 7) * 9;
        uint64_t t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = rotl(s[3], 45);
        return result;
    }

    // uniform in [0, 1) with 53 random bits
    double uniform() { return (next_u64() >> 11) * 0x1.0p-53; }

    // uniform integer in [0, n); the modulo bias is below 2^-40 for any n we use
    uint64_t below(uint64_t n) { return next_u64() % n; }

    double normal(double mean = 0.0, double std = 1.0) {
        double u1 = uniform(), u2 = uniform();
        if (u1 < 1e-300) u1 = 1e-300;
        return mean + std * std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
    }
};

}  // namespace focus
