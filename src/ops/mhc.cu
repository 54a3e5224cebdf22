// CUDA mHC (contracts in mhc.h / cuda_ops.h): float32 throughout, as the spec requires.
// The mix product fn · x runs as a float32 GEMM before hc_pre_cuda.
#include "cuda/check.h"
#include "ops/cuda_device.cuh"

namespace dsv4::cuda {

namespace {

constexpr int kMaxStreams = 8;

__device__ __forceinline__ float sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }

// One block per token. Shared: y [D].
__global__ void hc_pre_kernel(const float* X, const float* mix, int n, int64_t D, const float* base, const float* scale,
                              float eps, float hc_eps, int iters, bool head, const float* norm, float* a, float* post,
                              float* comb) {
  extern __shared__ float y[];
  __shared__ float scratch[33];
  __shared__ float pre[kMaxStreams];
  const int64_t t = blockIdx.x, nD = n * D;
  const float* x = X + t * nD;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < nD; i += blockDim.x) ss += x[i] * x[i];
  ss = dev::block_sum(ss, scratch);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(nD) + eps);

  if (threadIdx.x == 0) {
    const int rows = head ? n : (2 + n) * n;
    const float* m = mix + t * rows;
    if (head) {
      for (int j = 0; j < n; ++j) pre[j] = sigmoid(m[j] * inv * scale[0] + base[j]) + hc_eps;
    } else {
      float C[kMaxStreams * kMaxStreams];
      for (int j = 0; j < n; ++j) {
        pre[j] = sigmoid(m[j] * inv * scale[0] + base[j]) + hc_eps;
        post[t * n + j] = 2.0f * sigmoid(m[n + j] * inv * scale[1] + base[n + j]);
      }
      for (int j = 0; j < n; ++j) {
        float mx = -INFINITY;
        for (int k = 0; k < n; ++k) {
          C[j * n + k] = m[2 * n + j * n + k] * inv * scale[2] + base[2 * n + j * n + k];
          mx = fmaxf(mx, C[j * n + k]);
        }
        float sum = 0.0f;
        for (int k = 0; k < n; ++k) sum += (C[j * n + k] = expf(C[j * n + k] - mx));
        for (int k = 0; k < n; ++k) C[j * n + k] = C[j * n + k] / sum + hc_eps;
      }
      for (int it = 0; it < iters; ++it) {
        if (it > 0)
          for (int j = 0; j < n; ++j) {  // rows
            float sum = 0.0f;
            for (int k = 0; k < n; ++k) sum += C[j * n + k];
            for (int k = 0; k < n; ++k) C[j * n + k] /= (sum + hc_eps);
          }
        for (int k = 0; k < n; ++k) {  // columns
          float sum = 0.0f;
          for (int j = 0; j < n; ++j) sum += C[j * n + k];
          for (int j = 0; j < n; ++j) C[j * n + k] /= (sum + hc_eps);
        }
      }
      for (int i = 0; i < n * n; ++i) comb[t * n * n + i] = C[i];
    }
  }
  __syncthreads();

  float ys = 0.0f;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    float v = 0.0f;
    for (int j = 0; j < n; ++j) v += pre[j] * x[j * D + d];
    y[d] = v;
    ys += v * v;
  }
  ys = dev::block_sum(ys, scratch);
  const float inv2 = 1.0f / sqrtf(ys / static_cast<float>(D) + eps);
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) a[t * D + d] = norm[d] * (y[d] * inv2);
}

__global__ void hc_post_kernel(const float* X, const float* o, const float* post, const float* comb, int64_t T, int n,
                               int64_t D, float* Xout) {
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
                 float* comb, cudaStream_t s) {
  DSV4_CHECK(n >= 1 && n <= kMaxStreams, "hc_pre", "hc_mult ", n, " outside [1, ", kMaxStreams, "]");
  if (T == 0) return;
  const size_t smem = D * sizeof(float);
  if (smem > 48 * 1024)
    DSV4_CUDA_CHECK(cudaFuncSetAttribute(hc_pre_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  hc_pre_kernel<<<static_cast<unsigned>(T), 256, smem, s>>>(X, mix, n, D, base, scale, eps, hc_eps, sinkhorn_iters, head,
                                                            norm, a, post, comb);
  DSV4_CUDA_LAUNCHED("hc_pre_kernel");
}

void hc_post_cuda(const float* X, const float* o, const float* post, const float* comb, int64_t T, int n, int64_t D,
                  float* Xout, cudaStream_t s) {
  const int64_t total = T * n * D;
  if (total == 0) return;
  hc_post_kernel<<<static_cast<unsigned>((total + 255) / 256), 256, 0, s>>>(X, o, post, comb, T, n, D, Xout);
  DSV4_CUDA_LAUNCHED("hc_post_kernel");
}

}  // namespace dsv4::cuda
