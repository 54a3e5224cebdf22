// Was the decode roofline's read kernel (read_one_kernel, until the twenty-sixth session) the
// fastest read we can measure? A development experiment, not part of dsv4. The twenty-fifth
// session's trace showed the LM head's bf16 few-row product (1.06 GB) streaming at ~4.3 TB/s in
// the step, above the 3946 GB/s that kernel measured in the same call: if a plain read can do
// better, the roofline is too low and every "% of the roofline" too high.
// Cases: read_one_kernel (one 16-byte load a thread an iteration, __ldcs), then reads with U
// independent 16-byte loads in flight a thread (ld.global.nc.L1::no_allocate), over several grid
// sizes, and a device-to-device cudaMemcpy (read + write) for reference; each the best of 8 after
// a warm-up, on 2 GiB and on the head's 1.06 GB. The kernels are dsv4's own
// (src/cuda/read_kernels.cuh), so the two stay comparable.
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Isrc scripts/experiments/read_ceiling.cu \
//     -o /tmp/rc && /tmp/rc
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>

#include "cuda/read_kernels.cuh"
#include "experiment.cuh"

using namespace dsv4::cuda;

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
  auto best = [&](const std::function<void()>& launch) {  // of 8, after a warm-up
    float t = 1e30f;
    for (int i = 0; i < 9; ++i) {
      const float ms = event_ms(s, launch);
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
    report("read_one_kernel (roofline to session 25)", sms * 8, 512,
           best([&] { read_one_kernel<<<sms * 8, 512, 0, s>>>(p, n, sink); }));
    for (int per_sm : {1, 2, 4, 8, 16})
      for (int threads : {256, 512, 1024}) {
        if (per_sm * threads > 4096) continue;
        const int blocks = sms * per_sm;
        char name[64];
        std::snprintf(name, sizeof name, "unrolled U=4");
        report(name, blocks, threads, best([&] { read_kernel<4><<<blocks, threads, 0, s>>>(p, n, sink); }));
        std::snprintf(name, sizeof name, "unrolled U=8");
        report(name, blocks, threads, best([&] { read_kernel<8><<<blocks, threads, 0, s>>>(p, n, sink); }));
      }
    report("unrolled U=2", sms * 4, 512, best([&] { read_kernel<2><<<sms * 4, 512, 0, s>>>(p, n, sink); }));
    report("unrolled U=16", sms * 2, 512, best([&] { read_kernel<16><<<sms * 2, 512, 0, s>>>(p, n, sink); }));
    const double cp = best([&] { CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s)); });
    std::printf("%-34s              %8.1f us  %6.0f GB/s read + written\n", "cudaMemcpy D2D", cp * 1e3,
                2.0 * bytes / (cp * 1e-3) / 1e9);
  }
  return 0;
}
