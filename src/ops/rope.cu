// CUDA RoPE (contract in rope.h / cuda_ops.h): one thread per (row, head, pair).
#include "cuda/check.h"
#include "cuda/launch.h"
#include "ops/cuda_device.cuh"

namespace dsv4::cuda {

namespace {

__global__ void rope_kernel(float* x, int64_t rows, int64_t heads, int64_t ld, int64_t stride, int64_t offset, int R,
                            const float* freqs, const int32_t* pos, bool inverse) {
  // rope_pair's angle before the wait: the position is the batch descriptor's (launch.h).
  const int64_t half = R / 2;
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const bool in = i < rows * heads * half;
  const int64_t pair = in ? i % half : 0, h = (i / half) % heads, r = in ? i / (half * heads) : 0;
  const dev::RopeAngle a = dev::rope_angle(freqs[pair], pos[r]);
  dev::pdl_begin();
  if (!in) return;
  float* p = x + r * ld + h * stride + offset + 2 * pair;
  float re = p[0], im = p[1];
  dev::rope_rotate(re, im, a.cs, inverse ? -a.sn : a.sn);
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
