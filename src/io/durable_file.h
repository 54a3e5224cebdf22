// Durable writes: a file written whole and flushed to disk before anyone renames it
// into place, so a crash leaves either the old file or the new one, never half of one.
#pragma once
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace dsv4 {

// Creates (or truncates) `path`, writes the parts in order, fsyncs and closes it.
// Throws dsv4::Error("io", ...) naming the path and the failing system call.
void write_file_synced(const std::string& path,
                       const std::vector<std::pair<const void*, size_t>>& parts);
inline void write_file_synced(const std::string& path, const std::string& contents) {
  write_file_synced(path, {{contents.data(), contents.size()}});
}

// fsyncs a directory, so that renames and new entries in it survive a crash.
void fsync_dir(const std::string& dir);

// rename(2) with an error naming both paths.
void rename_path(const std::string& from, const std::string& to);

}  // namespace dsv4
