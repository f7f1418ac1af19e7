// io.h: file helpers shared by shards, checkpoints and the tokenizer.
//  - AtomicFile: write to "<path>.tmp.<pid>", fsync, then rename() over <path>, so a reader (or an
//    interrupted run) only ever sees the old complete file or the new complete file.
//  - read_file: a whole file (or its first bytes) into memory, with a clear error naming the path.
#pragma once
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <unistd.h>

#include "../layers/common.h"

namespace focus {

class AtomicFile {
public:
    explicit AtomicFile(const std::string& path)
        : path_(path), tmp_(path + ".tmp." + std::to_string(getpid())) {
        file_ = std::fopen(tmp_.c_str(), "wb");
        check(file_ != nullptr, format("cannot write %s: %s", tmp_.c_str(), std::strerror(errno)));
    }
    AtomicFile(const AtomicFile&) = delete;
    AtomicFile& operator=(const AtomicFile&) = delete;
    // Not committed (an exception unwound past us): drop the temporary, keep the old file.
    ~AtomicFile() {
        if (file_) {
            std::fclose(file_);
            std::remove(tmp_.c_str());
        }
    }

    void write(const void* data, size_t bytes) {
        check(std::fwrite(data, 1, bytes, file_) == bytes,
              format("write to %s failed: %s", tmp_.c_str(), std::strerror(errno)));
    }

    void commit() {
        bool ok = std::fflush(file_) == 0 && fsync(fileno(file_)) == 0;
        ok = (std::fclose(file_) == 0) && ok;
        file_ = nullptr;
        if (!ok || std::rename(tmp_.c_str(), path_.c_str()) != 0) {
            std::string why = std::strerror(errno);
            std::remove(tmp_.c_str());
            throw Error(format("cannot write %s: %s", path_.c_str(), why.c_str()));
        }
    }

private:
    std::string path_, tmp_;
    FILE* file_ = nullptr;
};

// The whole file, or its first `limit` bytes.
inline std::string read_file(const std::string& path, size_t limit = SIZE_MAX) {
    FILE* f = std::fopen(path.c_str(), "rb");
    check(f != nullptr, format("cannot open %s: %s", path.c_str(), std::strerror(errno)));
    std::string data;
    char buffer[1 << 16];
    size_t n;
    while (data.size() < limit && (n = std::fread(buffer, 1, std::min(sizeof buffer, limit - data.size()), f)) > 0)
        data.append(buffer, n);
    bool failed = std::ferror(f);
    std::fclose(f);
    check(!failed, format("error reading %s", path.c_str()));
    return data;
}

}  // namespace focus
