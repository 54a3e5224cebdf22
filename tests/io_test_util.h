// Helpers shared by the io tests: scratch folders, raw file writing, error checks.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <vector>

#include "core/error.h"

namespace dsv4::testing_io {

// A fresh, empty scratch folder under the test temp dir (never the shared fixtures).
inline std::string fresh_dir(const std::string& tag) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = std::string("dsv4_io_") + info->test_suite_name() + "_" + info->name() + "_" +
                     tag + "_" + std::to_string(::getpid());
  std::filesystem::path p = std::filesystem::path(::testing::TempDir()) / name;
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p.string();
}

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A safetensors file written by hand: header length `n` (the header's own length when
// n is UINT64_MAX), the header text, then `data`.
inline std::string raw_safetensors(const std::string& header, const std::string& data,
                                   uint64_t n = UINT64_MAX) {
  if (n == UINT64_MAX) n = header.size();
  std::string out(8, '\0');
  std::memcpy(out.data(), &n, 8);
  return out + header + data;
}

// The message of the dsv4::Error that f throws, or "<no error>".
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const dsv4::Error& e) {
    return e.what();
  }
  return "<no error>";
}

#define EXPECT_ERROR_CONTAINS(expr, ...)                                       \
  do {                                                                         \
    std::string msg_ = ::dsv4::testing_io::error_of([&] { (void)(expr); });    \
    for (const std::string& part_ : std::initializer_list<std::string>{__VA_ARGS__}) { \
      EXPECT_NE(msg_.find(part_), std::string::npos)                           \
          << "message \"" << msg_ << "\" lacks \"" << part_ << "\"";           \
    }                                                                          \
  } while (0)

}  // namespace dsv4::testing_io
