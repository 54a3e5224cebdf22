// Plain reads of a buffer, for the decode roofline (dsv4 bench, model/cuda_bench.cu) and the
// standalone experiment that checks it (scripts/experiments/read_ceiling.cu): every 16-byte word
// of p [n] read once; the xor of the words keeps the loads alive and is stored practically never.
#pragma once
#include <cstddef>
#include <cstdint>

#include "ops/cuda_ptx.cuh"

namespace dsv4::cuda {

// One load a thread an iteration, evict-first: the roofline kernel of sessions 2 to 25.
static __global__ void read_one_kernel(const uint4* p, size_t n, unsigned* sink) {
  unsigned acc = 0;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const uint4 v = __ldcs(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) *sink = acc;
}

// U independent loads in flight a thread: vectors i, i + T, ..., i + (U − 1)·T (T the grid's
// threads), then i += U·T; the tail one at a time.
template <int U>
__global__ void read_kernel(const uint4* p, size_t n, unsigned* sink) {
  const size_t T = static_cast<size_t>(gridDim.x) * blockDim.x;
  unsigned acc = 0;
  size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  for (; i + (U - 1) * T < n; i += U * T) {
    uint4 v[U];
#pragma unroll
    for (int u = 0; u < U; ++u) v[u] = ptx::ld_streamed(p + i + u * T);
#pragma unroll
    for (int u = 0; u < U; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < n; i += T) {
    const uint4 v = ptx::ld_streamed(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) *sink = acc;
}

}  // namespace dsv4::cuda
