// Is the decode roofline's read kernel (cuda_bench.cu's read_kernel) the fastest read we can
// measure? A development experiment, not part of dsv4. The twenty-fifth session's trace showed
// the LM head's bf16 few-row product (1.06 GB) streaming at ~4.3 TB/s in the step, above the
// 3946 GB/s that read_kernel measured in the same call: if a plain read can do better, the
// roofline is too low and every "% of the roofline" too high.
// Cases: read_kernel as it is (one 16-byte load a thread an iteration, __ldcs), then reads with U
// independent 16-byte loads in flight a thread (ld.global.nc.L1::no_allocate), over several grid
// sizes, and a device-to-device cudaMemcpy (read + write) for reference; each the best of 8 after
// a warm-up, on 2 GiB and on the head's 1.06 GB.
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a scripts/experiments/read_ceiling.cu -o /tmp/rc && /tmp/rc
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>

#include "experiment.cuh"

// cuda_bench.cu's read_kernel, copied here so that the two stay comparable.
__global__ void read_now(const uint4* p, size_t n, unsigned* sink) {
  unsigned acc = 0;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const uint4 v = __ldcs(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) *sink = acc;
}

__device__ __forceinline__ uint4 ld_stream(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// U loads in flight a thread: thread t of the grid reads vectors (i0 + u·T) for u < U, i0 stepping
// by U·T (T = threads in the grid); the tail with a bound check.
template <int U>
__global__ void read_unrolled(const uint4* p, size_t n, unsigned* sink) {
  const size_t T = static_cast<size_t>(gridDim.x) * blockDim.x;
  unsigned acc = 0;
  size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  for (; i + (U - 1) * T < n; i += U * T) {
    uint4 v[U];
#pragma unroll
    for (int u = 0; u < U; ++u) v[u] = ld_stream(p + i + u * T);
#pragma unroll
    for (int u = 0; u < U; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < n; i += T) {
    const uint4 v = ld_stream(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) *sink = acc;
}

int main() {
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const size_t big = size_t(2) << 30, head = size_t(129280) * 4096 * 2;
  char* a;
  char* b;
  unsigned* sink;
  CK(cudaMalloc(&a, big));
  CK(cudaMalloc(&b, big));
  CK(cudaMalloc(&sink, 4));
  CK(cudaMemset(a, 1, big));
  cudaStream_t s;
  CK(cudaStreamCreate(&s));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  auto best = [&](auto&& launch) {
    float t = 1e30f;
    for (int i = 0; i < 9; ++i) {
      CK(cudaEventRecord(e0, s));
      launch();
      CK(cudaEventRecord(e1, s));
      CK(cudaEventSynchronize(e1));
      float ms = 0;
      CK(cudaEventElapsedTime(&ms, e0, e1));
      if (i > 0) t = std::min(t, ms);
    }
    CK(cudaGetLastError());
    return static_cast<double>(t);
  };
  std::printf("%d SMs\n", sms);
  for (size_t bytes : {big, head}) {
    const size_t n = bytes / 16;
    const auto* p = reinterpret_cast<const uint4*>(a);
    std::printf("-- %.3f GB\n", bytes / 1e9);
    auto report = [&](const char* name, int blocks, int threads, double ms) {
      std::printf("%-34s %6d x %4d: %8.1f us  %6.0f GB/s\n", name, blocks, threads, ms * 1e3, bytes / (ms * 1e-3) / 1e9);
    };
    report("read_kernel (today's roofline)", sms * 8, 512,
           best([&] { read_now<<<sms * 8, 512, 0, s>>>(p, n, sink); }));
    for (int per_sm : {1, 2, 4, 8, 16})
      for (int threads : {256, 512, 1024}) {
        if (per_sm * threads > 4096) continue;
        const int blocks = sms * per_sm;
        char name[64];
        std::snprintf(name, sizeof name, "unrolled U=4");
        report(name, blocks, threads, best([&] { read_unrolled<4><<<blocks, threads, 0, s>>>(p, n, sink); }));
        std::snprintf(name, sizeof name, "unrolled U=8");
        report(name, blocks, threads, best([&] { read_unrolled<8><<<blocks, threads, 0, s>>>(p, n, sink); }));
      }
    report("unrolled U=2", sms * 4, 512, best([&] { read_unrolled<2><<<sms * 4, 512, 0, s>>>(p, n, sink); }));
    report("unrolled U=16", sms * 2, 512, best([&] { read_unrolled<16><<<sms * 2, 512, 0, s>>>(p, n, sink); }));
    const double cp = best([&] { CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s)); });
    std::printf("%-34s              %8.1f us  %6.0f GB/s read + written\n", "cudaMemcpy D2D", cp * 1e3,
                2.0 * bytes / (cp * 1e-3) / 1e9);
  }
  return 0;
}
