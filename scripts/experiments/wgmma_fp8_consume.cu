// How fast can a block's tensor cores consume FP8 weights already in shared memory, one activation
// row at a time? The first measurement of docs/decode-megakernel.md's milestone 1, not part of
// dsv4. One block an SM (one warpgroup) holds R rows × K columns of e4m3 weights in wgmma's
// K-major layout without swizzle (core matrices of 8 rows × 16 bytes) and the row x as B's
// column 0 of an N = 8 tile (the other columns zero). It runs y = W x `reps` times with
// wgmma.m64n8k32.f32.e4m3.e4m3:
//   plain:  one accumulator a 64-row tile over all of K;
//   scaled: a fresh accumulator a 128-column block, added into the total times the block's scale
//           after the wait (dsv4's FP8 products have one scale a 128 × 128 block), two in flight.
// The rate is the weight bytes consumed between two repetition counts over the time between them
// (the shared-memory fill and the launch cancel out). y is checked against the CPU on the way.
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Isrc \
//     scripts/experiments/wgmma_fp8_consume.cu -o /tmp/wc && /tmp/wc
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <type_traits>
#include <vector>

#include "../../src/ops/cuda_ptx.cuh"
#include "experiment.cuh"
#include "wgmma_e4m3.cuh"

namespace {

using namespace dsv4::cuda::ptx;

constexpr int kThreads = 128;  // one warpgroup

// Byte offsets in shared memory: weight (r, k) of a block of R rows, and x's k (B's column 0).
__device__ __forceinline__ int a_off(int r, int k, int K) {
  return (r / 64) * 64 * K + (((r % 64) / 8) * (K / 16) + k / 16) * 128 + (r % 8) * 16 + k % 16;
}
__device__ __forceinline__ int b_off(int n, int k) { return (k / 16) * 128 + n * 16 + k % 16; }

template <bool kScaled, int K, int R>
__global__ void __launch_bounds__(kThreads)
    consume(const uint8_t* w, const uint8_t* x, const float* scales, int reps, float* y) {
  extern __shared__ __align__(128) uint8_t sm[];
  uint8_t* A = sm;
  uint8_t* B = sm + R * K;
  const uint8_t* wb = w + static_cast<int64_t>(blockIdx.x) * R * K;
  for (int i = threadIdx.x; i < R * K; i += kThreads) A[a_off(i / K, i % K, K)] = wb[i];
  for (int i = threadIdx.x; i < 8 * K; i += kThreads) B[b_off(i / K, i % K)] = i < K ? x[i] : 0;
  fence_proxy_async_shared();
  __syncthreads();
  constexpr int tiles = R / 64, kb = K / 128;
  constexpr uint32_t sbo_a = (K / 16) * 128;
  float total[tiles][4] = {};
  for (int rep = 0; rep < reps; ++rep)
#pragma unroll
    for (int t = 0; t < tiles; ++t) {
      if constexpr (!kScaled) {
        float d[4] = {};
        wgmma_fence();
#pragma unroll
        for (int k = 0; k < K / 32; ++k)
          wgmma_m64n8k32_e4m3(d, wgmma_desc(A + t * 64 * K + k * 256, 128, sbo_a), wgmma_desc(B + k * 256, 128, 128),
                              k > 0);
        wgmma_commit();
        wgmma_wait<0>();
        for (int j = 0; j < 4; ++j) wgmma_fence_operand(d[j]), total[t][j] += d[j];
      } else {
        float d[2][4];
        const float* tile_scales = scales + (blockIdx.x * R / 128 + t * 64 / 128) * kb;
        auto add_block = [&](int c) {  // block c's products, done: scaled into the total
          for (int j = 0; j < 4; ++j) wgmma_fence_operand(d[c & 1][j]), total[t][j] += tile_scales[c] * d[c & 1][j];
        };
#pragma unroll
        for (int c = 0; c < kb; ++c) {
          wgmma_fence();
#pragma unroll
          for (int k = 0; k < 4; ++k)
            wgmma_m64n8k32_e4m3(d[c & 1], wgmma_desc(A + t * 64 * K + (4 * c + k) * 256, 128, sbo_a),
                                wgmma_desc(B + (4 * c + k) * 256, 128, 128), k > 0);
          wgmma_commit();
          if (c > 0) wgmma_wait<1>(), add_block(c - 1);  // two blocks in flight
        }
        wgmma_wait<0>();
        add_block(kb - 1);
      }
    }
  // Column 0 of the tile: lanes with lane % 4 == 0 hold rows 16 w + lane / 4 (d[0]) and + 8 (d[2]).
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane % 4 == 0)
#pragma unroll
    for (int t = 0; t < tiles; ++t) {
      const int r = blockIdx.x * R + t * 64 + 16 * warp + lane / 4;
      y[r] = total[t][0];
      y[r + 8] = total[t][2];
    }
}

float e4m3(uint8_t b) {
  __nv_fp8_e4m3 v;
  v.__x = b;
  return static_cast<float>(v);
}

}  // namespace

int main() {
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  std::printf("| K | rows a block | form | GB/s of weights an SM | over %d SMs, TB/s | max rel. error of y |\n", sms);
  std::printf("|---|---|---|---|---|---|\n");
  auto shape = [&](auto k_const, auto r_const) {  // 128 KB of weights a block
    constexpr int K = decltype(k_const)::value, R = decltype(r_const)::value;
    const int64_t nw = static_cast<int64_t>(sms) * R * K;
    std::vector<uint8_t> hw(nw), hx(K);
    uint32_t h = 12345;
    auto next = [&] {
      h ^= h << 13, h ^= h >> 17, h ^= h << 5;
      return h;
    };
    // magnitudes 2^-6 .. 2^0 either sign (no NaN codes)
    for (auto& b : hw) b = static_cast<uint8_t>((next() & 0x80u) | (1 + next() % 7) << 3 | (next() & 7u));
    for (auto& b : hx) b = static_cast<uint8_t>((next() & 0x80u) | (1 + next() % 7) << 3 | (next() & 7u));
    std::vector<float> hs(static_cast<size_t>(sms) * R / 128 * (K / 128) + 1);
    for (auto& s : hs) s = std::ldexp(1.0f, static_cast<int>(next() % 5) - 2);
    uint8_t *w, *x;
    float *s, *y;
    CK(cudaMalloc(&w, nw));
    CK(cudaMalloc(&x, K));
    CK(cudaMalloc(&s, hs.size() * 4));
    CK(cudaMalloc(&y, static_cast<size_t>(sms) * R * 4));
    CK(cudaMemcpy(w, hw.data(), nw, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(x, hx.data(), K, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(s, hs.data(), hs.size() * 4, cudaMemcpyHostToDevice));
    const size_t smem = static_cast<size_t>(R) * K + 8 * K;
    for (bool scaled : {false, true}) {
      auto kernel = scaled ? consume<true, K, R> : consume<false, K, R>;
      CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
      // One repetition against the CPU (R < 128 rows share one 128-row scale block's scales).
      kernel<<<sms, kThreads, smem>>>(w, x, s, 1, y);
      CK(cudaDeviceSynchronize());
      std::vector<float> hy(static_cast<size_t>(sms) * R);
      CK(cudaMemcpy(hy.data(), y, hy.size() * 4, cudaMemcpyDeviceToHost));
      double worst = 0;
      for (int64_t r = 0; r < static_cast<int64_t>(sms) * R; ++r) {
        double want = 0, mag = 0;
        for (int c = 0; c < K / 128; ++c) {
          const double sc = scaled ? hs[(r / 128) * (K / 128) + c] : 1.0;
          for (int k = 128 * c; k < 128 * (c + 1); ++k) {
            const double term = sc * e4m3(hw[r * K + k]) * e4m3(hx[k]);
            want += term;
            mag += std::fabs(term);
          }
        }
        worst = std::max(worst, std::fabs(hy[r] - want) / (mag + 1e-30));
      }
      auto run = [&](int reps) { return event_ms(0, [&] { kernel<<<sms, kThreads, smem>>>(w, x, s, reps, y); }); };
      run(10);
      const int lo = 50, hi = 550;
      float best = 1e30f;
      for (int i = 0; i < 5; ++i) best = std::min(best, run(hi) - run(lo));
      const double bytes_sm = static_cast<double>(hi - lo) * R * K;
      std::printf("| %d | %d | %s | %.0f | %.1f | %.1e |\n", K, R, scaled ? "scaled" : "plain",
                  bytes_sm / (best * 1e-3) / 1e9, bytes_sm * sms / (best * 1e-3) / 1e12, worst);
    }
    CK(cudaFree(w));
    CK(cudaFree(x));
    CK(cudaFree(s));
    CK(cudaFree(y));
  };
  shape(std::integral_constant<int, 1024>{}, std::integral_constant<int, 128>{});
  shape(std::integral_constant<int, 2048>{}, std::integral_constant<int, 64>{});
  return 0;
}
