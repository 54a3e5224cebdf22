// The hardware e4m3 rounding (dev::e4m3x2_rn, cvt.rn.satfinite) that every CUDA kernel uses to
// quantize: bit for bit the software rule (round to nearest even with subnormals, clamp to ±448,
// then the code) for every float of magnitude 2^-11 .. 2^10 and both signs (below, everything
// rounds to ±0; above, everything clamps), and against the CPU oracle (core/dtype.cpp) on edge
// values: ties, subnormals, ±0, the clamp.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/dtype.h"
#include "cuda/check.h"
#include "ops/cuda_device.cuh"

namespace {

using namespace dsv4;

// Floats with exponent field e0 .. e0 + 20 (all mantissas, both signs), one per thread-step;
// counts those where the hardware and the software codes differ, keeps the first.
__global__ void sweep_kernel(uint32_t e0, unsigned long long* mismatches, uint32_t* first) {
  const uint64_t total = 21ull << 24;  // 21 exponents × 2^23 mantissas × 2 signs
  for (uint64_t i = blockIdx.x * static_cast<uint64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<uint64_t>(gridDim.x) * blockDim.x) {
    const uint32_t sign = static_cast<uint32_t>(i & 1) << 31, rest = static_cast<uint32_t>(i >> 1);
    const uint32_t bits = sign | ((e0 + (rest >> 23)) << 23) | (rest & 0x7fffffu);
    const float v = __uint_as_float(bits);
    const uint8_t sw = cuda::dev::e4m3_code(cuda::dev::round_e4m3(fminf(fmaxf(v, -448.0f), 448.0f)));
    const uint8_t hw = cuda::dev::e4m3_rn(v);
    if (sw != hw && atomicAdd(mismatches, 1ull) == 0) *first = bits;
  }
}

__global__ void codes_kernel(const float* v, int n, uint8_t* out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = cuda::dev::e4m3_rn(v[i]);
}

TEST(E4m3Rounding, HardwareEqualsSoftwareOnEveryFloatOfTheRange) {
  unsigned long long* mis = nullptr;
  uint32_t* first = nullptr;
  DSV4_CUDA_CHECK(cudaMalloc(&mis, sizeof(*mis)));
  DSV4_CUDA_CHECK(cudaMalloc(&first, sizeof(*first)));
  DSV4_CUDA_CHECK(cudaMemset(mis, 0, sizeof(*mis)));
  DSV4_CUDA_CHECK(cudaMemset(first, 0, sizeof(*first)));
  sweep_kernel<<<1024, 256>>>(127 - 11, mis, first);  // magnitudes [2^-11, 2^10)
  DSV4_CUDA_CHECK(cudaGetLastError());
  unsigned long long n = 0;
  uint32_t f = 0;
  DSV4_CUDA_CHECK(cudaMemcpy(&n, mis, sizeof(n), cudaMemcpyDeviceToHost));
  DSV4_CUDA_CHECK(cudaMemcpy(&f, first, sizeof(f), cudaMemcpyDeviceToHost));
  cudaFree(mis);
  cudaFree(first);
  EXPECT_EQ(n, 0ull) << "first mismatch at " << f32_from_bits(f) << " (bits 0x" << std::hex << f << ")";
}

TEST(E4m3Rounding, HardwareEqualsTheCpuOnEdgeValues) {
  std::vector<float> v = {0.0f, -0.0f, 448.0f, -448.0f, 449.0f, 463.99f, 464.0f, 500.0f, -1e30f, 1e-30f, -1e-30f};
  for (int k = -12; k <= 9; ++k)  // every e4m3 value, the midpoints to its neighbours and just beside them
    for (int m = 0; m < 16; ++m) {
      const float a = std::ldexp(1.0f + m / 16.0f, k);
      for (float x : {a, std::nextafter(a, 0.0f), std::nextafter(a, 1e9f)}) v.push_back(x), v.push_back(-x);
    }
  float* dv = nullptr;
  uint8_t* dc = nullptr;
  const int n = static_cast<int>(v.size());
  DSV4_CUDA_CHECK(cudaMalloc(&dv, n * sizeof(float)));
  DSV4_CUDA_CHECK(cudaMalloc(&dc, n));
  DSV4_CUDA_CHECK(cudaMemcpy(dv, v.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  codes_kernel<<<(n + 255) / 256, 256>>>(dv, n, dc);
  std::vector<uint8_t> got(n);
  DSV4_CUDA_CHECK(cudaMemcpy(got.data(), dc, n, cudaMemcpyDeviceToHost));
  cudaFree(dv);
  cudaFree(dc);
  int bad = 0;
  for (int i = 0; i < n; ++i) {
    const uint8_t want = f32_to_e4m3(round_e4m3(std::fmin(std::fmax(v[i], -448.0f), 448.0f)));
    if (got[i] != want && ++bad <= 5)
      ADD_FAILURE() << v[i] << ": hardware 0x" << std::hex << int(got[i]) << ", cpu 0x" << int(want);
  }
  EXPECT_EQ(bad, 0);
}

}  // namespace
