// CUDA mHC (contracts in mhc.h / cuda_ops.h): float32 throughout, as the spec requires.
// The mix product fn · x comes from a float32 GEMM (many tokens) or from hc_mix_kernel's
// column-slice partials (few tokens: decode); hc_pre_kernel then does the rest per token.
#include <algorithm>

#include "cuda/check.h"
#include "cuda/launch.h"
#include "ops/cuda_device.cuh"

namespace dsv4::cuda {

namespace {

constexpr int kMaxStreams = 5;  // comb (n × n) lives in one warp
constexpr int kMixThreads = 256, kMixMaxRows = (2 + 4) * 4;  // the few-token mix product: n ≤ 4

__device__ __forceinline__ float sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }

static_assert(kMaxStreams * kMaxStreams <= 32, "comb fits one warp");

// One block per token (at least two warps). Shared: y [D], then the mix partials.
// Warp 0 computes pre and post, then normalizes comb (Sinkhorn, a chain of 2·iters dependent
// steps) while the other warps mix the streams into y and normalize it: the two overlap.
__global__ void hc_pre_kernel(const float* X, const float* mix, int parts, int64_t T, int n, int64_t D,
                              const float* base, const float* scale, float eps, float hc_eps, int iters, bool head,
                              const float* norm, float* a, float* post, float* comb, uint8_t* q, float* qs) {
  dev::pdl_begin();
  extern __shared__ float y[];
  __shared__ float scratch[33];
  __shared__ float pre[kMaxStreams];
  __shared__ float mixs[(2 + kMaxStreams) * kMaxStreams];
  __shared__ float cs[32];
  __shared__ float colsum[(2 + kMaxStreams) * kMaxStreams + 1];
  const int64_t t = blockIdx.x, nD = n * D;
  const float* x = X + t * nD;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  // hc_mix's partials of this token (each slice's mix rows and its sum of squares), all at once
  // into shared memory (behind y [D]); or the GEMM's mix row (parts = 0).
  const int rows = head ? n : (2 + n) * n, width = parts > 0 ? rows + 1 : rows, np = parts > 0 ? parts : 1;
  float* mp = y + D;
  for (int i = threadIdx.x; i < np * width; i += blockDim.x) mp[i] = mix[((i / width) * T + t) * width + i % width];
  const bool vec = D % 4 == 0;
  float ss = 0.0f;
  if (parts == 0) {
    if (vec) {
      const float4* x4 = reinterpret_cast<const float4*>(x);
#pragma unroll 8
      for (int64_t i = threadIdx.x; i < nD / 4; i += blockDim.x) {
        const float4 v = x4[i];
        ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
      }
    } else {
      for (int64_t i = threadIdx.x; i < nD; i += blockDim.x) ss += x[i] * x[i];
    }
    ss = dev::block_sum(ss, scratch);  // its barriers also publish mp
  } else {
    __syncthreads();
  }
  // Column sums of the partials, one warp per column (the mix rows, then Σ x²).
  for (int c = warp; c < width; c += nwarps) {
    float v = 0.0f;
    for (int p = lane; p < np; p += 32) v += mp[p * width + c];
    v = dev::warp_sum(v);
    if (lane == 0) colsum[c] = v;
  }
  __syncthreads();
  if (parts > 0) ss = colsum[rows];
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(nD) + eps);
  if (warp == 0) {
    for (int i = lane; i < rows; i += 32) mixs[i] = colsum[i];
    __syncwarp();
    if (lane < n) {
      pre[lane] = sigmoid(mixs[lane] * inv * scale[0] + base[lane]) + hc_eps;
      if (!head) post[t * n + lane] = 2.0f * sigmoid(mixs[n + lane] * inv * scale[1] + base[n + lane]);
    }
  }
  __syncthreads();

  if (warp == 0) {
    // comb: lane j·n + k holds comb[j][k]; row and column sums by xor shuffles when n is a power
    // of two (a row's lanes are neighbours, a column's are n apart), else through shared memory
    // in index order (as the CPU sums them).
    if (head) return;
    const bool on = lane < n * n, pow2 = (n & (n - 1)) == 0;
    const int j = lane / n, k = lane % n;
    float c = on ? mixs[2 * n + lane] * inv * scale[2] + base[2 * n + lane] : 0.0f;
    auto xor_sum = [&](float v, int first, int last) {
      for (int o = first; o <= last; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      return v;
    };
    auto row_sum = [&](float v) {
      if (pow2) return n > 1 ? xor_sum(v, 1, n / 2) : v;
      cs[lane] = v;
      __syncwarp();
      float sum = 0.0f;
      if (on)
        for (int i = 0; i < n; ++i) sum += cs[j * n + i];
      __syncwarp();
      return sum;
    };
    auto col_sum = [&](float v) {
      if (pow2) return n > 1 ? xor_sum(v, n, n * n / 2) : v;
      cs[lane] = v;
      __syncwarp();
      float sum = 0.0f;
      if (on)
        for (int i = 0; i < n; ++i) sum += cs[i * n + k];
      __syncwarp();
      return sum;
    };
    cs[lane] = c;
    __syncwarp();
    float mx = -INFINITY;
    if (on)
      for (int i = 0; i < n; ++i) mx = fmaxf(mx, cs[j * n + i]);
    __syncwarp();
    c = on ? expf(c - mx) : 0.0f;
    c = c / row_sum(c) + hc_eps;
    for (int it = 0; it < iters; ++it) {
      if (it > 0) c = c / (row_sum(c) + hc_eps);
      c = c / (col_sum(c) + hc_eps);
    }
    if (on) comb[t * n * n + lane] = c;
    return;
  }

  // Warps 1..: y = Σ_j pre_j X[j], its RMS over their own barrier (warp 0 is busy), a = norm ⊙ y / rms.
  const int tid = threadIdx.x - 32, workers = blockDim.x - 32;
  float ys = 0.0f;
  if (vec) {
#pragma unroll 2
    for (int64_t d = tid; d < D / 4; d += workers) {
      float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
      for (int jj = 0; jj < kMaxStreams; ++jj) {
        if (jj >= n) break;
        const float4 xj = reinterpret_cast<const float4*>(x + jj * D)[d];
        const float pj = pre[jj];
        v.x += pj * xj.x, v.y += pj * xj.y, v.z += pj * xj.z, v.w += pj * xj.w;
      }
      reinterpret_cast<float4*>(y)[d] = v;
      ys += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
  } else {
    for (int64_t d = tid; d < D; d += workers) {
      float v = 0.0f;
      for (int jj = 0; jj < n; ++jj) v += pre[jj] * x[jj * D + d];
      y[d] = v;
      ys += v * v;
    }
  }
  ys = dev::warp_sum(ys);
  if (lane == 0) scratch[warp] = ys;
  asm volatile("bar.sync 1, %0;" ::"r"(workers) : "memory");
  float total = 0.0f;
  for (int w = 1; w < nwarps; ++w) total += scratch[w];
  const float inv2 = 1.0f / sqrtf(total / static_cast<float>(D) + eps);
  if (q) {  // one worker warp per 128 outputs: a, then its FP8 rounding (quantize_fp8_1x128_cuda's rule)
    for (int64_t b = warp - 1; b < D / 128; b += nwarps - 1) {
      const int64_t d = b * 128 + lane * 4;
      const float4 yv = *reinterpret_cast<const float4*>(y + d), nv = *reinterpret_cast<const float4*>(norm + d);
      const float4 v = make_float4(nv.x * (yv.x * inv2), nv.y * (yv.y * inv2), nv.z * (yv.z * inv2), nv.w * (yv.w * inv2));
      *reinterpret_cast<float4*>(a + t * D + d) = v;
      const float sc = dev::quantize_e4m3_block128(v, q + t * D + b * 128, lane);
      if (lane == 0) qs[b * T + t] = sc;
    }
    return;
  }
#pragma unroll 4
  for (int64_t d = tid; d < D; d += workers) a[t * D + d] = norm[d] * (y[d] * inv2);
}

// Column slice `blockIdx.x` of the mix product for token blockIdx.y: parts [S][T][N + 1] with
// parts[s][t][i] = Σ_{c in slice s} fn[i, c] · X[t, c] and parts[s][t][N] = Σ_{c in slice s} X[t, c]².
// Each thread keeps N + 1 partial sums.
__global__ void __launch_bounds__(kMixThreads) hc_mix_kernel(const float* X, const float* fn, int64_t T, int64_t K, int N,
                                                             float* parts) {
  dev::pdl_begin();
  __shared__ float red[kMixThreads / 32][kMixMaxRows + 1];
  const int64_t t = blockIdx.y, slice = (K + gridDim.x - 1) / gridDim.x;
  const int64_t c0 = blockIdx.x * slice, c1 = min(K, c0 + slice);
  float acc[kMixMaxRows + 1] = {};  // the mix rows, then Σ x² (hc_pre's RMS)
  for (int64_t c = c0 + threadIdx.x; c < c1; c += kMixThreads) {
    const float x = X[t * K + c];
#pragma unroll
    for (int i = 0; i < kMixMaxRows; ++i)
      if (i < N) acc[i] = fmaf(fn[i * K + c], x, acc[i]);
    acc[kMixMaxRows] += x * x;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int i = 0; i <= kMixMaxRows; ++i) {
    if (i >= N && i < kMixMaxRows) continue;
    const float v = dev::warp_sum(acc[i]);
    if (lane == 0) red[warp][i] = v;
  }
  __syncthreads();
  if (threadIdx.x <= N) {
    const int i = threadIdx.x < N ? threadIdx.x : kMixMaxRows;
    float v = 0.0f;
    for (int w = 0; w < kMixThreads / 32; ++w) v += red[w][i];
    parts[(blockIdx.x * T + t) * (N + 1) + threadIdx.x] = v;
  }
}

__global__ void hc_post_kernel(const float* X, const float* o, const float* post, const float* comb, int64_t T, int n,
                               int64_t D, float* Xout) {
  dev::pdl_begin();
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= T * n * D) return;
  const int64_t d = i % D, k = (i / D) % n, t = i / (n * D);
  float v = post[t * n + k] * o[t * D + d];
  for (int j = 0; j < n; ++j) v += comb[t * n * n + j * n + k] * X[(t * n + j) * D + d];
  Xout[i] = v;
}

}  // namespace

void hc_pre_cuda(const float* X, const float* mix, int64_t T, int n, int64_t D, const float* base, const float* scale,
                 float eps, float hc_eps, int sinkhorn_iters, bool head, const float* norm, float* a, float* post,
                 float* comb, cudaStream_t s, int mix_parts, uint8_t* q, float* qs) {
  DSV4_CHECK(!q || (qs && D % 128 == 0), "hc_pre", "FP8 output needs scales and D % 128 == 0 (D = ", D, ")");
  DSV4_CHECK(n >= 1 && n * n <= 32 && n <= kMaxStreams, "hc_pre", "hc_mult ", n, " outside [1, 5]");
  DSV4_CHECK(mix_parts >= 0, "hc_pre", "mix_parts ", mix_parts);
  if (T == 0) return;
  const size_t smem = (D + static_cast<size_t>(std::max(mix_parts, 1)) * ((head ? n : (2 + n) * n) + 1)) * sizeof(float);
  if (smem > 40 * 1024)  // with the static shared memory on top, near 48 KiB already needs the opt-in
    DSV4_CUDA_CHECK(cudaFuncSetAttribute(hc_pre_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  const int threads = T < 128 ? 1024 : 256;  // few tokens: one block per token must stream alone (≥ 2 warps)
  launch("hc_pre_kernel", hc_pre_kernel, static_cast<unsigned>(T), threads, smem, s, X, mix, mix_parts, T, n, D, base, scale, eps, hc_eps,
                                                            sinkhorn_iters, head, norm, a, post, comb, q, qs);
}

bool hc_mix_fits(int64_t T, int N) { return T >= 1 && T <= kHcMixMaxTokens && N >= 1 && N <= kMixMaxRows; }

void hc_mix_cuda(const float* X, const float* fn, int64_t T, int64_t K, int N, float* parts, int S, cudaStream_t s) {
  DSV4_CHECK(hc_mix_fits(T, N) && S >= 1, "hc_mix", T, " tokens, ", N, " rows, ", S, " slices do not fit");
  launch("hc_mix_kernel", hc_mix_kernel, dim3(static_cast<unsigned>(S), static_cast<unsigned>(T)), kMixThreads, 0, s, X, fn, T, K, N, parts);
}

void hc_post_cuda(const float* X, const float* o, const float* post, const float* comb, int64_t T, int n, int64_t D,
                  float* Xout, cudaStream_t s) {
  const int64_t total = T * n * D;
  if (total == 0) return;
  launch("hc_post_kernel", hc_post_kernel, static_cast<unsigned>((total + 255) / 256), 256, 0, s, X, o, post, comb, T, n, D, Xout);
}

}  // namespace dsv4::cuda
