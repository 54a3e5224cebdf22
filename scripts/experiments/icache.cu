// How much does cold code cost a kernel that runs its instructions once? A development experiment
// for the decode step (docs/cuda.md), not part of dsv4. The decode step's small kernels (routing,
// mHC, attention, top-k) run thousands of straight-line instructions once a launch, and ~25 other
// kernels run between two launches of one of them, so their code is fetched from L2 as they go.
// A kernel of N independent FFMAs (16 chains, unrolled: ~1.86 N distinct SASS instructions, the
// cubin's count) on one block per SM times its body by clock64 (median over the SMs, of 20 launches):
//   warm: launched right after itself (its code in the SMs' instruction caches);
//   cold: launched after an 8192-FFMA kernel of other code (a different template, ~16K instructions),
//         which pushes it out.
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a scripts/experiments/icache.cu \
//     -o /tmp/ic && /tmp/ic
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "experiment.cuh"

template <int N, int kSalt>
__global__ void __launch_bounds__(128) straight(float seed, float* out, long long* cycles) {
  float a[16];
#pragma unroll
  for (int i = 0; i < 16; ++i) a[i] = seed + i;
  __syncthreads();
  const long long t0 = clock64();
#pragma unroll
  for (int r = 0; r < N / 16; ++r)
#pragma unroll
    for (int i = 0; i < 16; ++i) a[i] = fmaf(a[i], 1.0001f + 1e-7f * (r * 16 + i + kSalt), 1e-6f * (i + 1));
  __syncthreads();
  const long long t1 = clock64();
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < 16; ++i) s += a[i];
  if (s == 12345.678f) out[0] = s;
  if (threadIdx.x == 0) cycles[blockIdx.x] = t1 - t0;
}

int main() {
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  float* out;
  long long* cyc;
  CK(cudaMalloc(&out, 4));
  CK(cudaMalloc(&cyc, sms * sizeof(long long)));
  auto median_cycles = [&] {
    std::vector<long long> h(sms);
    CK(cudaMemcpy(h.data(), cyc, sms * sizeof(long long), cudaMemcpyDeviceToHost));
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
  run(straight<256, 0>, 256);
  run(straight<1024, 0>, 1024);
  run(straight<2048, 0>, 2048);
  run(straight<4096, 0>, 4096);
  return 0;
}
