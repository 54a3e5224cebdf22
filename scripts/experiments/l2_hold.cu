// Does L2 hold a weight stream between a prefetch and its reader? A development experiment for the
// decode step (docs/cuda.md), not part of dsv4. The decode step leaves HBM idle for ~20 us a layer
// (mHC, routing, the indexer's chain at short contexts); if the next big product's weights could
// be fetched into L2 then, the product would read them from L2. The 2026-11-29 experiment
// (l2_prefetch.cu) overlapped prefetch and reader; this one separates them. Cases per size S
// (each after a 512 MiB write that empties L2, median of 15):
//   cold:        one read of S bytes (all SMs, 4 loads in flight a thread), timed;
//   read-read:   the same read twice, the second timed (what L2 keeps of a plain read);
//   pf-read:     a line prefetch of S bytes (prefetch.global.L2::evict_last), then the read;
//   pf-x-read:   the prefetch, an 8 MiB streamed read of other bytes (the traffic between), then
//                the read;
//   gap:         the prefetch alone (how long it takes to fill L2 with S bytes).
// Loads: the reader uses the products' weight load (ptx::ld_streamed: ld.global.nc.L1::no_allocate)
// or plain ld.global (EXP_PLAIN=1).
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Isrc scripts/experiments/l2_hold.cu \
//     -o /tmp/l2h && /tmp/l2h
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "experiment.cuh"
#include "ops/cuda_ptx.cuh"

using dsv4::cuda::ptx::ld_streamed;

template <bool kPlain>
__global__ void __launch_bounds__(256) reader(const uint4* p, int64_t n, uint32_t* out) {
  uint32_t acc = 0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  for (; i + 3 * stride < n; i += 4 * stride) {
    uint4 v[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) v[u] = kPlain ? p[i + u * stride] : ld_streamed(p + i + u * stride);
#pragma unroll
    for (int u = 0; u < 4; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < n; i += stride) {
    const uint4 v = kPlain ? p[i] : ld_streamed(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) out[0] = acc;
}

__global__ void prefetch_lines(const char* p, int64_t bytes) {
  const int64_t tid = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t nt = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t off = tid * 128; off < bytes; off += nt * 128)
    asm volatile("prefetch.global.L2::evict_last [%0];" ::"l"(p + off));
}

int main() {
  const bool plain = std::getenv("EXP_PLAIN") != nullptr;
  const int64_t kMax = 48ll << 20, kOther = 8ll << 20, kFlush = 512ll << 20;
  char *w, *other;
  uint4* flush;
  uint32_t* out;
  CK(cudaMalloc(&w, kMax));
  CK(cudaMalloc(&other, kOther));
  CK(cudaMalloc(&flush, kFlush));
  CK(cudaMalloc(&out, 4));
  CK(cudaMemset(w, 1, kMax));
  CK(cudaMemset(other, 3, kOther));
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  int sms = 0, l2 = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  CK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0));
  Timer timer{s, flush, kFlush / 16};
  auto read = [&](const char* p, int64_t bytes) {
    if (plain) reader<true><<<sms * 4, 256, 0, s>>>(reinterpret_cast<const uint4*>(p), bytes / 16, out);
    else reader<false><<<sms * 4, 256, 0, s>>>(reinterpret_cast<const uint4*>(p), bytes / 16, out);
  };
  auto pf = [&](int64_t bytes, int blocks) { prefetch_lines<<<blocks, 256, 0, s>>>(w, bytes); };
  std::printf("%d SMs, L2 %d MiB; reader loads: %s\n", sms, l2 >> 20, plain ? "plain" : "nc, no L1 allocation");
  std::printf("%6s %9s %10s %14s %14s %14s %12s\n", "MiB", "cold us", "read-read", "pf(132)-read", "pf(16)-read",
              "pf-8MiB-read", "pf(132) us");
  for (int mib : {4, 8, 16, 24, 32, 40, 48}) {
    const int64_t S = static_cast<int64_t>(mib) << 20;
    const double cold = timer.median(15, [](int) {}, [&] { read(w, S); });
    const double rr = timer.median(15, [](int) {}, [&] { read(w, S); }, [&] { read(w, S); });
    const double pr = timer.median(15, [](int) {}, [&] { read(w, S); }, [&] { pf(S, sms); });
    const double pr16 = timer.median(15, [](int) {}, [&] { read(w, S); }, [&] { pf(S, 16); });
    const double pxr = timer.median(15, [](int) {}, [&] { read(w, S); }, [&] {
      pf(S, sms);
      read(other, kOther);
    });
    const double gap = timer.median(15, [](int) {}, [&] { pf(S, sms); });
    std::printf("%6d %9.2f %10.2f %14.2f %14.2f %14.2f %12.2f\n", mib, cold, rr, pr, pr16, pxr, gap);
  }
  return 0;
}
