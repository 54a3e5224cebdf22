// Does an L2 prefetch, issued while the main chain is latency-bound, make the next weight stream
// faster? A development experiment for the decode step (docs/cuda.md), not part of dsv4.
//   nvcc -O3 -gencode=arch=compute_90a,code=sm_90a scripts/experiments/l2_prefetch.cu -o /tmp/l2p && /tmp/l2p
// Cases (each after flushing L2 with a 512 MiB read):
//   cold:     the stream (a 32 MiB read at gemv-like rate) alone;
//   spin:     a 2-block 20 µs latency-bound kernel, then the stream (the chain of today);
//   spin+pf:  the same with a prefetch of the stream's bytes on a second stream beside the spin.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <vector>
#include "experiment.cuh"

__global__ void stream_read(const uint4* p, int64_t n, uint32_t* out) {
  uint32_t acc = 0;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const uint4 v = __ldcs(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) out[0] = acc;
}

__global__ void spin(int64_t ns) {
  uint64_t t0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  for (;;) {
    uint64_t t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    if ((int64_t)(t - t0) >= ns) break;
  }
}

// mode 0: cp.async.bulk.prefetch.L2 of `chunk` bytes per thread-step; mode 1: prefetch.global.L2 per 128 B line.
__global__ void prefetch(const char* p, int64_t bytes, int chunk, int mode) {
  const int64_t tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, nt = (int64_t)gridDim.x * blockDim.x;
  if (mode == 0) {
    for (int64_t off = tid * chunk; off < bytes; off += nt * chunk) {
      const uint32_t n = (uint32_t)((bytes - off < chunk ? bytes - off : chunk) & ~15ll);
      asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p + off), "r"(n) : "memory");
    }
  } else {
    for (int64_t off = tid * 128; off < bytes; off += nt * 128) asm volatile("prefetch.global.L2 [%0];" ::"l"(p + off));
  }
}

int main() {
  const int64_t W = 32ll << 20, F = 512ll << 20;
  char *w, *f;
  uint32_t* out;
  CK(cudaMalloc(&w, W));
  CK(cudaMalloc(&f, F));
  CK(cudaMalloc(&out, 4));
  CK(cudaMemset(w, 1, W));
  CK(cudaMemset(f, 2, F));
  cudaStream_t s1, s2;
  CK(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking));
  CK(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
  cudaEvent_t e0, e1, fork;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  CK(cudaEventCreate(&fork));
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  auto flush = [&] { stream_read<<<sms * 8, 256, 0, s1>>>((const uint4*)f, F / 16, out); };
  auto read = [&](cudaStream_t s) { stream_read<<<sms * 4, 256, 0, s>>>((const uint4*)w, W / 16, out); };
  auto timed = [&](auto&& body) {
    float best = 1e9;
    for (int rep = 0; rep < 7; ++rep) {
      flush();
      CK(cudaStreamSynchronize(s1));
      CK(cudaEventRecord(e0, s1));
      body();
      CK(cudaEventRecord(e1, s1));
      CK(cudaEventSynchronize(e1));
      float ms;
      CK(cudaEventElapsedTime(&ms, e0, e1));
      if (rep > 0 && ms < best) best = ms;
    }
    return best * 1000.0f;
  };
  std::printf("%d SMs; stream of %lld MiB\n", sms, (long long)(W >> 20));
  const float cold = timed([&] { read(s1); });
  std::printf("cold stream alone:             %7.2f us (%.0f GB/s)\n", cold, W / cold / 1e3);
  for (int spin_us : {10, 20, 30}) {
    const float base = timed([&] {
      spin<<<2, 32, 0, s1>>>(spin_us * 1000);
      read(s1);
    });
    std::printf("spin %2d us, then stream:       %7.2f us (stream part %.2f)\n", spin_us, base, base - spin_us);
    struct V { int mode, blocks, threads, chunk; };
    for (V v : {V{0, 1, 32, 65536}, V{0, 4, 32, 65536}, V{0, 16, 32, 16384}, V{0, 16, 32, 65536}, V{0, 64, 32, 16384},
                V{0, 132, 32, 8192}, V{1, 16, 256, 0}, V{1, 64, 256, 0}, V{1, 132, 256, 0}}) {
      const float t = timed([&] {
        CK(cudaEventRecord(fork, s1));
        CK(cudaStreamWaitEvent(s2, fork, 0));
        prefetch<<<v.blocks, v.threads, 0, s2>>>(w, W, v.chunk, v.mode);
        spin<<<2, 32, 0, s1>>>(spin_us * 1000);
        read(s1);
        CK(cudaEventRecord(fork, s2));
        CK(cudaStreamWaitEvent(s1, fork, 0));
      });
      std::printf("  + prefetch %s %3d x %3d chunk %6d: %7.2f us (stream part %.2f)\n", v.mode ? "line" : "bulk", v.blocks,
                  v.threads, v.chunk, t, t - spin_us);
    }
  }
  // The prefetch alone: how fast does it fill L2 (then a stream from L2)?
  for (int blocks : {4, 16, 64}) {
    const float t = timed([&] {
      prefetch<<<blocks, 32, 0, s1>>>(w, W, 65536, 0);
      spin<<<1, 32, 0, s1>>>(40000);
      read(s1);
    });
    std::printf("bulk prefetch %2d blocks, 40 us wait, stream: %7.2f us (stream part %.2f)\n", blocks, t, t - 40);
  }
  return 0;
}
