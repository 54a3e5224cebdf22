// CUDA rmsnorm (contract in rmsnorm.h / cuda_ops.h): one block per row.
#include "cuda/check.h"
#include "cuda/launch.h"
#include "ops/cuda_device.cuh"

namespace dsv4::cuda {

namespace {

__global__ void rmsnorm_kernel(const float* x, int64_t D, const float* w, float eps, float* y) {
  dev::pdl_begin();
  __shared__ float scratch[33];
  const float* xr = x + blockIdx.x * D;
  float* yr = y + blockIdx.x * D;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) ss += xr[i] * xr[i];
  ss = dev::block_sum(ss, scratch);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(D) + eps);
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) yr[i] = (w ? w[i] : 1.0f) * (xr[i] * inv);
}

// rmsnorm_kernel's arithmetic (same thread count, same summation order), then on the same
// row in shared memory: RoPE of the last R dims, FP8 simulation of the first d − R in blocks of
// fp8_block (block_sim_kernel's rule), bf16 rounding of the RoPE dims; bit for bit the
// separate kernels, in one launch.
__global__ void rmsnorm_rope_kernel(float* x, int64_t D, const float* w, float eps, int heads, int R, const float* freqs,
                                    const int32_t* pos, int fp8_block, bool round_rope) {
  dev::pdl_begin();
  extern __shared__ float row[];
  __shared__ float scratch[33];
  float* xr = x + blockIdx.x * D;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) ss += xr[i] * xr[i];
  ss = dev::block_sum(ss, scratch);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(D) + eps);
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) row[i] = (w ? w[i] : 1.0f) * (xr[i] * inv);
  __syncthreads();
  const int64_t N = D - R;
  const int p = pos[blockIdx.x / heads];
  for (int i = threadIdx.x; i < R / 2; i += blockDim.x) dev::rope_pair(row[N + 2 * i], row[N + 2 * i + 1], freqs[i], p, false);
  if (fp8_block > 0) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int64_t b0 = static_cast<int64_t>(warp) * fp8_block; b0 < N; b0 += static_cast<int64_t>(nwarps) * fp8_block)
      dev::sim_block<false>(row, b0, min(N, b0 + fp8_block), lane);
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x)
    xr[i] = round_rope && i >= N ? __bfloat162float(__float2bfloat16_rn(row[i])) : row[i];
}

int rmsnorm_threads(int64_t D) { return D >= 1024 ? 256 : D >= 256 ? 128 : 64; }

}  // namespace

void rmsnorm_rope_cuda(float* x, int64_t rows, int heads, int64_t D, const float* w, float eps, int R, const float* freqs,
                       const int32_t* pos, int fp8_block, bool round_rope, cudaStream_t s) {
  DSV4_CHECK(R % 2 == 0 && R <= D && heads >= 1, "rmsnorm_rope", "R = ", R, ", D = ", D, ", heads = ", heads);
  if (rows * heads == 0) return;
  launch("rmsnorm_rope_kernel", rmsnorm_rope_kernel, static_cast<unsigned>(rows * heads), rmsnorm_threads(D), D * sizeof(float), s, 
      x, D, w, eps, heads, R, freqs, pos, fp8_block, round_rope);
}

void rmsnorm_cuda(const float* x, int64_t T, int64_t D, const float* w, float eps, float* y, cudaStream_t s) {
  if (T == 0) return;
  launch("rmsnorm_kernel", rmsnorm_kernel, static_cast<unsigned>(T), rmsnorm_threads(D), 0, s, x, D, w, eps, y);
}

}  // namespace dsv4::cuda
