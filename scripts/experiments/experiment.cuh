// What the standalone CUDA experiments in this folder share (not part of dsv4): a check that
// stops at the first CUDA error, and a kernel that empties L2 by writing a buffer larger than it.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#define CK(x)                                                                \
  do {                                                                       \
    cudaError_t e_ = (x);                                                    \
    if (e_ != cudaSuccess) {                                                 \
      std::printf("%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); \
      std::exit(1);                                                          \
    }                                                                        \
  } while (0)

// p[0 .. n) = v in every word: run before a timed case so that its bytes come from DRAM.
__global__ void flush_l2_kernel(uint4* p, int64_t n, uint32_t v) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    p[i] = make_uint4(v, v, v, v);
}
