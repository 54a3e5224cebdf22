// CUDA RoPE (contract in rope.h / cuda_ops.h): one thread per (row, head, pair).
#include "cuda/check.h"
#include "cuda/launch.h"
#include "ops/cuda_device.cuh"

namespace dsv4::cuda {

namespace {

__global__ void rope_kernel(float* x, int64_t rows, int64_t heads, int64_t ld, int64_t stride, int64_t offset, int R,
                            const float* freqs, const int32_t* pos, bool inverse) {
  dev::pdl_begin();
  const int64_t half = R / 2;
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= rows * heads * half) return;
  const int64_t pair = i % half, h = (i / half) % heads, r = i / (half * heads);
  float* p = x + r * ld + h * stride + offset + 2 * pair;
  float re = p[0], im = p[1];
  dev::rope_pair(re, im, freqs[pair], pos[r], inverse);
  p[0] = re;
  p[1] = im;
}

}  // namespace

void rope_cuda(float* x, int64_t rows, int64_t heads, int64_t ld, int64_t stride, int64_t offset, int R,
               const float* freqs, const int32_t* pos, bool inverse, cudaStream_t s) {
  const int64_t n = rows * heads * (R / 2);
  if (n == 0) return;
  launch("rope_kernel", rope_kernel, static_cast<unsigned>((n + 255) / 256), 256, 0, s, x, rows, heads, ld, stride, offset, R, freqs, pos,
                                                                      inverse);
}

}  // namespace dsv4::cuda
