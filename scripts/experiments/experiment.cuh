// What the standalone CUDA experiments in this folder share (not part of dsv4): a check that
// stops at the first CUDA error, a kernel that empties L2 by writing a buffer larger than it, the
// median time of a case run after it, a hash of output bits, a flat read (a case's ceiling) and
// the hash that fills synthetic e4m3 weights.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

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

// Milliseconds of run(), launched on stream s, between two events.
inline float event_ms(cudaStream_t s, const std::function<void()>& run) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  CK(cudaEventRecord(a, s));
  run();
  CK(cudaEventRecord(b, s));
  CK(cudaEventSynchronize(b));
  float ms = 0;
  CK(cudaEventElapsedTime(&ms, a, b));
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  return ms;
}

struct Timer {
  cudaStream_t s;
  uint4* flush;
  int64_t flush_vecs;
  // Median microseconds of `trials` runs (after two untimed ones) of setup(trial) (untimed), a
  // flush of L2, after_flush() (untimed: what a real step has in L2), then run() (timed).
  // EXP_NO_FLUSH=1 skips the flush: the kernels' code and data stay in L2 (and in the SMs'
  // instruction caches), bounding what cold fetches cost.
  double median(int trials, const std::function<void(int)>& setup, const std::function<void()>& run,
                const std::function<void()>& after_flush = {}) {
    std::vector<float> t;
    for (int i = 0; i < trials + 2; ++i) {
      setup(i);
      static const bool no_flush = std::getenv("EXP_NO_FLUSH") != nullptr;
      if (!no_flush) flush_l2_kernel<<<528, 256, 0, s>>>(flush, flush_vecs, i);
      if (after_flush) after_flush();
      const float ms = event_ms(s, run);
      if (i >= 2) t.push_back(ms * 1000);
    }
    CK(cudaGetLastError());
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }
};

// kernel<<<grid, block, smem, s>>>(args...) with programmatic dependent launch (PDL): it may start
// before the previous kernel of s ends, and orders itself after it with griddepcontrol.wait.
template <class... Params, class... Args>
void launch_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, Args... args) {
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  CK(cudaLaunchKernelEx(&cfg, kernel, static_cast<Params>(args)...));
}

// FNV-1a over 32-bit words: variants that keep the summation order print the same.
inline uint64_t fnv1a(const std::vector<uint32_t>& words) {
  uint64_t hash = 1469598103934665603ull;
  for (uint32_t v : words) hash = (hash ^ v) * 1099511628211ull;
  return hash;
}

// One flat read of n 16-byte vectors by a grid-stride loop: the ceiling for a case's bytes. sink
// is written only so that the loads stay.
__global__ void flat_read(const uint4* p, int64_t n, uint32_t* sink) {
  uint32_t acc = 0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p + i));
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) sink[0] = acc;
}

// The synthetic weights' hash of element i, and an e4m3 code from it: magnitudes 2^-9 .. 2^-3
// (exponent fields 0..6 above the bias's -7), either sign, never NaN.
__host__ __device__ inline uint32_t fill_hash(int64_t i, uint32_t seed) {
  uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
  h ^= h >> 15;
  h *= 2246822519u;
  h ^= h >> 13;
  return h;
}
__host__ __device__ inline uint8_t e4m3_from_hash(uint32_t h) {
  return static_cast<uint8_t>((h & 0x80u) | ((h >> 8) % 7u) << 3 | (h >> 16 & 7u));
}
