// How much does cold code cost a kernel that runs its instructions once? A development experiment
// for the decode step (docs/cuda.md), not part of dsv4. The decode step's small kernels (routing,
// mHC, attention, top-k) run thousands of straight-line instructions once a launch, and ~25 other
// kernels run between two launches of one of them, so their code is fetched from L2 as they go.
// A kernel of N independent FFMAs (16 chains, unrolled: ~1.86 N distinct SASS instructions, the
// cubin's count) on one block per SM times its body by clock64 (median over the SMs, of 20 launches):
//   warm: launched right after itself (its code in the SMs' instruction caches);
//   cold: launched after an 8192-FFMA kernel of other code (a different template, ~16K instructions),
//         which pushes it out;
//   evicted: as cold, after a 512 MiB write as well, which pushes its code out of L2 (a decode
//         step streams ~20x L2's size of weights between two launches of one kernel).
// A second kernel (twice) runs its body twice in a rolled loop, the first pass on values it throws
// away (what a kernel could do before its PDL wait), and times both passes in each condition.
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a scripts/experiments/icache.cu \
//     -o /tmp/ic && /tmp/ic
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "experiment.cuh"

// N FFMAs in 16 independent chains, unrolled: straight-line code (~1.86 N SASS instructions).
template <int N, int kSalt>
__device__ __forceinline__ void ffma_chains(float (&a)[16]) {
#pragma unroll
  for (int r = 0; r < N / 16; ++r)
#pragma unroll
    for (int i = 0; i < 16; ++i) a[i] = fmaf(a[i], 1.0001f + 1e-7f * (r * 16 + i + kSalt), 1e-6f * (i + 1));
}
// A store that needs every chain (never taken), so that the FFMAs stay where they are.
__device__ __forceinline__ void keep_chains(const float (&a)[16], float* out) {
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < 16; ++i) s += a[i];
  if (s == 12345.678f) out[0] = s;
}

template <int N, int kSalt>
__global__ void __launch_bounds__(128) straight(float seed, float* out, long long* cycles) {
  float a[16];
#pragma unroll
  for (int i = 0; i < 16; ++i) a[i] = seed + i;
  __syncthreads();
  const long long t0 = clock64();
  ffma_chains<N, kSalt>(a);
  __syncthreads();
  const long long t1 = clock64();
  keep_chains(a, out);
  if (threadIdx.x == 0) cycles[blockIdx.x] = t1 - t0;
}

// The body twice in one rolled loop (one copy of the code): cycles of pass 0, then of pass 1. The
// chains carry over and are kept before the barrier, so that no pass's FFMAs are dead or move.
template <int N, int kSalt>
__global__ void __launch_bounds__(128) twice(float seed, float* out, long long* cycles) {
  float a[16];
#pragma unroll
  for (int i = 0; i < 16; ++i) a[i] = seed + i;
#pragma unroll 1
  for (int pass = 0; pass < 2; ++pass) {
    __syncthreads();
    const long long t0 = clock64();
    ffma_chains<N, kSalt>(a);
    keep_chains(a, out);
    __syncthreads();
    const long long t1 = clock64();
    if (threadIdx.x == 0) cycles[pass * gridDim.x + blockIdx.x] = t1 - t0;
  }
}

int main() {
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  float* out;
  long long* cyc;
  CK(cudaMalloc(&out, 4));
  CK(cudaMalloc(&cyc, 2 * sms * sizeof(long long)));
  const int64_t flush_vecs = (int64_t(512) << 20) / 16;
  uint4* flush;
  CK(cudaMalloc(&flush, flush_vecs * 16));
  auto median_cycles = [&](int pass = 0) {
    std::vector<long long> h(sms);
    CK(cudaMemcpy(h.data(), cyc + pass * sms, sms * sizeof(long long), cudaMemcpyDeviceToHost));
    std::sort(h.begin(), h.end());
    return h[sms / 2];
  };
  auto run = [&](auto kernel, int n) {
    std::vector<long long> warm, cold;
    for (int rep = 0; rep < 20; ++rep) {
      straight<8192, 7><<<sms, 128>>>(1.0f, out, cyc);  // other code
      kernel<<<sms, 128>>>(1.0f, out, cyc);
      CK(cudaDeviceSynchronize());
      cold.push_back(median_cycles());
      kernel<<<sms, 128>>>(1.0f, out, cyc);
      CK(cudaDeviceSynchronize());
      warm.push_back(median_cycles());
    }
    std::sort(warm.begin(), warm.end());
    std::sort(cold.begin(), cold.end());
    std::printf("%6d FFMAs: warm %6lld cycles (%.2f an FFMA), cold %6lld (%.2f)\n", n, warm[10], double(warm[10]) / n,
                cold[10], double(cold[10]) / n);
  };
  // twice<N>: per condition, the median cycles of pass 0 and of pass 1.
  auto run2 = [&](auto kernel, int n) {
    std::vector<long long> v[3][2];
    for (int rep = 0; rep < 20; ++rep) {
      for (int c = 0; c < 3; ++c) {
        if (c == 2) flush_l2_kernel<<<528, 256>>>(flush, flush_vecs, rep);
        if (c >= 1) straight<8192, 7><<<sms, 128>>>(1.0f, out, cyc);
        if (c == 0) kernel<<<sms, 128>>>(1.0f, out, cyc);
        kernel<<<sms, 128>>>(1.0f, out, cyc);
        CK(cudaDeviceSynchronize());
        v[c][0].push_back(median_cycles(0));
        v[c][1].push_back(median_cycles(1));
      }
    }
    for (auto& c : v)
      for (auto& p : c) std::sort(p.begin(), p.end());
    std::printf("twice %5d FFMAs: warm %6lld / %6lld, cold %6lld / %6lld, evicted %6lld / %6lld cycles (pass 0 / 1)\n",
                n, v[0][0][10], v[0][1][10], v[1][0][10], v[1][1][10], v[2][0][10], v[2][1][10]);
  };
  run(straight<256, 0>, 256);
  run(straight<1024, 0>, 1024);
  run(straight<2048, 0>, 2048);
  run(straight<4096, 0>, 4096);
  run2(twice<256, 1>, 256);
  run2(twice<1024, 1>, 1024);
  run2(twice<2048, 1>, 2048);
  run2(twice<4096, 1>, 4096);
  return 0;
}
