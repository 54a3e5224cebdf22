// The indexer's CUDA pieces shared by its two score kernels (indexer.cu: few query rows,
// decode; indexer_prefill.cu: many rows, prefill): PTX wrappers, the e2m1 -> bf16 decoding,
// and the many-row launcher that indexer_scores_cuda dispatches to.
#pragma once
#include <cstdint>

#include <cuda_bf16.h>

#include <algorithm>

#include "cuda/check.h"
#include "ops/cuda_device.cuh"
#include "ops/cuda_ops.h"
#include "ops/cuda_ptx.cuh"

namespace dsv4::cuda::indexer {

using ptx::cp_async;
using ptx::cp_async_commit;
using ptx::cp_async_wait;
using ptx::ldmatrix_x4;
using ptx::mma_bf16;
using ptx::mul_bf16x2;
using ptx::pack_bf16x2;
using ptx::prmt;

// ---- e2m1 codes -> bf16 ---------------------------------------------------------------------------

// The e2m1 magnitudes {0, 0.5, 1, 1.5, 2, 3, 4, 6} in bf16 are 0x0000, 0x3F00, 0x3F80, 0x3FC0,
// 0x4000, 0x4040, 0x4080, 0x40C0: their high and low bytes as 8-byte prmt tables (codes 0-3, 4-7).
constexpr uint32_t kE2m1HighBytes03 = 0x3F3F3F00u, kE2m1HighBytes47 = 0x40404040u;
constexpr uint32_t kE2m1LowBytes03 = 0xC0800000u, kE2m1LowBytes47 = 0xC0804000u;
constexpr uint32_t kBf16SignBits = 0x80008000u;

// 8 codes (nibble i = element i) -> 4 bf16 pairs (pair p = elements 2p, 2p+1, the lower one in the
// low half), exact. Magnitudes by table lookup; the sign (nibble bit 3) of element 2p is bit 7 of
// byte p of (x << 4) and that of element 2p+1 bit 7 of byte p of x: prmt's sign-replicate mode
// (selector bit 3) copies them to bytes 1 and 3.
__device__ __forceinline__ void e2m1x8_to_bf16(uint32_t x, uint32_t (&pairs)[4]) {
  const uint32_t mag = x & 0x77777777u, x4 = x << 4;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const uint32_t sel = half ? mag >> 16 : mag;  // prmt reads the low 4 selector nibbles
    const uint32_t hi = prmt(kE2m1HighBytes03, kE2m1HighBytes47, sel);
    const uint32_t lo = prmt(kE2m1LowBytes03, kE2m1LowBytes47, sel);
    pairs[2 * half] = prmt(lo, hi, 0x5140u);
    pairs[2 * half + 1] = prmt(lo, hi, 0x7362u);
  }
#pragma unroll
  for (int p = 0; p < 4; ++p) pairs[p] |= prmt(x4, x, 0xC080u + 0x1010u * p) & kBf16SignBits;
}
// 2^(b − 127) as bf16, twice (b = 0 is the subnormal 2^−127, as e8m0_value).
__device__ __forceinline__ uint32_t e8m0_to_bf16x2(uint32_t b) {
  const uint32_t h = b ? b << 7 : 0x0040u;
  return h | (h << 16);
}

// ---- the many-row kernel (indexer_prefill.cu) -----------------------------------------------------

// indexer_scores_cuda gives more rows than this to the many-row kernel (when it fits DI): the
// few-row kernel is tuned (and graph-captured) for decode batches up to here.
constexpr int64_t kFewRows = 64;
bool prefill_scores_fit(int DI);
// indexer_scores_cuda's contract (cuda_ops.h) for DI where prefill_scores_fit.
void prefill_scores(const float* qI, const float* w, float w_scale, int64_t rows, int HI, int DI, const int32_t* slot,
                    const int32_t* pos, const LayerCache* caches, bool compact, float* score, int64_t ld,
                    int64_t max_count, cudaStream_t s);

// ---- the few-row kernels' scores and their digit counts ------------------------------------------

// One lane's score of entry e (valid): written (added to the earlier head passes'), and its digit
// counted into the block's shared `count` [kTopkDigits] when `counting` (decode: the top-k's first
// digit, indexer_scores_cuda's `digits`). Called by whole warps: one shared atomic per distinct
// digit of the warp's scores (they crowd into a few digits, and same-address atomics serialize).
__device__ __forceinline__ void put_score(float* row, int e, float v, bool valid, bool first_pass, bool counting,
                                          uint32_t* count) {
  uint32_t bucket = ~0u;  // not a digit: the lanes without a score match each other only
  if (valid) {
    const float out = first_pass ? v : row[e] + v;
    row[e] = out;
    bucket = dev::order_key(out) >> (32 - kTopkDigitBits);
  }
  if (counting) {
    const uint32_t peers = __match_any_sync(0xffffffffu, bucket);
    if (valid && __ffs(peers) - 1 == static_cast<int>(threadIdx.x % 32)) atomicAdd(&count[bucket], static_cast<uint32_t>(__popc(peers)));
  }
}
// The block's counts zeroed (before its first score), and added to the row's counters after its
// last (behind a barrier).
__device__ __forceinline__ void clear_counts(uint32_t* count) {
  for (int b = threadIdx.x; b < kTopkDigits; b += blockDim.x) count[b] = 0;
}
__device__ __forceinline__ void flush_counts(const uint32_t* count, uint32_t* row_digits) {
  __syncthreads();
  for (int b = threadIdx.x; b < kTopkDigits; b += blockDim.x)
    if (count[b]) atomicAdd(&row_digits[b], count[b]);
}

// ---- the few-row launches ---------------------------------------------------------------------

// The grid of a few-row scores kernel (blocks of `threads` with `smem` bytes of dynamic shared
// memory, `per_block` tiles a block at the least): per row, enough blocks to fill the GPU once (its
// warps or warpgroups stride over the tiles), none without a tile. The shared-memory opt-in (asked
// whatever the size: the static shared memory counts too) and the occupancy are asked once a
// kernel, into its `per_sm`.
template <typename Kernel>
dim3 few_row_grid(Kernel kernel, int threads, int smem, int64_t rows, int64_t tiles, int per_block, int& per_sm) {
  if (per_sm == 0) {
    DSV4_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    DSV4_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
    per_sm = std::max(1, per_sm);
  }
  int device = 0, sms = 0;
  DSV4_CUDA_CHECK(cudaGetDevice(&device));
  DSV4_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t fill = std::max<int64_t>(1, static_cast<int64_t>(sms) * per_sm / rows);
  const int64_t parts = std::min((tiles + per_block - 1) / per_block, fill);
  return dim3(static_cast<unsigned>(rows), static_cast<unsigned>(parts));
}

// ---- the warpgroup kernel (indexer_wgmma.cu) ------------------------------------------------------

// Whether the wgmma kernel takes the few-row scores of this shape (compact entries, DI = 128).
bool wgmma_scores_fit(int DI, bool compact);
// indexer_scores_cuda's contract (cuda_ops.h) for few rows where wgmma_scores_fit.
bool wgmma_scores(const float* qI, const float* w, float w_scale, int64_t rows, int HI, const int32_t* slot,
                  const int32_t* pos, const LayerCache* caches, float* score, int64_t ld, int64_t max_count,
                  cudaStream_t s, uint32_t* digits);

}  // namespace dsv4::cuda::indexer
