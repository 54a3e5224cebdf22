// CUDA lightning indexer (contract in indexer.h / cuda_ops.h): scores on the tensor cores
// (the FP4-simulated q and entries are exact in bf16, so only the float32 summation order
// differs from the CPU), and a radix-select top-k with the spec's tie rule.
#include <mma.h>

#include <cub/block/block_scan.cuh>

#include "cuda/check.h"
#include "ops/cuda_device.cuh"

namespace dsv4::cuda {

namespace {

namespace wmma = nvcuda::wmma;

// Config: one block = one query row × kTiles tiles of kTile entries; 4 warps share the 16×16 output tiles.
struct ScoreConfig {
  static constexpr int kTile = 64, kTiles = 4, kThreads = 128;
  static_assert(kTile % 16 == 0, "entry tiles are whole 16-wide WMMA tiles");
};

__global__ void indexer_scores_kernel(const float* qI, const float* w, float w_scale, int HI, int DI, const int32_t* slot,
                                      const int32_t* pos, const LayerCache* caches, RowFormat f, float* score,
                                      int64_t ld) {
  using C = ScoreConfig;
  extern __shared__ __align__(128) unsigned char smem[];
  const int HIp = (HI + 15) / 16 * 16;
  bf16* qs = reinterpret_cast<bf16*>(smem);                                  // [HIp, DI]
  bf16* ks = qs + HIp * DI;                                                  // [kTile, DI]
  float* S = reinterpret_cast<float*>(ks + C::kTile * DI);                   // [HIp, kTile]
  float* ws = S + HIp * C::kTile;                                            // [HIp]
  const int64_t r = blockIdx.x;
  const int count = (pos[r] + 1) / 4;
  const int e_begin = blockIdx.y * C::kTile * C::kTiles;
  if (e_begin >= count) return;
  for (int i = threadIdx.x; i < HIp * DI; i += blockDim.x)
    qs[i] = __float2bfloat16_rn(i / DI < HI ? qI[r * HI * DI + i] : 0.0f);
  for (int h = threadIdx.x; h < HIp; h += blockDim.x) ws[h] = h < HI ? w[r * HI + h] * w_scale : 0.0f;
  const CacheRows& cache = caches[slot[r]].idx_entries;
  const int warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  for (int t = 0; t < C::kTiles; ++t) {
    const int e0 = e_begin + t * C::kTile;
    if (e0 >= count) break;
    for (int i = threadIdx.x; i < C::kTile * DI; i += blockDim.x) {
      const int e = i / DI;
      ks[i] = __float2bfloat16_rn(e0 + e < count ? dev::cache_value(cache, f, e0 + e, i % DI) : 0.0f);
    }
    __syncthreads();
    const int tiles_n = C::kTile / 16, tiles = (HIp / 16) * tiles_n;
    for (int ot = warp; ot < tiles; ot += nwarps) {
      const int mi = ot / tiles_n, ni = ot % tiles_n;
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.0f);
      for (int kk = 0; kk < DI; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> b;
        wmma::load_matrix_sync(a, qs + mi * 16 * DI + kk, DI);
        wmma::load_matrix_sync(b, ks + ni * 16 * DI + kk, DI);
        wmma::mma_sync(acc, a, b, acc);
      }
      wmma::store_matrix_sync(S + mi * 16 * C::kTile + ni * 16, acc, C::kTile, wmma::mem_row_major);
    }
    __syncthreads();
    for (int e = threadIdx.x; e < C::kTile; e += blockDim.x) {
      if (e0 + e >= count) continue;
      float acc = 0.0f;
      for (int h = 0; h < HI; ++h) acc += ws[h] * fmaxf(S[h * C::kTile + e], 0.0f);
      score[r * ld + e0 + e] = acc;
    }
    __syncthreads();
  }
}

// Order-preserving key of a float (larger float -> larger key; -0 as +0).
__device__ __forceinline__ uint32_t order_key(float v) {
  uint32_t u = __float_as_uint(v == 0.0f ? 0.0f : v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

constexpr int kTopkThreads = 512;

__global__ void topk_kernel(const float* score, int64_t ld, const int32_t* pos, int ratio, int K, int32_t* idx) {
  using Scan = cub::BlockScan<int, kTopkThreads>;
  __shared__ typename Scan::TempStorage scan_tmp;
  __shared__ uint32_t hist[256];
  __shared__ uint32_t sh_prefix;
  __shared__ int sh_remaining;
  const int64_t r = blockIdx.x;
  const int count = (pos[r] + 1) / ratio;
  const float* s = score + r * ld;
  int32_t* out = idx + r * K;
  if (count <= K) {
    for (int i = threadIdx.x; i < K; i += blockDim.x) out[i] = i < count ? i : -1;
    return;
  }
  // Radix select of the K-th largest key, 8 bits at a time from the top.
  uint32_t prefix = 0, mask = 0;
  int remaining = K;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < count; i += blockDim.x) {
      const uint32_t k = order_key(s[i]);
      if ((k & mask) == prefix) atomicAdd(&hist[(k >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int cum = 0;
      for (int dgt = 255; dgt >= 0; --dgt) {
        const int h = static_cast<int>(hist[dgt]);
        if (cum + h >= remaining) {
          sh_prefix = prefix | (static_cast<uint32_t>(dgt) << shift);
          sh_remaining = remaining - cum;
          break;
        }
        cum += h;
      }
    }
    __syncthreads();
    prefix = sh_prefix;
    remaining = sh_remaining;
    mask |= 255u << shift;
    __syncthreads();
  }
  // Every key above the threshold, and the first `remaining` keys equal to it in index order.
  const uint32_t threshold = prefix;
  int taken = 0, ties_seen = 0;
  for (int base = 0; base < count; base += blockDim.x) {
    const int i = base + threadIdx.x;
    const uint32_t k = i < count ? order_key(s[i]) : 0u;
    const int tie = (i < count && k == threshold) ? 1 : 0;
    int tie_rank, tie_total;
    Scan(scan_tmp).ExclusiveSum(tie, tie_rank, tie_total);
    __syncthreads();
    const int take = (i < count && k > threshold) || (tie && ties_seen + tie_rank < remaining) ? 1 : 0;
    int out_rank, take_total;
    Scan(scan_tmp).ExclusiveSum(take, out_rank, take_total);
    __syncthreads();
    if (take) out[taken + out_rank] = i;
    taken += take_total;
    ties_seen += tie_total;
  }
}

}  // namespace

void indexer_scores_cuda(const float* qI, const float* w, float w_scale, int64_t rows, int HI, int DI, const int32_t* slot,
                         const int32_t* pos, const LayerCache* caches, bool compact, float* score, int64_t ld,
                         int64_t max_count, cudaStream_t s) {
  using C = ScoreConfig;
  DSV4_CHECK(DI % 16 == 0 && DI % 32 == 0, "indexer", "index_head_dim ", DI, " must be a multiple of 32");
  if (rows == 0 || max_count == 0) return;
  const int HIp = (HI + 15) / 16 * 16;
  const size_t smem = (HIp * DI + C::kTile * DI) * sizeof(bf16) + (HIp * C::kTile + HIp) * sizeof(float);
  static size_t raised = 0;
  if (smem > 48 * 1024 && smem > raised) {
    DSV4_CUDA_CHECK(cudaFuncSetAttribute(indexer_scores_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem)));
    raised = smem;
  }
  const RowFormat f{DI, 0, compact, true};
  const int64_t per_block = C::kTile * C::kTiles;
  dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>((max_count + per_block - 1) / per_block));
  indexer_scores_kernel<<<grid, C::kThreads, smem, s>>>(qI, w, w_scale, HI, DI, slot, pos, caches, f, score, ld);
  DSV4_CUDA_LAUNCHED("indexer_scores_kernel");
}

void topk_cuda(const float* score, int64_t ld, int64_t rows, const int32_t* pos, int ratio, int K, int32_t* idx,
               cudaStream_t s) {
  if (rows == 0 || K == 0) return;
  topk_kernel<<<static_cast<unsigned>(rows), kTopkThreads, 0, s>>>(score, ld, pos, ratio, K, idx);
  DSV4_CUDA_LAUNCHED("topk_kernel");
}

}  // namespace dsv4::cuda
