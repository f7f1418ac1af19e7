// flash_attention.cuh: fused, tiled ("flash") causal attention for softmax and Elastic-Softmax, and for
// window and block attention (softmax over the keys sparse.h lets a row see), forward and backward, with
// RoPE and the per-distance bias inside the kernels and no T x T matrix anywhere:
// memory O(B NH T) beyond the inputs. The same interface as attention.cuh's attention_forward/backward
// otherwise (layouts in attention.h), so the two are interchangeable for these kinds; the per-element
// formulas are in flash_attention.h, shared with the CPU test of this scheme (test_attention.cpp).
//
// The math (ATTENTION_SPEC.md; t the 0-based query row, i = t + 1, c_t = tau_h / i, tau = 0 for softmax):
//   s_tj = R_t q_t . R_j k_j / sqrt(hs) + b_h[t - j] (t - j < W), j <= t;  p_tj = exp(s_tj - M_t) / L_t
//   (window and block: s_tj = -inf, p_tj = 0 for the keys row t does not see, as for j > t; a key tile
//   that no row of a query tile sees is skipped by every loop, so they cost O(T k), not O(T^2))
//   with M_t, L_t the row's maximum and sum of exp(s - M_t) (the "row state", saved for the backward).
//   Both are kept rather than their log-sum-exp: exp(s - M) / L is softmax.h's formula, so a uniform row
//   gets p = 1 / i exactly and, with tau = 1, elastic weights of exactly 0, as on the CPU.
//   softmax   o_t = sum_j p_tj v_j, in one pass over the key tiles with a running maximum and sum
//             (online softmax: the sum and the output so far are rescaled when the maximum grows).
//   elastic   a_tj = max(0, p_tj - c_t) needs the final M_t and L_t, so two passes: pass 1 runs the
//             maximum and sum only; pass 2 recomputes s, p and accumulates o_t = sum_j a_tj v_j.
//             Pass 2 skips the a.V product of a key tile whose weights are all 0 (every p <= c). The spec's
//             test "max_j s_tj <= M_t + log(L_t c_t) for every row" predicts the same thing but through
//             a log and an exp of its own, so it can disagree with the p the weights use where p is
//             within a rounding of c; testing the computed weights themselves is exact, and they are
//             computed anyway.
//   backward  g_tj = dO_t . v_j,  dS_tj = p_tj (m_tj g_tj - delta_t),  m_tj = 1[p_tj > c_t],
//             delta_t = sum_k m_tk p_tk g_tk,  dq_t = R_t^T sum_j dS_tj k~_j / sqrt(hs),
//             dk_j = R_j^T sum_t dS_tj q~_t / sqrt(hs),  dv_j = sum_t a_tj dO_t,
//             dtau_h = -sum_t (1/i) sum_j m_tj g_tj,  db_h[r] = sum_t dS_t,t-r  (q~, k~ rotated).
//             softmax: delta_t = dO_t . o_t (the saved output; p sums to 1 and m = 1 wherever p > 0).
//             elastic: delta_t is recomputed in a pass of its own over the row's key tiles (s, p and g),
//             rather than taken from o~_t = o_t + c_t sum_{m=1} v_k: that would need the sum of the kept
//             v's saved per row (hs floats, or a second accumulator in the forward), and o_t of a
//             near-uniform row is a small difference stored in bf16, where delta must be exact enough to
//             make sum_j dS_tj = 0. The same pass gives the row's dtau term, which needs every m g anyway.
//             Only m g enters the backward, so elastic also skips G = dO V^T (and dV += a.dO) for a tile
//             where no key passes the cut, the backward's counterpart of the forward's skip.
//             Cost, in tile products of the causal size: softmax forward 2, backward 7 (dq pass: S, G,
//             dQ; dk/dv pass: S, G, dV, dK); elastic forward 3 (S twice, a.V), backward 9 (+ S, G for
//             delta), less the skipped tiles: about 1.3x softmax when few tiles are skipped.
// How the work is split (TILE queries x TILE keys per tile, TILE = 64, or 32 where 64 would not fit the
// shared memory: head size 128, and every tile of the fp32 build; FLASH_THREADS = 128, four warps):
//   rope_table_kernel      cos and sin of every (position, pair) once per call (Context scratch), so
//                          the tile loads rotate q and k without trigonometry.
//   flash_forward_kernel   one block per (query tile, b, h), longest rows first. q, k, v tiles (rotated
//                          on load) in shared memory; S = Q K^T and O += W V on tensor cores (wmma bf16
//                          16x16x16, fp32 accumulation; plain FMA in the fp32 build) with the output
//                          accumulator in shared memory; the element work (mask, bias, exp, cut) with
//                          FLASH_THREADS / TILE threads per query row, the row's maximum and sum in their
//                          registers. Writes out (whole rows, from the accumulator) and the row state.
//   flash_query_kernel     one block per (query tile, b, h): delta_t (saved for the key kernel), the
//                          tile's dtau term, then per key tile S, G = dO V^T, dS, dQ += dS K, and the
//                          bias gradient: one thread per diagonal of the dS tile adds it, rows in order,
//                          into the block's per-distance sums in shared memory. Writes dq (+=, unrotated)
//                          and the block's partial sums of db and dtau.
//   flash_key_kernel       one block per (key tile, b, h), looping over the query tiles at and after it:
//                          S, G, a and dS per tile, dV += A^T dO and dK += dS^T Q, dK and dV held in
//                          registers (wmma fragments) across the loop. Writes dk (+=, unrotated), dv (+=).
//   parameter_gradients_kernel (attention.cuh) adds the partials of db and dtau over (b, query tile) in
//                          order and applies dtheta = sign(theta + 1) dtau.
// Every output element has one writer and every sum a fixed order (tile loops in order, fixed wmma
// fragment owners, shuffle reductions of a fixed shape): no atomics, bit-identical results run to run.
// Supported: softmax, elastic, window and block (with global tokens), learned or rope, any bias window,
// head sizes 32, 64 and 128, any T. Not topk: its keys depend on the whole row's scores.
#pragma once
#include <mma.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "attention.cuh"
#include "flash_attention.h"

namespace focus::gpu {

constexpr int FLASH_THREADS = 128;
// Blocks per SM the kernels are compiled for (__launch_bounds__): at head size 64 on an H100 the shared
// memory of a backward kernel leaves room for two, so a thread may use up to 255 registers. Without the
// bound ptxas aimed at three or four blocks on its own and spilled registers to get there (dev/RESULTS.md).
constexpr int FLASH_MIN_BLOCKS = 2;

constexpr size_t round_up_128(size_t bytes) { return (bytes + 127) / 128 * 128; }

// The tile shape and the shared-memory arrays of the kernels for head size HS. Row pitches carry a few
// elements of padding against bank conflicts, keeping every row 32-byte aligned as wmma requires.
template <int HS>
struct FlashTiles {
    static constexpr int TILE = sizeof(floatX) == 2 && HS <= 64 ? 64 : 32;
    static constexpr int HEAD_PITCH = HS + 8;      // floatX per row of a q, k, v or dO tile [TILE, HS]
    static constexpr int SCORE_PITCH = TILE + 4;   // floats per row of a score-sized tile [TILE, TILE]
    static constexpr int WEIGHT_PITCH = TILE + 8;  // floatX per row of a weight tile, a product operand
    static constexpr int ACC_PITCH = HS + 4;       // floats per row of an accumulator [TILE, HS]
    static constexpr size_t HEAD_BYTES = round_up_128(size_t(TILE) * HEAD_PITCH * sizeof(floatX));
    static constexpr size_t SCORE_BYTES = round_up_128(size_t(TILE) * SCORE_PITCH * sizeof(float));
    static constexpr size_t WEIGHT_BYTES = round_up_128(size_t(TILE) * WEIGHT_PITCH * sizeof(floatX));
    static constexpr size_t ACC_BYTES = round_up_128(size_t(TILE) * ACC_PITCH * sizeof(float));
    // q, k, v tiles, scores, weights, output
    static constexpr size_t FORWARD_BYTES = 3 * HEAD_BYTES + SCORE_BYTES + WEIGHT_BYTES + ACC_BYTES;
    // q, dO, k, v tiles, scores, g, dS, dq; then the bias gradient by distance (dynamic)
    static constexpr size_t QUERY_BYTES = 4 * HEAD_BYTES + 2 * SCORE_BYTES + WEIGHT_BYTES + ACC_BYTES;
    // k, v, q, dO tiles, scores, g, a, dS (dk and dv stay in registers)
    static constexpr size_t KEY_BYTES = 4 * HEAD_BYTES + 2 * SCORE_BYTES + 2 * WEIGHT_BYTES;
};

// Hands out consecutive pieces of the dynamic shared memory, each a multiple of 128 bytes.
struct SharedArrays {
    unsigned char* next;
    template <typename T>
    __device__ T* take(size_t bytes) {
        T* array = reinterpret_cast<T*>(next);
        next += bytes;
        return array;
    }
};

// Columns first + ROW_THREADS k of a row, k < steps, visited from k = start on, wrapping around.
template <int ROW_THREADS>
struct ColumnOrder {
    int first, start, steps;
    struct Iterator {
        int first, step, steps;
        __device__ int operator*() const { return first + ROW_THREADS * (step % steps); }
        __device__ void operator++() { step++; }
        __device__ bool operator!=(const Iterator& end) const { return step != end.step; }
    };
    __device__ Iterator begin() const { return {first, start, steps}; }
    __device__ Iterator end() const { return {first, start + steps, steps}; }
};

// The element phase's share of one thread: query row `row` of the tile, and its key (or channel)
// columns first, first + ROW_THREADS, ... The ROW_THREADS threads of a row are adjacent lanes of a warp.
// The order of the columns keeps a warp's accesses in distinct banks: every tile's row pitch is 4 words
// past a multiple of 32, so rows r and r + 8 share banks. With 4 threads a row a warp covers 8 rows, each
// in 4 banks of its own; with 2 threads, 16 rows, and rows 8-15 of those start one step later than rows
// 0-7, which puts them in the other half of each 4-bank group (two-way conflicts in every element loop
// before; the emulator's count, `make memory-requests`).
template <int TILE>
struct RowSlice {
    static constexpr int ROW_THREADS = FLASH_THREADS / TILE;
    int row = threadIdx.x / ROW_THREADS, first = threadIdx.x % ROW_THREADS;

    // This thread's columns among `width` (TILE keys, or HS channels).
    __device__ ColumnOrder<ROW_THREADS> columns(int width) const {
        return {first, row % (WARP_SIZE / ROW_THREADS) / 8, width / ROW_THREADS};
    }
};

// The sum and the maximum over the threads of one row, returned to each of them; the same order and so
// the same bits on every thread.
template <int ROW_THREADS>
__device__ inline float row_sum(float value) {
    for (int offset = 1; offset < ROW_THREADS; offset *= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
    return value;
}
template <int ROW_THREADS>
__device__ inline float row_max(float value) {
    for (int offset = 1; offset < ROW_THREADS; offset *= 2)
        value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, offset));
    return value;
}

// Where element (r, c) of a matrix stored with leading dimension ld lies, in wmma's two layouts.
template <typename Layout>
__device__ constexpr size_t element_at(int r, int c, int ld) {
    return std::is_same_v<Layout, nvcuda::wmma::row_major> ? size_t(r) * ld + c : size_t(c) * ld + r;
}

// An M x N tile of float sums of products, held in registers across products. Operands A (M x K) and B
// (K x N) are floatX tiles in shared memory, each in LayoutA / LayoutB (wmma::row_major or
// wmma::col_major: a transposed operand is read in place); load/store move the tile from/to a row-major
// float tile in shared memory. Every sum runs over K in order, tile after tile.
#ifdef FOCUS_FP32
// fp32 build (the precise check of the math): plain FMA, thread x holding elements x + n FLASH_THREADS.
template <int M, int N>
struct AccumulatorTile {
    static_assert(M * N % FLASH_THREADS == 0, "whole elements per thread");
    static constexpr int COUNT = M * N / FLASH_THREADS;
    float value[COUNT];

    __device__ static int row(int n) { return (threadIdx.x + n * FLASH_THREADS) / N; }
    __device__ static int column(int n) { return (threadIdx.x + n * FLASH_THREADS) % N; }
    __device__ void zero() {
        for (int n = 0; n < COUNT; n++) value[n] = 0.0f;
    }
    __device__ void load(const float* C, int ldc) {
        for (int n = 0; n < COUNT; n++) value[n] = C[row(n) * ldc + column(n)];
    }
    __device__ void store(float* C, int ldc) const {
        for (int n = 0; n < COUNT; n++) C[row(n) * ldc + column(n)] = value[n];
    }
    template <int K, typename LayoutA, typename LayoutB>
    __device__ void add_product(const floatX* A, int lda, const floatX* B, int ldb) {
        for (int n = 0; n < COUNT; n++)
            for (int k = 0; k < K; k++)
                value[n] += A[element_at<LayoutA>(row(n), k, lda)] * B[element_at<LayoutB>(k, column(n), ldb)];
    }
};
#else
// bf16 build: tensor cores (wmma 16 x 16 x 16, bf16 operands, fp32 accumulation). The four warps split
// the tile's grid of 16 x 16 blocks into 2 x 2 rectangles of ROWS x COLUMNS blocks, warp w the rectangle at
// (w / 2, w % 2). Per step of K a warp loads ROWS fragments of A and COLUMNS of B and uses each for a whole
// row or column of its blocks: for a 64 x 64 tile, 16 fragment loads per step for its 16 products, where
// dealing the blocks out one at a time takes two loads per product. (Which warp holds a block does not
// change the block's sum: every sum runs over K in order.)
template <int M, int N>
struct AccumulatorTile {
    static_assert(FLASH_THREADS == 4 * WARP_SIZE && M % 32 == 0 && N % 32 == 0, "2 x 2 warps, whole 16 x 16 blocks");
    static constexpr int ROWS = M / 32, COLUMNS = N / 32;
    nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> value[ROWS][COLUMNS];

    __device__ static int warp() { return int(threadIdx.x) / WARP_SIZE; }
    __device__ static int row(int i) { return (warp() / 2 * ROWS + i) * 16; }
    __device__ static int column(int j) { return (warp() % 2 * COLUMNS + j) * 16; }
    __device__ void zero() {
#pragma unroll
        for (int i = 0; i < ROWS; i++)
#pragma unroll
            for (int j = 0; j < COLUMNS; j++) nvcuda::wmma::fill_fragment(value[i][j], 0.0f);
    }
    __device__ void load(const float* C, int ldc) {
#pragma unroll
        for (int i = 0; i < ROWS; i++)
#pragma unroll
            for (int j = 0; j < COLUMNS; j++)
                nvcuda::wmma::load_matrix_sync(value[i][j], C + row(i) * ldc + column(j), ldc,
                                               nvcuda::wmma::mem_row_major);
    }
    __device__ void store(float* C, int ldc) const {
#pragma unroll
        for (int i = 0; i < ROWS; i++)
#pragma unroll
            for (int j = 0; j < COLUMNS; j++)
                nvcuda::wmma::store_matrix_sync(C + row(i) * ldc + column(j), value[i][j], ldc,
                                                nvcuda::wmma::mem_row_major);
    }
    template <int K, typename LayoutA, typename LayoutB>
    __device__ void add_product(const floatX* A, int lda, const floatX* B, int ldb) {
        static_assert(K % 16 == 0, "whole 16 x 16 blocks");
        namespace wmma = nvcuda::wmma;
        // Two steps of K unrolled, so one step's loads can overlap the other's products; unrolled whole,
        // the key kernel's two products (dV and dK, one after the other) ran out of registers and spilled.
#pragma unroll 2
        for (int k = 0; k < K; k += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, LayoutA> a[ROWS];
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, LayoutB> b[COLUMNS];
#pragma unroll
            for (int i = 0; i < ROWS; i++) wmma::load_matrix_sync(a[i], A + element_at<LayoutA>(row(i), k, lda), lda);
#pragma unroll
            for (int j = 0; j < COLUMNS; j++)
                wmma::load_matrix_sync(b[j], B + element_at<LayoutB>(k, column(j), ldb), ldb);
#pragma unroll
            for (int i = 0; i < ROWS; i++)
#pragma unroll
                for (int j = 0; j < COLUMNS; j++) wmma::mma_sync(value[i][j], a[i], b[j], value[i][j]);
        }
    }
};
#endif

// C = A B, or C += A B with accumulate, for tiles in shared memory (C: M x N floats, row-major), through
// an AccumulatorTile. The operands must be ready (a barrier after they were written); ends with a
// barrier, so C is ready for every thread.
template <int M, int N, int K, typename LayoutA, typename LayoutB>
__device__ void tile_product(float* C, int ldc, const floatX* A, int lda, const floatX* B, int ldb, bool accumulate) {
    AccumulatorTile<M, N> sum;
    if (accumulate)
        sum.load(C, ldc);
    else
        sum.zero();
    sum.template add_product<K, LayoutA, LayoutB>(A, lda, B, ldb);
    sum.store(C, ldc);
    __syncthreads();
}

using RowMajor = nvcuda::wmma::row_major;
using ColMajor = nvcuda::wmma::col_major;

// cos_sin[t * hs/2 + m] = (cos, sin) of phi_{t,m}, rounded to float once (rope.h's table).
static __global__ void rope_table_kernel(float2* cos_sin, int T, int hs, float base) {
    const int e = blockIdx.x * blockDim.x + threadIdx.x, pairs = hs / 2;
    if (e >= T * pairs) return;
    const double angle = rope_angle(e / pairs, e % pairs, hs, base);
    cos_sin[e] = make_float2(float(cos(angle)), float(sin(angle)));
}

// Eight consecutive channels of a head vector, moved as whole 16-byte words (one in bf16, two in fp32).
struct alignas(16) HeadChunk {
    floatX x[8];
};

// The (cos, sin) of a HeadChunk's four channel pairs, 32 bytes of the RoPE table moved as two 16-byte
// words rather than four 8-byte ones.
struct alignas(16) ChunkAngles {
    float2 pair[4];
};

// Two consecutive channels of a head vector, moved as one word (4 bytes in bf16).
struct alignas(2 * sizeof(floatX)) ChannelPair {
    floatX x, y;
};

// Rows [first_row, first_row + TILE) of one head's vectors into a tile, zeros past row T; rotated by
// R_t when cos_sin is given. head points at the head's vector of position 0, rows row_stride apart
// (16-byte aligned, as flash_arguments checks). One chunk of 8 channels per thread at a time.
template <int HS, int TILE>
__device__ void load_head_tile(floatX* tile, const floatX* head, size_t row_stride, int first_row, int T,
                               const float2* cos_sin) {
    constexpr int CHUNKS = HS / 8, PITCH = FlashTiles<HS>::HEAD_PITCH;
    for (int e = threadIdx.x; e < TILE * CHUNKS; e += FLASH_THREADS) {
        const int r = e / CHUNKS, first = e % CHUNKS * 8, t = first_row + r;
        HeadChunk chunk = {};
        if (t < T) {
            chunk = *reinterpret_cast<const HeadChunk*>(head + t * row_stride + first);
            if (cos_sin != nullptr) {
                const size_t pair0 = size_t(t) * (HS / 2) + first / 2;
                const ChunkAngles angles = *reinterpret_cast<const ChunkAngles*>(cos_sin + pair0);
                for (int pair = 0; pair < 4; pair++) {
                    const float x0 = float(chunk.x[2 * pair]), x1 = float(chunk.x[2 * pair + 1]);
                    const float2 angle = angles.pair[pair];
                    chunk.x[2 * pair] = floatX(flash::rotated_first(x0, x1, angle.x, angle.y));
                    chunk.x[2 * pair + 1] = floatX(flash::rotated_second(x0, x1, angle.x, angle.y));
                }
            }
        }
        *reinterpret_cast<HeadChunk*>(tile + r * PITCH + first) = chunk;
    }
}

// Rows [first_row, first_row + TILE) of a head (rows row_stride apart) = scale * acc, or += with
// accumulate, for rows < T; through R_t^T when cos_sin is given (the gradient of the unrotated vector).
// Reads acc, which must be ready (8-byte aligned rows). Two channels per thread, a warp's 32 threads on
// consecutive ones: a whole row of 64 channels per request, from shared and to device memory alike.
template <int HS, int TILE>
__device__ void write_head_tile(floatX* head, size_t row_stride, const float* acc, float scale, int first_row, int T,
                                const float2* cos_sin, bool accumulate) {
    constexpr int PAIRS = HS / 2, PITCH = FlashTiles<HS>::ACC_PITCH;
    for (int e = threadIdx.x; e < TILE * PAIRS; e += FLASH_THREADS) {
        const int r = e / PAIRS, m = e % PAIRS, t = first_row + r;
        if (t >= T) continue;
        const float2 sums = *reinterpret_cast<const float2*>(acc + r * PITCH + 2 * m);  // one 8-byte load
        float d0 = scale * sums.x, d1 = scale * sums.y;
        if (cos_sin != nullptr) {
            const float2 angle = cos_sin[size_t(t) * PAIRS + m];
            const float y0 = flash::rotated_first(d0, d1, angle.x, -angle.y);
            d1 = flash::rotated_second(d0, d1, angle.x, -angle.y);
            d0 = y0;
        }
        ChannelPair* pair_out = reinterpret_cast<ChannelPair*>(head + t * row_stride + 2 * m);
        if (accumulate) {
            const ChannelPair before = *pair_out;
            d0 += float(before.x);
            d1 += float(before.y);
        }
        *pair_out = {floatX(d0), floatX(d1)};
    }
}

// The arguments every flash kernel shares.
struct FlashArguments {
    const floatX* qkv;
    const float2* cos_sin;  // nullptr for learned positions
    const floatX* theta;    // elastic only
    const floatX* bias;     // nullptr when W = 0
    AttentionConfig cfg;
    DeviceAttentionLayout L;
};

// Head (b, h) of the arguments, as every kernel reads it: tiles of its q, k, v (q and k rotated) and of o or dO,
// and the final score of a dot product q~_t . k~_j (scale, causal mask, distance bias).
template <int HS, int TILE>
struct FlashHead {
    const FlashArguments& args;
    int b, h;
    size_t qkv_stride;
    const floatX* bias_h;  // nullptr when W = 0
    float scale;

    __device__ FlashHead(const FlashArguments& arguments, int bh)
        : args(arguments), b(bh / arguments.L.NH), h(bh % arguments.L.NH), qkv_stride(3 * size_t(arguments.L.C)),
          bias_h(arguments.cfg.bias_window > 0 ? arguments.bias + size_t(h) * arguments.cfg.bias_window : nullptr),
          scale(1.0f / sqrtf(float(HS))) {}

    __device__ void load_queries(floatX* tile, int q0) const {
        load_head_tile<HS, TILE>(tile, args.qkv + args.L.q(b, 0, h), qkv_stride, q0, args.L.T, args.cos_sin);
    }
    __device__ void load_keys(floatX* tile, int k0) const {
        load_head_tile<HS, TILE>(tile, args.qkv + args.L.k(b, 0, h), qkv_stride, k0, args.L.T, args.cos_sin);
    }
    __device__ void load_values(floatX* tile, int k0) const {
        load_head_tile<HS, TILE>(tile, args.qkv + args.L.v(b, 0, h), qkv_stride, k0, args.L.T, nullptr);
    }
    // rows of a [B, T, C] array: the output, or its gradient
    __device__ void load_output_rows(floatX* tile, const floatX* array, int q0) const {
        load_head_tile<HS, TILE>(tile, array + args.L.out(b, 0, h), args.L.C, q0, args.L.T, nullptr);
    }
    __device__ float score(float dot, int t, int j) const {
        return flash::masked_score(dot, scale, t, j, args.L.T, args.cfg, bias_h);
    }
    // Does any row of query tile q0 see a key of key tile k0? The loops over tiles skip those that none
    // sees (window and block attention); the same answer for every thread.
    __device__ bool sees(int q0, int k0) const { return flash::key_tile_visible(args.cfg, q0, k0, TILE); }
};

// out[r][c] = a_r . b_c for two [TILE, HS] head tiles in shared memory: S = Q K^T, or G = dO V^T.
template <int HS, int TILE>
__device__ void head_tile_dots(float* out, const floatX* a, const floatX* b) {
    using Tiles = FlashTiles<HS>;
    tile_product<TILE, TILE, HS, RowMajor, ColMajor>(out, Tiles::SCORE_PITCH, a, Tiles::HEAD_PITCH, b,
                                                     Tiles::HEAD_PITCH, false);
}

// ---- forward ------------------------------------------------------------------------------------

// One block per (query tile, b, h); blockIdx.x 0 takes the last query tile (the longest rows).
// row_state[2 (bh T + t) + {0, 1}] = (M_t, L_t).
template <int HS, bool ELASTIC>
static __global__ void __launch_bounds__(FLASH_THREADS, FLASH_MIN_BLOCKS)
    flash_forward_kernel(floatX* out, float* row_state, FlashArguments args) {
    using Tiles = FlashTiles<HS>;
    constexpr int TILE = Tiles::TILE;
    using Slice = RowSlice<TILE>;
    extern __shared__ __align__(128) float flash_shared[];
    SharedArrays arrays{reinterpret_cast<unsigned char*>(flash_shared)};
    floatX* q_tile = arrays.take<floatX>(Tiles::HEAD_BYTES);
    floatX* k_tile = arrays.take<floatX>(Tiles::HEAD_BYTES);
    floatX* v_tile = arrays.take<floatX>(Tiles::HEAD_BYTES);
    float* scores = arrays.take<float>(Tiles::SCORE_BYTES);
    floatX* weights = arrays.take<floatX>(Tiles::WEIGHT_BYTES);  // softmax: exp(s - running max); elastic: a
    float* o_acc = arrays.take<float>(Tiles::ACC_BYTES);

    const DeviceAttentionLayout& L = args.L;
    const int query_tile = gridDim.x - 1 - blockIdx.x, bh = blockIdx.y, q0 = query_tile * TILE;
    const FlashHead<HS, TILE> head(args, bh);
    const Slice slice;
    const int t = q0 + slice.row;
    float* o_row = o_acc + slice.row * Tiles::ACC_PITCH;

    head.load_queries(q_tile, q0);
    for (int e = threadIdx.x; e < TILE * Tiles::ACC_PITCH; e += FLASH_THREADS) o_acc[e] = 0.0f;

    // S = Q K^T of key tile k0 into `scores`, then the final scores (mask, scale, bias) of this thread's
    // elements in place; loads the tile's v alongside k when the pass needs it.
    auto scores_of_tile = [&](int k0, bool load_values) {
        head.load_keys(k_tile, k0);
        if (load_values) head.load_values(v_tile, k0);
        __syncthreads();
        head_tile_dots<HS, TILE>(scores, q_tile, k_tile);
        float* s_row = scores + slice.row * Tiles::SCORE_PITCH;
        for (const int c : slice.columns(TILE)) s_row[c] = head.score(s_row[c], t, k0 + c);
    };
    // O += weights V (call after a barrier that follows the weights' writes)
    auto add_weighted_values = [&] {
        tile_product<TILE, HS, TILE, RowMajor, RowMajor>(o_acc, Tiles::ACC_PITCH, weights, Tiles::WEIGHT_PITCH, v_tile,
                                                         Tiles::HEAD_PITCH, true);
    };

    // the running maximum and sum (pass 1 of elastic; the whole forward of softmax)
    float running_max = -INFINITY, running_sum = 0.0f;
    for (int k0 = 0; k0 <= q0; k0 += TILE) {
        if (!head.sees(q0, k0)) continue;
        scores_of_tile(k0, !ELASTIC);
        const float* s_row = scores + slice.row * Tiles::SCORE_PITCH;
        float tile_max = -INFINITY;
        for (const int c : slice.columns(TILE)) tile_max = fmaxf(tile_max, s_row[c]);
        const float new_max = fmaxf(running_max, row_max<Slice::ROW_THREADS>(tile_max));
        const float rescale = flash::rescale_factor(running_max, new_max);
        float tile_sum = 0.0f;
        for (const int c : slice.columns(TILE)) {
            const float e = flash::exp_weight(s_row[c], new_max);
            tile_sum += e;
            if constexpr (!ELASTIC) weights[slice.row * Tiles::WEIGHT_PITCH + c] = floatX(e);
        }
        running_sum = rescale * running_sum + row_sum<Slice::ROW_THREADS>(tile_sum);
        running_max = new_max;
        if constexpr (!ELASTIC) {
            for (const int d : slice.columns(HS)) o_row[d] *= rescale;
            __syncthreads();
            add_weighted_values();
        }
    }

    if constexpr (ELASTIC) {  // pass 2: o = sum_j max(0, p - c) v_j with the row's final maximum and sum
        const float cut = flash::cut_of_row(elastic_tau(args.cfg, args.theta, head.h), t);
        for (int k0 = 0; k0 <= q0; k0 += TILE) {
            if (!head.sees(q0, k0)) continue;
            scores_of_tile(k0, true);
            const float* s_row = scores + slice.row * Tiles::SCORE_PITCH;
            bool any_weight = false;
            for (const int c : slice.columns(TILE)) {
                const float a = flash::cut_weight(flash::probability(s_row[c], running_max, running_sum), cut);
                weights[slice.row * Tiles::WEIGHT_PITCH + c] = floatX(a);
                any_weight |= a > 0.0f;
            }
            if (__syncthreads_or(any_weight)) add_weighted_values();
        }
    }
    __syncthreads();  // o_acc complete

    // out = O / L for softmax (Elastic's weights are not renormalised), written by whole rows
    if constexpr (!ELASTIC)
        for (const int d : slice.columns(HS)) o_row[d] /= running_sum;
    __syncthreads();
    write_head_tile<HS, TILE>(out + L.out(head.b, 0, head.h), L.C, o_acc, 1.0f, q0, L.T, nullptr, false);
    if (t < L.T && slice.first == 0) {
        row_state[2 * (size_t(bh) * L.T + t)] = running_max;
        row_state[2 * (size_t(bh) * L.T + t) + 1] = running_sum;
    }
}

// ---- backward -----------------------------------------------------------------------------------

// The per-row inputs of the backward's element phase: the forward's row state, the cut, delta.
struct BackwardRow {
    float max = -INFINITY, sum = 1.0f, cut = 0.0f, delta = 0.0f;  // padding rows: every p is 0

    // Row t of head bh: its saved state and its cut (delta is the caller's).
    __device__ BackwardRow(const float* row_state, int bh, int t, int T, float tau) {
        if (t >= T) return;
        max = row_state[2 * (size_t(bh) * T + t)];
        sum = row_state[2 * (size_t(bh) * T + t) + 1];
        cut = flash::cut_of_row(tau, t);
    }

    // This thread's elements of the row's scores (the dots of key tile k0) replaced by p in place;
    // whether any of them passes the cut.
    template <int HS, int TILE>
    __device__ bool probabilities(float* p_row, const FlashHead<HS, TILE>& head, const RowSlice<TILE>& slice,
                                  int t, int k0) const {
        bool any_passed = false;
        for (const int c : slice.columns(TILE)) {
            p_row[c] = flash::probability(head.score(p_row[c], t, k0 + c), max, sum);
            any_passed |= p_row[c] > cut;
        }
        return any_passed;
    }
};

// One block per (query tile, b, h), the last query tile first. Writes dq (+=), delta_rows[bh T + t],
// and, for batch index bb = b * query_tiles + query tile: bias_partials[(bb NH + h) W + r] (the tile's
// rows' share of db_h[r]) and dtau_partials[bb NH + h]. Shared memory: QUERY_BYTES + min(W, T) floats.
template <int HS, bool ELASTIC>
static __global__ void __launch_bounds__(FLASH_THREADS, FLASH_MIN_BLOCKS)
    flash_query_kernel(floatX* dqkv, float* delta_rows, float* bias_partials, float* dtau_partials, const floatX* dout,
                       const floatX* out, const float* row_state, FlashArguments args) {
    using Tiles = FlashTiles<HS>;
    constexpr int TILE = Tiles::TILE;
    using Slice = RowSlice<TILE>;
    extern __shared__ __align__(128) float flash_shared[];
    SharedArrays arrays{reinterpret_cast<unsigned char*>(flash_shared)};
    floatX* q_tile = arrays.take<floatX>(Tiles::HEAD_BYTES);
    floatX* dout_tile = arrays.take<floatX>(Tiles::HEAD_BYTES);
    floatX* k_tile = arrays.take<floatX>(Tiles::HEAD_BYTES);
    floatX* v_tile = arrays.take<floatX>(Tiles::HEAD_BYTES);
    float* scores = arrays.take<float>(Tiles::SCORE_BYTES);  // s, then p, then dS (in float, for the bias)
    float* grads = arrays.take<float>(Tiles::SCORE_BYTES);   // g = dO V^T
    floatX* dscores = arrays.take<floatX>(Tiles::WEIGHT_BYTES);
    float* dq_acc = arrays.take<float>(Tiles::ACC_BYTES);
    const DeviceAttentionLayout& L = args.L;
    const int W = args.cfg.bias_window, distances = min(W, L.T);  // db_h[r] for r < distances
    float* dbias_block = arrays.take<float>(size_t(distances) * sizeof(float));

    const int query_tiles = gridDim.x, query_tile = query_tiles - 1 - blockIdx.x;
    const int bh = blockIdx.y, q0 = query_tile * TILE;
    const FlashHead<HS, TILE> head(args, bh);
    const int b = head.b, h = head.h;
    const Slice slice;
    const int t = q0 + slice.row;
    float* p_row = scores + slice.row * Tiles::SCORE_PITCH;
    const float* g_row = grads + slice.row * Tiles::SCORE_PITCH;

    head.load_queries(q_tile, q0);
    head.load_output_rows(dout_tile, dout, q0);
    for (int e = threadIdx.x; e < TILE * Tiles::ACC_PITCH; e += FLASH_THREADS) dq_acc[e] = 0.0f;
    for (int r = threadIdx.x; r < distances; r += FLASH_THREADS) dbias_block[r] = 0.0f;
    BackwardRow row(row_state, bh, t, L.T, elastic_tau(args.cfg, args.theta, h));

    // p of key tile k0 in place of the scores, this thread's elements, and whether any passes the cut
    auto probabilities_of_tile = [&](int k0) {
        head.load_keys(k_tile, k0);
        head.load_values(v_tile, k0);
        __syncthreads();
        head_tile_dots<HS, TILE>(scores, q_tile, k_tile);
        return row.probabilities(p_row, head, slice, t, k0);
    };
    // G = dO V^T of the loaded tile. Only m g enters the gradients, so elastic skips it for a tile where no
    // key passes the cut (as the forward skips a.V); softmax always needs it. Returns whether G was made.
    auto grads_of_tile = [&](bool any_passed) {
        if (ELASTIC && !__syncthreads_or(any_passed)) return false;
        head_tile_dots<HS, TILE>(grads, dout_tile, v_tile);
        return true;
    };

    if constexpr (ELASTIC) {  // delta_t = sum_k m p g and the row's dtau term -(1/i) sum_k m g, over all its keys
        float delta = 0.0f, passed = 0.0f;
        for (int k0 = 0; k0 <= q0; k0 += TILE) {
            if (!head.sees(q0, k0)) continue;
            if (grads_of_tile(probabilities_of_tile(k0))) {
                for (const int c : slice.columns(TILE)) {
                    const float g = flash::passed_gradient(p_row[c], row.cut, g_row[c]);
                    delta += p_row[c] * g;
                    passed += g;
                }
            }
            __syncthreads();  // the next tile's products overwrite scores and grads
        }
        row.delta = row_sum<Slice::ROW_THREADS>(delta);
        passed = row_sum<Slice::ROW_THREADS>(passed);
        const float dtau = block_sum(slice.first == 0 && t < L.T ? -passed / float(t + 1) : 0.0f);
        if (threadIdx.x == 0) dtau_partials[(size_t(b) * query_tiles + query_tile) * L.NH + h] = dtau;
    } else {  // delta_t = dO_t . o_t, the tile's rows of o in k_tile until the first key tile needs it
        head.load_output_rows(k_tile, out, q0);
        __syncthreads();
        const floatX* dout_row = dout_tile + slice.row * Tiles::HEAD_PITCH;
        const floatX* out_row = k_tile + slice.row * Tiles::HEAD_PITCH;
        for (const int d : slice.columns(HS)) row.delta += float(dout_row[d]) * float(out_row[d]);
        __syncthreads();  // before the keys overwrite k_tile
    }
    if constexpr (!ELASTIC) row.delta = row_sum<Slice::ROW_THREADS>(row.delta);
    if (t < L.T && slice.first == 0) delta_rows[size_t(bh) * L.T + t] = row.delta;

    for (int k0 = 0; k0 <= q0; k0 += TILE) {
        if (!head.sees(q0, k0)) continue;
        const bool have_grads = grads_of_tile(probabilities_of_tile(k0));
        for (const int c : slice.columns(TILE)) {
            const float ds = flash::score_gradient(p_row[c], row.cut, have_grads ? g_row[c] : 0.0f, row.delta);
            p_row[c] = ds;  // in float, for the bias sums
            dscores[slice.row * Tiles::WEIGHT_PITCH + c] = floatX(ds);
        }
        __syncthreads();
        // db_h[r] += dS along the diagonal r = t - j of the tile: the tile's row - column runs over
        // [-(TILE - 1), TILE - 1], one thread per diagonal, rows in order. Every thread loads from every row
        // (a clamped column where its diagonal is outside the tile, not added), so that a warp's loads of
        // one row are adjacent words: starting each diagonal at its own first row put a warp's lanes on
        // rows one pitch apart, four-way bank conflicts (`make memory-requests`).
        const int diagonal = int(threadIdx.x) - (TILE - 1), r = q0 - k0 + diagonal;
        if (diagonal < TILE && r >= 0 && r < distances) {
            float sum = 0.0f;
            for (int row_in_tile = 0; row_in_tile < TILE; row_in_tile++) {
                const int column = row_in_tile - diagonal;
                const float ds = scores[row_in_tile * Tiles::SCORE_PITCH + min(max(column, 0), TILE - 1)];
                if (column >= 0 && column < TILE) sum += ds;
            }
            dbias_block[r] += sum;
        }
        tile_product<TILE, HS, TILE, RowMajor, RowMajor>(dq_acc, Tiles::ACC_PITCH, dscores, Tiles::WEIGHT_PITCH, k_tile,
                                                         Tiles::HEAD_PITCH, true);
    }

    write_head_tile<HS, TILE>(dqkv + L.q(b, 0, h), head.qkv_stride, dq_acc, head.scale, q0, L.T, args.cos_sin, true);
    float* partial = bias_partials + ((size_t(b) * query_tiles + query_tile) * L.NH + h) * W;
    for (int r = threadIdx.x; r < W; r += FLASH_THREADS) partial[r] = r < distances ? dbias_block[r] : 0.0f;
}

// One block per (key tile, b, h), the first key tile (the most query tiles) first. Writes dk and dv (+=).
template <int HS, bool ELASTIC>
static __global__ void __launch_bounds__(FLASH_THREADS, FLASH_MIN_BLOCKS)
    flash_key_kernel(floatX* dqkv, const float* delta_rows, const floatX* dout, const float* row_state,
                     FlashArguments args) {
    using Tiles = FlashTiles<HS>;
    constexpr int TILE = Tiles::TILE;
    using Slice = RowSlice<TILE>;
    extern __shared__ __align__(128) float flash_shared[];
    SharedArrays arrays{reinterpret_cast<unsigned char*>(flash_shared)};
    floatX* k_tile = arrays.take<floatX>(Tiles::HEAD_BYTES);
    floatX* v_tile = arrays.take<floatX>(Tiles::HEAD_BYTES);
    floatX* q_tile = arrays.take<floatX>(Tiles::HEAD_BYTES);
    floatX* dout_tile = arrays.take<floatX>(Tiles::HEAD_BYTES);
    float* scores = arrays.take<float>(Tiles::SCORE_BYTES);  // s, then p; [query, key] as in the other kernels
    float* grads = arrays.take<float>(Tiles::SCORE_BYTES);
    floatX* weights = arrays.take<floatX>(Tiles::WEIGHT_BYTES);  // a
    floatX* dscores = arrays.take<floatX>(Tiles::WEIGHT_BYTES);
    AccumulatorTile<TILE, HS> dk, dv;  // in registers for the whole loop, unscaled dK

    const DeviceAttentionLayout& L = args.L;
    const int query_tiles = gridDim.x;  // as many as key tiles
    const int key_tile = blockIdx.x, bh = blockIdx.y, k0 = key_tile * TILE;
    const FlashHead<HS, TILE> head(args, bh);
    const float tau = elastic_tau(args.cfg, args.theta, head.h);
    const Slice slice;
    float* p_row = scores + slice.row * Tiles::SCORE_PITCH;
    const float* g_row = grads + slice.row * Tiles::SCORE_PITCH;

    head.load_keys(k_tile, k0);
    head.load_values(v_tile, k0);
    dk.zero();
    dv.zero();

    for (int query_tile = key_tile; query_tile < query_tiles; query_tile++) {
        const int q0 = query_tile * TILE, t = q0 + slice.row;
        if (!head.sees(q0, k0)) continue;
        head.load_queries(q_tile, q0);
        head.load_output_rows(dout_tile, dout, q0);
        BackwardRow row(row_state, bh, t, L.T, tau);
        if (t < L.T) row.delta = delta_rows[size_t(bh) * L.T + t];
        __syncthreads();
        head_tile_dots<HS, TILE>(scores, q_tile, k_tile);
        const bool any_passed = row.probabilities(p_row, head, slice, t, k0);
        // G, and a.dO, only where some key passes the cut (elsewhere m g = 0 and a = 0): elastic skips both
        // for such a tile, as the query kernel skips G
        const bool have_grads = !ELASTIC || __syncthreads_or(any_passed);
        if (have_grads) head_tile_dots<HS, TILE>(grads, dout_tile, v_tile);
        for (const int c : slice.columns(TILE)) {
            weights[slice.row * Tiles::WEIGHT_PITCH + c] =
                floatX(ELASTIC ? flash::cut_weight(p_row[c], row.cut) : p_row[c]);
            dscores[slice.row * Tiles::WEIGHT_PITCH + c] =
                floatX(flash::score_gradient(p_row[c], row.cut, have_grads ? g_row[c] : 0.0f, row.delta));
        }
        __syncthreads();
        // dV += A^T dO and dK += dS^T Q: the [query, key] weight tiles read transposed (column-major)
        if (have_grads)
            dv.template add_product<TILE, ColMajor, RowMajor>(weights, Tiles::WEIGHT_PITCH, dout_tile,
                                                              Tiles::HEAD_PITCH);
        dk.template add_product<TILE, ColMajor, RowMajor>(dscores, Tiles::WEIGHT_PITCH, q_tile, Tiles::HEAD_PITCH);
        __syncthreads();  // before the next query tile overwrites q, dO, a and dS
    }

    // dk and dv out through shared memory, in the k, v tiles and the q, dO tiles, which are free now
    static_assert(2 * Tiles::HEAD_BYTES >= Tiles::ACC_BYTES, "two head tiles hold an accumulator tile");
    float* dv_tile = reinterpret_cast<float*>(k_tile);
    float* dk_tile = reinterpret_cast<float*>(q_tile);
    dv.store(dv_tile, Tiles::ACC_PITCH);
    dk.store(dk_tile, Tiles::ACC_PITCH);
    __syncthreads();
    write_head_tile<HS, TILE>(dqkv + L.v(head.b, 0, head.h), head.qkv_stride, dv_tile, 1.0f, k0, L.T, nullptr, true);
    write_head_tile<HS, TILE>(dqkv + L.k(head.b, 0, head.h), head.qkv_stride, dk_tile, head.scale, k0, L.T,
                              args.cos_sin, true);
}

// ---- the interface --------------------------------------------------------------------------------

inline bool flash_attention_supports(const AttentionConfig& cfg, int head_size) {
    return cfg.kind != AttentionKind::topk && (head_size == 32 || head_size == 64 || head_size == 128);
}

// The row state the forward saves for the backward: (M_t, L_t) per row, [B, NH, T, 2].
inline size_t flash_attention_row_floats(int B, int T, int NH) { return 2 * size_t(B) * NH * T; }

// Allows a kernel the dynamic shared memory it needs beyond the default 48 KiB, checked against the
// device's limit.
template <typename Kernel>
size_t flash_shared_bytes(Kernel kernel, size_t bytes) {
    int device = 0, limit = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    check(bytes <= size_t(limit),
          format("flash attention: %zu bytes of shared memory per block, the device allows %d", bytes, limit));
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
    return bytes;
}

// Validates the arguments and fills the RoPE table (at the start of the Context scratch, which must hold
// extra_floats more after it).
inline FlashArguments flash_arguments(const AttentionConfig& cfg, const floatX* qkv, const floatX* theta,
                                      const floatX* bias, int B, int T, int C, int NH, size_t extra_floats,
                                      float** extra, cudaStream_t stream) {
    const AttentionLayout L = check_attention_arguments(cfg, theta, bias, B, T, C, NH);
    check(flash_attention_supports(cfg, L.hs),
          format("flash attention: %s with head size %d is not supported (softmax, elastic, window or block, "
                 "head size 32, 64 or 128)",
                 to_string(cfg.kind), L.hs));
    check(reinterpret_cast<uintptr_t>(qkv) % 16 == 0, "flash attention: qkv must be 16-byte aligned");
    const bool rope = cfg.position == PositionKind::rope;
    const size_t table_floats = rope ? size_t(T) * L.hs : 0;  // T x hs/2 (cos, sin) pairs
    float* scratch = Context::get().scratch<float>(table_floats + extra_floats);
    float2* cos_sin = rope ? reinterpret_cast<float2*>(scratch) : nullptr;
    if (rope) {
        rope_table_kernel<<<ceil_div(table_floats / 2, 256), 256, 0, stream>>>(cos_sin, T, L.hs, cfg.rope_base);
        CUDA_CHECK_LAUNCH();
    }
    *extra = scratch + table_floats;
    return {qkv, cos_sin, theta, bias, cfg, device_layout(L)};
}

template <int HS, bool ELASTIC>
void flash_forward_launch(floatX* out, float* row_state, const FlashArguments& args, cudaStream_t stream) {
    using Tiles = FlashTiles<HS>;
    auto kernel = flash_forward_kernel<HS, ELASTIC>;
    const size_t shared = flash_shared_bytes(kernel, Tiles::FORWARD_BYTES);
    const dim3 grid(ceil_div(args.L.T, Tiles::TILE), args.L.B * args.L.NH);
    kernel<<<grid, FLASH_THREADS, shared, stream>>>(out, row_state, args);
    CUDA_CHECK_LAUNCH();
}

template <int HS, bool ELASTIC>
void flash_backward_launch(floatX* dqkv, floatX* dtheta, floatX* dbias, const floatX* dout, const floatX* out,
                           const float* row_state, const FlashArguments& args, float* scratch, cudaStream_t stream) {
    using Tiles = FlashTiles<HS>;
    const DeviceAttentionLayout& L = args.L;
    const int W = args.cfg.bias_window, query_tiles = ceil_div(L.T, Tiles::TILE);
    const size_t rows = size_t(L.B) * L.NH * L.T, batch_parts = size_t(L.B) * query_tiles;
    float* delta_rows = scratch;
    float* bias_partials = delta_rows + rows;
    float* dtau_partials = bias_partials + batch_parts * L.NH * W;
    const dim3 grid(query_tiles, L.B * L.NH);

    auto query_kernel = flash_query_kernel<HS, ELASTIC>;
    const size_t query_shared =
        flash_shared_bytes(query_kernel, Tiles::QUERY_BYTES + size_t(std::min(W, L.T)) * sizeof(float));
    query_kernel<<<grid, FLASH_THREADS, query_shared, stream>>>(dqkv, delta_rows, bias_partials, dtau_partials, dout,
                                                                out, row_state, args);
    CUDA_CHECK_LAUNCH();
    auto key_kernel = flash_key_kernel<HS, ELASTIC>;
    const size_t key_shared = flash_shared_bytes(key_kernel, Tiles::KEY_BYTES);
    key_kernel<<<grid, FLASH_THREADS, key_shared, stream>>>(dqkv, delta_rows, dout, row_state, args);
    CUDA_CHECK_LAUNCH();
    if (W == 0 && !ELASTIC) return;
    parameter_gradients_kernel<<<L.NH, ATTENTION_THREADS, 0, stream>>>(
        dbias, ELASTIC ? dtheta : nullptr, bias_partials, dtau_partials, args.theta, int(batch_parts), L.NH, W);
    CUDA_CHECK_LAUNCH();
}

// out [B, T, C] and row_state [flash_attention_row_floats(B, T, NH)] from qkv [B, T, 3C] (unrotated);
// theta [NH] for elastic, bias [NH, W] for a bias window (either may be nullptr otherwise).
// Uses Context scratch (the RoPE table, T hs floats).
inline void flash_attention_forward(const AttentionConfig& cfg, floatX* out, float* row_state, const floatX* qkv,
                                    const floatX* theta, const floatX* bias, int B, int T, int C, int NH,
                                    cudaStream_t stream) {
    check(reinterpret_cast<uintptr_t>(out) % 16 == 0, "flash attention: out must be 16-byte aligned");
    float* unused = nullptr;
    const FlashArguments args = flash_arguments(cfg, qkv, theta, bias, B, T, C, NH, 0, &unused, stream);
    const bool elastic = cfg.kind == AttentionKind::elastic;
    auto launch = C / NH == 32   ? (elastic ? flash_forward_launch<32, true> : flash_forward_launch<32, false>)
                  : C / NH == 64 ? (elastic ? flash_forward_launch<64, true> : flash_forward_launch<64, false>)
                                 : (elastic ? flash_forward_launch<128, true> : flash_forward_launch<128, false>);
    launch(out, row_state, args, stream);
}

// Accumulates (+=) into dqkv [B, T, 3C] (the gradient of the unrotated qkv), dtheta [NH] (elastic) and
// dbias [NH, W] (a bias window), from dout [B, T, C] and the forward's out and row_state. Uses Context
// scratch: T hs (RoPE table) + B NH T + B ceil(T / TILE) NH (W + 1) floats.
inline void flash_attention_backward(const AttentionConfig& cfg, floatX* dqkv, floatX* dtheta, floatX* dbias,
                                     const floatX* dout, const floatX* out, const float* row_state, const floatX* qkv,
                                     const floatX* theta, const floatX* bias, int B, int T, int C, int NH,
                                     cudaStream_t stream) {
    check(cfg.kind != AttentionKind::elastic || dtheta != nullptr, "attention: elastic needs dtheta");
    check(cfg.bias_window == 0 || dbias != nullptr, "attention: a bias window needs dbias");
    check(reinterpret_cast<uintptr_t>(dout) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0,
          "flash attention: dout and out must be 16-byte aligned");
    const int smallest_tile = 32;  // the most query tiles any head size uses
    const size_t extra = size_t(B) * NH * T + size_t(B) * ceil_div(T, smallest_tile) * NH * (cfg.bias_window + 1);
    float* scratch = nullptr;
    const FlashArguments args = flash_arguments(cfg, qkv, theta, bias, B, T, C, NH, extra, &scratch, stream);
    const bool elastic = cfg.kind == AttentionKind::elastic;
    auto launch = C / NH == 32   ? (elastic ? flash_backward_launch<32, true> : flash_backward_launch<32, false>)
                  : C / NH == 64 ? (elastic ? flash_backward_launch<64, true> : flash_backward_launch<64, false>)
                                 : (elastic ? flash_backward_launch<128, true> : flash_backward_launch<128, false>);
    launch(dqkv, dtheta, dbias, dout, out, row_state, args, scratch, stream);
}

}  // namespace focus::gpu
