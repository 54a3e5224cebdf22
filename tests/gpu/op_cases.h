// The machinery of the per-op GPU tests (test_ops*.cpp, test_indexer.cpp): a case runs a
// CUDA op and its CPU oracle on the same random inputs and returns named comparisons; the test
// checks each by the rule of gpu_test_util.h (tol 0: bit-equal; far_frac > 0: that share of
// elements may flip a rounding; otherwise ‖Δ‖/‖ref‖ ≤ tol).
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "gpu_test_util.h"

namespace dsv4::testing_gpu {

struct Check {
  std::string what;
  Diff d;
  double tol;           // bound on ‖Δ‖/‖ref‖ (when no far elements are allowed)
  double far_frac = 0;  // allowed fraction of elements beyond float32 noise (rounding flips)
};
inline Check check(const std::string& what, const std::vector<float>& got, const std::vector<float>& want, double tol,
            double far_frac = 0) {
  return {what, diff(got, want, far_frac > 0 || tol == 0 ? tol : tol * 1e3), tol, far_frac};
}

using OpFn = std::function<std::vector<Check>(std::mt19937&)>;
struct OpCase {
  const char* name;
  OpFn run;
};

constexpr float kEps = 1e-6f;

// Byte codes as floats, to compare them with check(..., 0).
inline std::vector<float> as_float(const std::vector<uint8_t>& v) { return std::vector<float>(v.begin(), v.end()); }

// Runs a case and checks every comparison it returns (the body of each file's TEST_P).
inline void expect_case(const OpCase& c) {
  std::mt19937 rng(1234);
  for (const Check& k : c.run(rng)) {
    const double far_allowed = k.far_frac * static_cast<double>(k.d.n);
    std::printf("  %-12s %-34s rel %.3g (bound %.3g) max|d| %.3g far %lld/%lld\n", c.name, k.what.c_str(), k.d.rel,
                k.tol, k.d.max_abs, static_cast<long long>(k.d.far), static_cast<long long>(k.d.n));
    EXPECT_TRUE(k.d.finite) << k.what << ": NaN or Inf";
    if (k.tol == 0) {
      EXPECT_EQ(k.d.far, 0) << k.what << ": must be bit-equal";
    } else if (k.far_frac > 0) {
      EXPECT_LE(static_cast<double>(k.d.far), far_allowed) << k.what;
    } else {
      EXPECT_LE(k.d.rel, k.tol) << k.what;
    }
  }
}

}  // namespace dsv4::testing_gpu

// A test file's cases (its kCases) as one parametrized suite: Suite/Fixture.MatchesTheOracle/<case>.
// Used after the file's namespaces, where kCases is visible.
#define DSV4_OP_CASES(Suite, Fixture)                                                    \
  class Fixture : public ::testing::TestWithParam<::dsv4::testing_gpu::OpCase> {};       \
  TEST_P(Fixture, MatchesTheOracle) { ::dsv4::testing_gpu::expect_case(GetParam()); }    \
  INSTANTIATE_TEST_SUITE_P(Suite, Fixture, ::testing::ValuesIn(kCases),                  \
                           [](const auto& info) { return std::string(info.param.name); })
