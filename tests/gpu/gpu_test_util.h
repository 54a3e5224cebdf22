// Helpers of the GPU tests: device copies of host vectors, random data, and the comparison
// rule of STYLE.md ("tolerances come from a rule"):
//   float32 against float32 in another summation order: ‖Δ‖/‖ref‖ ≤ 16 · u · √n, u = 2^-24 the
//   unit roundoff and n the longest reduction feeding an output (the typical growth of
//   rounding error in a sum of n terms, with a factor 16 of headroom); NaN or Inf never pass.
#pragma once
#include <cmath>
#include <random>
#include <vector>

#include "cuda/buffer.h"

namespace dsv4::testing_gpu {

using cuda::DeviceArray;

inline double f32_rule(int64_t n) { return 16.0 * std::ldexp(1.0, -24) * std::sqrt(static_cast<double>(n)); }
// cuBLASLt's block-scaled FP8 GEMM on Hopper: the products of a 128-wide block are added in the
// tensor cores' reduced precision (about 14 significant bits, u = 2^-14) before the float32 sum of
// the scaled blocks; the same factor 16. (mma.sync's e4m3 products, the few-row kernel's, meet
// the float32 rule.)
inline double fp8_mma_rule() { return 16.0 * std::ldexp(1.0, -14); }

struct Diff {
  double rel = 0, max_abs = 0;
  int64_t n = 0, far = 0;  // elements with |Δ| > tol · (|ref| + rms(ref)): flips of a rounding or a choice
  bool finite = true;
};

inline Diff diff(const std::vector<float>& got, const std::vector<float>& want, double tol) {
  Diff d;
  d.n = static_cast<int64_t>(want.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) den += static_cast<double>(want[i]) * want[i];
  const double rms = std::sqrt(den / std::max<size_t>(1, want.size()));
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) d.finite = false;
    const double e = std::fabs(static_cast<double>(got[i]) - want[i]);
    num += e * e;
    d.max_abs = std::max(d.max_abs, e);
    if (e > tol * (std::fabs(want[i]) + rms)) ++d.far;
  }
  d.rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  return d;
}

template <typename T>
DeviceArray<T> dev(const std::vector<T>& h) {
  return DeviceArray<T>(h);
}
template <typename T>
std::vector<T> host(const DeviceArray<T>& d) {
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  return d.to_host();
}

inline std::vector<float> randn(std::mt19937& rng, size_t n, float std = 1.0f) {
  std::normal_distribution<float> nd(0.0f, std);
  std::vector<float> v(n);
  for (float& x : v) x = nd(rng);
  return v;
}

}  // namespace dsv4::testing_gpu
