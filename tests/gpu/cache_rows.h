// Host encoders and decoders of the compact cache rows (the CPU rules of core/dtype), and device
// rows of a cache in either form: shared by the GPU op tests.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/dtype.h"
#include "cuda/buffer.h"
#include "gpu_test_util.h"
#include "ops/cuda_ops.h"
#include "ops/quant.h"

namespace dsv4::testing_gpu {

using cuda::bf16;
using cuda::CacheRows;
using cuda::DeviceArray;

inline int exp_of_pow2(float s) {
  int e;
  std::frexp(s, &e);
  return e - 1;
}
// kv row of d values (first N = d − R FP8-simulated in blocks of 64): codes, scales, bf16 rope.
inline void encode_kv_row(const float* v, int d, int R, uint8_t* codes, uint8_t* scales, uint16_t* rope) {
  const int N = d - R;
  for (int b = 0; b * 64 < N; ++b) {
    float amax = 1e-4f;
    for (int i = b * 64; i < std::min(N, b * 64 + 64); ++i) amax = std::max(amax, std::fabs(v[i]));
    const float s = pow2_ceil(amax * (1.0f / 448.0f));
    scales[b] = static_cast<uint8_t>(exp_of_pow2(s) + 127);
    for (int i = b * 64; i < std::min(N, b * 64 + 64); ++i) codes[i] = f32_to_e4m3(v[i] / s);
  }
  for (int i = 0; i < R; ++i) rope[i] = f32_to_bf16(v[N + i]);
}
inline float decode_kv(const uint8_t* codes, const uint8_t* scales, const uint16_t* rope, int d, int R, int i) {
  const int N = d - R;
  return i < N ? e4m3_to_f32(codes[i]) * e8m0_to_f32(scales[i / 64]) : bf16_to_f32(rope[i - N]);
}
inline void encode_idx_row(const float* v, int d, uint8_t* codes, uint8_t* scales) {
  for (int b = 0; b < d / 32; ++b) {
    float amax = 6.0f * std::ldexp(1.0f, -126);
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(v[b * 32 + i]));
    const float s = pow2_ceil(amax * (1.0f / 6.0f));
    scales[b] = static_cast<uint8_t>(exp_of_pow2(s) + 127);
    for (int i = 0; i < 32; i += 2)
      codes[(b * 32 + i) / 2] = static_cast<uint8_t>(f32_to_e2m1(v[b * 32 + i] / s) | (f32_to_e2m1(v[b * 32 + i + 1] / s) << 4));
  }
}
inline float decode_idx(const uint8_t* codes, const uint8_t* scales, int i) {
  const uint8_t byte = codes[i / 2];
  return e2m1_to_f32((i & 1) ? byte >> 4 : byte & 0xf) * e8m0_to_f32(scales[i / 32]);
}

// Device rows of a cache in either form, built from float32 values (already on the grid).
struct HostRows {
  int rows = 0, d = 0, R = 0;
  bool compact = false, indexer = false;
  DeviceArray<float> f32;
  DeviceArray<uint8_t> codes, scales;
  DeviceArray<bf16> rope;
  CacheRows view() {
    return {f32.get(), codes.get(), scales.get(), rope.get()};
  }
};
inline HostRows make_rows(const std::vector<float>& v, int rows, int d, int R, bool compact, bool indexer) {
  HostRows h;
  h.rows = rows, h.d = d, h.R = R, h.compact = compact, h.indexer = indexer;
  if (!compact) {
    h.f32 = dev(v);
    return h;
  }
  if (indexer) {
    std::vector<uint8_t> c(rows * d / 2), s(rows * d / 32);
    for (int r = 0; r < rows; ++r) encode_idx_row(&v[r * d], d, &c[r * d / 2], &s[r * d / 32]);
    h.codes = dev(c);
    h.scales = dev(s);
    return h;
  }
  const int N = d - R, nb = (N + 63) / 64;
  std::vector<uint8_t> c(rows * N), s(rows * nb);
  std::vector<uint16_t> rp(rows * R);
  for (int r = 0; r < rows; ++r) encode_kv_row(&v[r * d], d, R, &c[r * N], &s[r * nb], &rp[r * R]);
  h.codes = dev(c);
  h.scales = dev(s);
  h.rope = DeviceArray<bf16>(rows * R);
  DSV4_CUDA_CHECK(cudaMemcpy(h.rope.get(), rp.data(), rp.size() * 2, cudaMemcpyHostToDevice));
  return h;
}
// The float32 values a cache row holds (what the CPU reference must attend).
inline std::vector<float> cache_values(const std::vector<float>& v, int rows, int d, int R, bool compact, bool indexer) {
  if (!compact) return v;
  std::vector<float> out(v.size());
  if (indexer) {
    std::vector<uint8_t> c(d / 2), s(d / 32);
    for (int r = 0; r < rows; ++r) {
      encode_idx_row(&v[r * d], d, c.data(), s.data());
      for (int i = 0; i < d; ++i) out[r * d + i] = decode_idx(c.data(), s.data(), i);
    }
    return out;
  }
  const int N = d - R;
  std::vector<uint8_t> c(N), s((N + 63) / 64);
  std::vector<uint16_t> rp(R);
  for (int r = 0; r < rows; ++r) {
    encode_kv_row(&v[r * d], d, R, c.data(), s.data(), rp.data());
    for (int i = 0; i < d; ++i) out[r * d + i] = decode_kv(c.data(), s.data(), rp.data(), d, R, i);
  }
  return out;
}
inline std::vector<float> download_rows(HostRows& h, int rows) {
  std::vector<float> out(static_cast<size_t>(rows) * h.d);
  if (!h.compact) {
    std::vector<float> all = host(h.f32);
    std::copy(all.begin(), all.begin() + out.size(), out.begin());
    return out;
  }
  std::vector<uint8_t> c = host(h.codes), s = host(h.scales);
  if (h.indexer) {
    for (int r = 0; r < rows; ++r)
      for (int i = 0; i < h.d; ++i) out[r * h.d + i] = decode_idx(&c[r * h.d / 2], &s[r * h.d / 32], i);
    return out;
  }
  std::vector<uint16_t> rp(h.rope.size());
  DSV4_CUDA_CHECK(cudaMemcpy(rp.data(), h.rope.get(), rp.size() * 2, cudaMemcpyDeviceToHost));
  const int N = h.d - h.R, nb = (N + 63) / 64;
  for (int r = 0; r < rows; ++r)
    for (int i = 0; i < h.d; ++i) out[r * h.d + i] = decode_kv(&c[r * N], &s[r * nb], &rp[r * h.R], h.d, h.R, i);
  return out;
}
inline std::vector<float> fp8_sim_rows(std::vector<float> v, int rows, int d, int N) {
  for (int r = 0; r < rows; ++r) ops::fp8_sim(&v[r * d], N, 64);
  return v;
}

}  // namespace dsv4::testing_gpu
