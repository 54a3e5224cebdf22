// How fast can one SM pull bytes into its shared memory by cp.async.bulk? A development experiment
// for docs/decode-megakernel.md (not part of dsv4): in decode_frame.cu a block's ring refilled at
// ~45 GB/s at most, even from L2 (bench/results/2026-12-02-cuda-40.md). One block an SM; `issuers`
// threads (each the first lane of its own warp) each keep a ring of `depth` copies of `size`
// bytes in flight, waiting on a copy's mbarrier before reusing its slot. No arithmetic. Each block
// copies `per_block` bytes; the rate is bytes over the kernel's time (the median of 9 runs).
//   hbm: every block streams its own part of a 2 GiB buffer (flushed from L2 before each run);
//   l2:  every block cycles through a 32 MiB window from its own start (read once before the timed
//        run, so L2 hits).
// Results: bench/results/2026-12-02-cuda-42.md (its call1/bcr.txt): a block saturates at 31–32 GB/s
// from HBM (4.1 TB/s over 132 SMs) with ≥ 64 KB in flight, and at 65 GB/s from L2.
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a scripts/experiments/bulk_copy_rate.cu \
//     -o /tmp/bcr && /tmp/bcr
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>

#include "experiment.cuh"
#include "ring.cuh"

namespace {

constexpr int kMaxIssuers = 4, kMaxSlots = 24;

// Block b's copies: issuer i takes copies i, i + issuers, ... of the block's sequence, each `size`
// bytes from src + (start + c · size) mod window, into its own `depth` slots. start: the block's
// part of the buffer, or its place in the window.
__global__ void __launch_bounds__(32 * kMaxIssuers, 1)
    pull(const uint8_t* src, int64_t window, int64_t per_block, int size, int depth, int issuers, int64_t stride) {
  extern __shared__ __align__(128) uint8_t smem[];
  __shared__ uint64_t full[kMaxSlots];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (threadIdx.x == 0)
    for (int k = 0; k < issuers * depth; ++k) mbar_init(full + k, 1);
  __syncthreads();
  if (lane != 0 || warp >= issuers) return;
  const int64_t copies = per_block / size;
  const int64_t base = static_cast<int64_t>(blockIdx.x) * stride;
  int64_t n = 0;  // this issuer's copies so far
  for (int64_t c = warp; c < copies; c += issuers, ++n) {
    const int slot = warp * depth + static_cast<int>(n % depth);
    if (n >= depth) mbar_wait(full + slot, static_cast<uint32_t>(((n - depth) / depth) & 1));
    mbar_expect(full + slot, static_cast<uint32_t>(size));
    const int64_t off = (base + c * size) % window;
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                     static_cast<uint32_t>(__cvta_generic_to_shared(smem + static_cast<int64_t>(slot) * size))),
                 "l"(src + off), "r"(size), "r"(mbar_addr(full + slot))
                 : "memory");
  }
  for (int64_t k = n > depth ? n - depth : 0; k < n; ++k) {  // the last copies land
    const int slot = warp * depth + static_cast<int>(k % depth);
    mbar_wait(full + slot, static_cast<uint32_t>((k / depth) & 1));
  }
}

}  // namespace

int main() {
  int sms = 0, smem_max = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  CK(cudaDeviceGetAttribute(&smem_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
  CK(cudaFuncSetAttribute(pull, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_max - 1024));
  const int64_t big = 2ll << 30, window = 32ll << 20, per_block = 4ll << 20;  // 4 MiB a block
  const int64_t l2_stride = window / sms / 4096 * 4096;                       // 4 KiB-aligned starts
  uint8_t* src;
  CK(cudaMalloc(&src, big));
  CK(cudaMemset(src, 1, big));
  cudaStream_t s;
  CK(cudaStreamCreate(&s));
  Timer tm{s, nullptr, (256ll << 20) / 16};
  CK(cudaMalloc(&tm.flush, tm.flush_vecs * 16));
  std::printf(
      "| source | copy KB | in flight an issuer | issuers | KB in flight a block | GB/s an SM | TB/s over %d SMs |\n",
      sms);
  std::printf("|---|---|---|---|---|---|---|\n");
  for (const bool l2 : {false, true})
    for (const int kb : {4, 8, 16, 32, 64})
      for (const int issuers : {1, 2, 4})
        for (const int depth : {1, 2, 4, 6, 12, 24}) {
          const int64_t bytes = static_cast<int64_t>(kb) * 1024 * depth * issuers;
          if (bytes > smem_max - 1024 || issuers * depth > kMaxSlots) continue;
          const int size = kb * 1024;
          const double us = tm.median(
              9, [](int) {},
              [&] {
                if (l2)
                  pull<<<sms, 32 * kMaxIssuers, bytes, s>>>(src, window, per_block, size, depth, issuers, l2_stride);
                else
                  pull<<<sms, 32 * kMaxIssuers, bytes, s>>>(src, big, per_block, size, depth, issuers, per_block);
              },
              [&] {  // the window into L2
                if (l2)
                  pull<<<sms, 32 * kMaxIssuers, bytes, s>>>(src, window, per_block, size, depth, issuers, l2_stride);
              });
          const double total = static_cast<double>(per_block) * sms;
          std::printf("| %s | %d | %d | %d | %lld | %.0f | %.2f |\n", l2 ? "L2" : "HBM", kb, depth, issuers,
                      static_cast<long long>(bytes / 1024), per_block / (us * 1e-6) / 1e9, total / (us * 1e-6) / 1e12);
        }
  return 0;
}
