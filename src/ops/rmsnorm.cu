// CUDA rmsnorm (contract in rmsnorm.h / cuda_ops.h): one block per row.
#include "cuda/check.h"
#include "ops/cuda_device.cuh"

namespace dsv4::cuda {

namespace {

__global__ void rmsnorm_kernel(const float* x, int64_t D, const float* w, float eps, float* y) {
  __shared__ float scratch[33];
  const float* xr = x + blockIdx.x * D;
  float* yr = y + blockIdx.x * D;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) ss += xr[i] * xr[i];
  ss = dev::block_sum(ss, scratch);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(D) + eps);
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) yr[i] = (w ? w[i] : 1.0f) * (xr[i] * inv);
}

}  // namespace

void rmsnorm_cuda(const float* x, int64_t T, int64_t D, const float* w, float eps, float* y, cudaStream_t s) {
  if (T == 0) return;
  const int threads = D >= 1024 ? 256 : D >= 256 ? 128 : 64;
  rmsnorm_kernel<<<static_cast<unsigned>(T), threads, 0, s>>>(x, D, w, eps, y);
  DSV4_CUDA_LAUNCHED("rmsnorm_kernel");
}

}  // namespace dsv4::cuda
