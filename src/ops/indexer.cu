// CUDA lightning indexer (contract in indexer.h / cuda_ops.h): the scores of every entry and
// the top-k with the spec's tie rule, built for decode at long context (one to 64 query rows,
// up to 262144 entries a sequence at 1M tokens).
//
// Scores. One row at 262144 entries is a GEMM [HI = 64, DI = 128] × [DI, 262144] (4.3 GFLOP)
// streaming 17.8 MB of FP4 entries (64 bytes of codes + 4 scale bytes each). On the tensor
// cores (mma.sync m16n8k16, bf16 → float32) that is 4.3 µs at the dense peak (~7 µs at what
// mma.sync reaches) and ~4 µs of HBM on an H200:
//   - q never leaves the registers: a warp holds the A fragments of 64 heads × DI (128
//     registers) and streams tiles of 8 entries as the MMA's N; the products are exact (q and
//     the entries are FP4 values times powers of two), only the float32 summation order
//     differs from the CPU;
//   - the dot products are invariant under a permutation of the DI dims, so the k order of the
//     MMA is chosen such that each of the 4 threads that hold an entry's B fragments owns one
//     contiguous quarter of it: one 16-byte load of e2m1 codes and one E8M0 scale per thread;
//   - codes become bf16 in registers (byte tables through prmt, the sign bit moved in, one
//     bf16x2 multiply by the scale), never through shared memory tiles;
//   - each warp keeps kStages tiles in flight with cp.async (private to the thread, so no
//     barriers); the grid is sized to fill the GPU once, warps stride over the tiles;
//   - the ReLU-weighted head sum is fused: per thread 8 heads, then a butterfly over the warp.
// More than kGroupHeads heads take several passes, the later ones adding to the scores.
// More than kFewRows rows (prefill) go to indexer_prefill.cu, where query rows share each
// entry tile.
//
// Top-k. A radix select of the K-th largest key (8-bit digits from the top) by a thread block
// cluster of 1..8 blocks per row: each block keeps its slice of the row in shared memory, the
// blocks' digit histograms meet through distributed shared memory (one cluster barrier a
// digit), and the final pass keeps every key above the threshold and the first `remaining`
// keys equal to it in index order (ranks over blocks, warps and lanes, all exact). No global
// scratch, no atomics outside shared memory: deterministic and safe in a captured graph.
#include <cooperative_groups.h>

#include <algorithm>

#include "cuda/check.h"
#include "cuda/launch.h"
#include "ops/cuda_device.cuh"
#include "ops/indexer_cuda.cuh"

namespace dsv4::cuda {

namespace {

namespace cg = cooperative_groups;
using namespace indexer;

// ---- scores ----------------------------------------------------------------------------------------

// Config: a warp owns whole tiles of kEntries entries; the 4 threads t of entry g (lane = 4g + t)
// hold elements [t·DI/4, (t+1)·DI/4). MMA k step kk, logical k = 2t + c (c < 2) is element
// t·DI/4 + 4kk + c and k = 2t + 8 + c is element t·DI/4 + 4kk + 2 + c (the same map for q).
template <int DI>
struct ScoreTraits {
  static_assert(DI == 32 || DI == 64 || DI == 128 || DI == 256, "index_head_dim 32..256, a power of two");
  static constexpr int kWarps = 4, kThreads = 32 * kWarps;
  static constexpr int kEntries = 8;                      // the N of one MMA
  static constexpr int kKSteps = DI / 16;                 // MMAs along one dot product
  static constexpr int kHeadTiles = kKSteps <= 8 ? 4 : 2;  // q in registers: 4·kHeadTiles·kKSteps ≤ 128
  static constexpr int kGroupHeads = 16 * kHeadTiles;     // heads of one pass over the entries
  static constexpr int kChunk = DI / 4;                   // elements of an entry per thread
  static constexpr int kCodeBytes = kChunk / 2;           // its e2m1 codes
  static constexpr int kWords = kCodeBytes / 4;
  static constexpr int kCopy = kCodeBytes < 16 ? kCodeBytes : 16;  // cp.async unit of the codes
  static constexpr int kCopies = kCodeBytes / kCopy;
  static constexpr int kF32Copies = kChunk / 4;           // float32 rows: 16-byte units per thread
  static constexpr int kStages = DI <= 128 ? 8 : 4;       // tiles in flight per warp (float32 DI = 256: 128 KiB)
  static constexpr int kMinBlocks = 2;                    // per SM (8 warps): up to 255 registers, q takes 128
  // Per warp and stage: codes [kCopies][32 lanes][kCopy] then scale words [32 lanes][4 bytes];
  // or float32 [kF32Copies][32 lanes][16 bytes].
  static constexpr int kStageCompact = 32 * (kCodeBytes + 4), kStageF32 = 32 * kChunk * 4;
  static_assert(kCopies * kCopy == kCodeBytes && kWords * 8 == kChunk, "whole words of codes per thread");
  static_assert(kHeadTiles * kKSteps * 4 <= 128, "q fragments fit in 128 registers");
};

template <int DI>
__global__ void __launch_bounds__(ScoreTraits<DI>::kThreads, ScoreTraits<DI>::kMinBlocks)
    indexer_scores_kernel(const float* qI, const float* w, float w_scale, int HI, const int32_t* slot,
                          const int32_t* pos, const LayerCache* caches, bool compact, float* score, int64_t ld) {
  dev::pdl_begin();
  using T = ScoreTraits<DI>;
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ float ws[T::kGroupHeads];
  const int64_t r = blockIdx.x;
  const int count = (pos[r] + 1) / 4;
  const int tiles = (count + T::kEntries - 1) / T::kEntries;
  if (static_cast<int>(blockIdx.y) * T::kWarps >= tiles) return;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int tile0 = blockIdx.y * T::kWarps + warp, tile_stride = gridDim.y * T::kWarps;
  const int my_tiles = tile0 < tiles ? (tiles - tile0 + tile_stride - 1) / tile_stride : 0;
  const CacheRows cache = caches[slot[r]].idx_entries;
  const int stage_bytes = compact ? T::kStageCompact : T::kStageF32;
  unsigned char* stages = smem + warp * T::kStages * stage_bytes;
  const int c0 = t * T::kChunk;        // first element of the thread's quarter
  const int blk0 = c0 / 32;            // its first E8M0 block
  float* score_row = score + r * ld;

  // Tile k of this warp (k ≥ my_tiles: an empty group, to keep the group count uniform).
  auto issue = [&](int k) {
    if (k < my_tiles) {
      unsigned char* st = stages + (k % T::kStages) * stage_bytes;
      const int e = (tile0 + k * tile_stride) * T::kEntries + g;
      const bool valid = e < count;
      const int64_t es = valid ? e : 0;
      if (compact) {
#pragma unroll
        for (int u = 0; u < T::kCopies; ++u)
          cp_async<T::kCopy>(st + (u * 32 + lane) * T::kCopy, cache.codes + es * (DI / 2) + c0 / 2 + u * T::kCopy,
                             valid);
        // The aligned word holding the thread's scale byte(s) (inside the entry for DI ≥ 128;
        // smaller rows share a word with a neighbour, inside the 256-byte aligned cache buffer).
        cp_async<4>(st + 32 * T::kCodeBytes + lane * 4, cache.scales + ((es * (DI / 32) + blk0) & ~int64_t{3}), valid);
      } else {
#pragma unroll
        for (int u = 0; u < T::kF32Copies; ++u)
          cp_async<16>(st + (u * 32 + lane) * 16, cache.f32 + es * DI + c0 + 4 * u, valid);
      }
    }
    cp_async_commit();
  };

#pragma unroll 1
  for (int hb = 0; hb < HI; hb += T::kGroupHeads) {
    __syncthreads();  // the previous pass's readers of ws are done
    for (int h = threadIdx.x; h < T::kGroupHeads; h += blockDim.x)
      ws[h] = hb + h < HI ? w[r * HI + hb + h] * w_scale : 0.0f;
    // A fragments: reg 0/1 = heads g / g+8 at logical k 2t, 2t+1; reg 2/3 the same at 2t+8, 2t+9.
    uint32_t qa[T::kHeadTiles][T::kKSteps][4];
#pragma unroll
    for (int mt = 0; mt < T::kHeadTiles; ++mt)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int h = hb + 16 * mt + 8 * half + g;
        const float4* qh = reinterpret_cast<const float4*>(qI + (r * HI + (h < HI ? h : 0)) * DI + c0);
#pragma unroll
        for (int kk = 0; kk < T::kKSteps; ++kk) {
          const float4 v = h < HI ? __ldg(qh + kk) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
          qa[mt][kk][half] = pack_bf16x2(v.x, v.y);
          qa[mt][kk][2 + half] = pack_bf16x2(v.z, v.w);
        }
      }
    __syncthreads();

    for (int k = 0; k < T::kStages - 1; ++k) issue(k);
#pragma unroll 1
    for (int k = 0; k < my_tiles; ++k) {
      cp_async_wait<T::kStages - 2>();  // tile k has landed (the thread's own copies)
      issue(k + T::kStages - 1);        // into the stage read at k − 1
      const unsigned char* st = stages + (k % T::kStages) * stage_bytes;
      float acc[T::kHeadTiles][4] = {};
      if (compact) {
        uint32_t words[T::kWords];
#pragma unroll
        for (int u = 0; u < T::kCopies; ++u) {
          const unsigned char* p = st + (u * 32 + lane) * T::kCopy;
          if constexpr (T::kCopy == 16) {
            const uint4 v = *reinterpret_cast<const uint4*>(p);
            words[4 * u] = v.x, words[4 * u + 1] = v.y, words[4 * u + 2] = v.z, words[4 * u + 3] = v.w;
          } else if constexpr (T::kCopy == 8) {
            const uint2 v = *reinterpret_cast<const uint2*>(p);
            words[2 * u] = v.x, words[2 * u + 1] = v.y;
          } else {
            words[u] = *reinterpret_cast<const uint32_t*>(p);
          }
        }
        const int e = (tile0 + k * tile_stride) * T::kEntries + g;
        const uint32_t scale_word = *reinterpret_cast<const uint32_t*>(st + 32 * T::kCodeBytes + lane * 4);
        const int scale_shift = 8 * static_cast<int>((static_cast<int64_t>(e) * (DI / 32) + blk0) & 3);
#pragma unroll
        for (int j = 0; j < T::kWords; ++j) {  // word j: elements c0 + 8j .. + 7 = MMA k steps 2j, 2j + 1
          const uint32_t scale = e8m0_to_bf16x2((scale_word >> (scale_shift + 8 * (j / 4))) & 0xFFu);
          uint32_t b[4];
          e2m1x8_to_bf16(words[j], b);
#pragma unroll
          for (int p = 0; p < 4; ++p) b[p] = mul_bf16x2(b[p], scale);  // exact: a power of two
#pragma unroll
          for (int mt = 0; mt < T::kHeadTiles; ++mt) {
            mma_bf16(acc[mt], qa[mt][2 * j], b[0], b[1]);
            mma_bf16(acc[mt], qa[mt][2 * j + 1], b[2], b[3]);
          }
        }
      } else {
#pragma unroll
        for (int kk = 0; kk < T::kKSteps; ++kk) {
          const float4 v = *reinterpret_cast<const float4*>(st + (kk * 32 + lane) * 16);
          const uint32_t b0 = pack_bf16x2(v.x, v.y), b1 = pack_bf16x2(v.z, v.w);  // exact: FP4 values
#pragma unroll
          for (int mt = 0; mt < T::kHeadTiles; ++mt) mma_bf16(acc[mt], qa[mt][kk], b0, b1);
        }
      }
      // acc[mt] = heads 16mt + g (regs 0, 1) and + 8 (regs 2, 3) at entries 2t, 2t + 1.
      float part[2] = {0.0f, 0.0f};
#pragma unroll
      for (int mt = 0; mt < T::kHeadTiles; ++mt) {
        const float w0 = ws[16 * mt + g], w1 = ws[16 * mt + 8 + g];
#pragma unroll
        for (int c = 0; c < 2; ++c) part[c] += w0 * fmaxf(acc[mt][c], 0.0f) + w1 * fmaxf(acc[mt][2 + c], 0.0f);
      }
#pragma unroll
      for (int o = 4; o < 32; o <<= 1)  // over g; the same sums in every lane of a t
#pragma unroll
        for (int c = 0; c < 2; ++c) part[c] += __shfl_xor_sync(0xffffffffu, part[c], o);
      if (g < 2) {  // lanes 0..7 store entry 2t + g
        const int e = (tile0 + k * tile_stride) * T::kEntries + 2 * t + g;
        const float v = g ? part[1] : part[0];
        if (e < count) score_row[e] = hb == 0 ? v : score_row[e] + v;
      }
    }
    cp_async_wait<0>();
  }
}

template <int DI>
void launch_scores(const float* qI, const float* w, float w_scale, int64_t rows, int HI, const int32_t* slot,
                   const int32_t* pos, const LayerCache* caches, bool compact, float* score, int64_t ld,
                   int64_t max_count, cudaStream_t s) {
  using T = ScoreTraits<DI>;
  const int smem = T::kWarps * T::kStages * (compact ? T::kStageCompact : T::kStageF32);
  static int raised = 0;
  static int per_sm[2] = {0, 0};  // resident blocks per SM, by form
  if (smem > 48 * 1024 && smem > raised) {
    DSV4_CUDA_CHECK(cudaFuncSetAttribute(indexer_scores_kernel<DI>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    raised = smem;
  }
  if (per_sm[compact] == 0)
    DSV4_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm[compact], indexer_scores_kernel<DI>,
                                                                  T::kThreads, smem));
  int device = 0, sms = 0;
  DSV4_CUDA_CHECK(cudaGetDevice(&device));
  DSV4_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  // Blocks per row: enough to fill the GPU once (warps stride over the tiles), none without a tile.
  const int64_t tiles = (max_count + T::kEntries - 1) / T::kEntries;
  const int64_t fill = std::max<int64_t>(1, static_cast<int64_t>(sms) * std::max(1, per_sm[compact]) / rows);
  const int64_t parts = std::min((tiles + T::kWarps - 1) / T::kWarps, fill);
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(parts));
  launch("indexer_scores_kernel", indexer_scores_kernel<DI>, grid, T::kThreads, smem, s, qI, w, w_scale, HI, slot, pos, caches, compact, score, ld);
}

// ---- top-k -----------------------------------------------------------------------------------------

// Config: one cluster of `cluster` blocks per row (chosen by topk_cluster), block b of it owns
// the row slice [b·L, (b+1)·L) and its warps consecutive sub-slices, so block, warp and lane
// order is index order.
struct TopkConfig {
  static constexpr int kThreads = 1024, kWarps = kThreads / 32;
  static constexpr int kMaxCluster = 8;              // the portable cluster size
  static constexpr int kMaxClusterWide = 16;         // non-portable, where the GPU co-schedules it (H100/H200)
  static constexpr int kDigitBits = 8, kBuckets = 1 << kDigitBits, kRounds = 32 / kDigitBits;
  static constexpr int kMaxCachedKeys = 48 * 1024;   // a slice's keys in shared memory: 192 KiB
  static constexpr int kMinSliceKeys = 4096;         // shorter slices do not pay for a cluster's barriers
  static_assert(kWarps <= 32 && kMaxClusterWide <= 32, "one warp scans the warps and the blocks");
  static_assert(kBuckets % 32 == 0 && kBuckets <= kThreads, "one thread per bucket, whole lanes per bucket run");
};

// Order-preserving key of a float (larger float -> larger key; -0 as +0).
__device__ __forceinline__ uint32_t order_key(float v) {
  uint32_t u = __float_as_uint(v == 0.0f ? 0.0f : v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__global__ void __launch_bounds__(TopkConfig::kThreads)
    topk_kernel(const float* score, int64_t ld, const int32_t* pos, int ratio, int K, int32_t* idx, int cached_keys) {
  dev::pdl_begin();
  using C = TopkConfig;
  extern __shared__ uint32_t keys[];  // [cached_keys]: the slice's keys when it fits
  __shared__ uint32_t hist[2][C::kBuckets];  // double-buffered: others may still read the last digit's
  __shared__ uint32_t total[C::kBuckets];
  __shared__ int warp_gt[C::kWarps], warp_eq[C::kWarps], warp_tie0[C::kWarps], warp_out0[C::kWarps];
  __shared__ int block_counts[2];  // keys of the slice above / at the threshold (read by the cluster)
  __shared__ int sh_digit, sh_above, sh_in_bucket;
  const cg::cluster_group cluster = cg::this_cluster();
  const int nblocks = static_cast<int>(cluster.num_blocks()), rank = static_cast<int>(cluster.block_rank());
  const int64_t r = blockIdx.x / nblocks;
  const int count = (pos[r] + 1) / ratio;
  int32_t* out = idx + r * K;
  if (count <= K) {  // the whole cluster leaves: no shared memory was shared
    if (rank == 0)
      for (int i = threadIdx.x; i < K; i += blockDim.x) out[i] = i < count ? i : -1;
    return;
  }
  const float* s = score + r * ld;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const uint32_t lanes_below = (1u << lane) - 1u;
  const int L = ((count + nblocks - 1) / nblocks + 31) / 32 * 32;
  const int lo = min(count, rank * L), hi = min(count, lo + L);
  const int Lw = ((L + C::kWarps - 1) / C::kWarps + 31) / 32 * 32;
  const int wlo = min(hi, lo + warp * Lw), whi = min(hi, wlo + Lw);
  const bool cached = L <= cached_keys;
  auto key_at = [&](int i) { return cached ? keys[i - lo] : order_key(s[i]); };
  if (cached) {
#pragma unroll 8
    for (int i = lo + threadIdx.x; i < hi; i += blockDim.x) keys[i - lo] = order_key(s[i]);
  }

  // Radix select: after each digit, prefix/mask hold the threshold's top bits and `remaining` the
  // keys still to take among those sharing them.
  uint32_t prefix = 0, mask = 0;
  int remaining = K;
  for (int round = 0; round < C::kRounds; ++round) {
    const int shift = 32 - C::kDigitBits * (round + 1);
    uint32_t* h = hist[round & 1];
    for (int b = threadIdx.x; b < C::kBuckets; b += blockDim.x) h[b] = 0;
    __syncthreads();
    for (int base = lo; base < hi; base += blockDim.x) {  // warp-uniform trip count
      const int i = base + threadIdx.x;
      const uint32_t key = i < hi ? key_at(i) : 0u;
      const bool cand = i < hi && (key & mask) == prefix;
      if (__any_sync(0xffffffffu, cand)) {  // equal digits of a warp add once (rows of equal scores)
        const uint32_t digit = cand ? (key >> shift) & (C::kBuckets - 1) : C::kBuckets;
        const uint32_t peers = __match_any_sync(0xffffffffu, digit);
        if (cand && lane == __ffs(peers) - 1) atomicAdd(&h[digit], __popc(peers));
      }
    }
    cluster.sync();  // every block's histogram is complete
    for (int b = threadIdx.x; b < C::kBuckets; b += blockDim.x) {
      uint32_t sum = 0;
      for (int q = 0; q < nblocks; ++q) sum += cluster.map_shared_rank(h, q)[b];
      total[b] = sum;
    }
    __syncthreads();
    if (warp == 0) {  // lane l scans buckets from the top: kBuckets − 1 − (l·run .. l·run + run − 1)
      constexpr int kRun = C::kBuckets / 32;
      int run_sum = 0;
#pragma unroll
      for (int j = 0; j < kRun; ++j) run_sum += static_cast<int>(total[C::kBuckets - 1 - (lane * kRun + j)]);
      int incl = run_sum;
      for (int o = 1; o < 32; o <<= 1) {
        const int v = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += v;
      }
      int above = incl - run_sum;
      if (above < remaining && remaining <= incl) {
        for (int j = 0; j < kRun; ++j) {
          const int b = C::kBuckets - 1 - (lane * kRun + j), n = static_cast<int>(total[b]);
          if (above + n >= remaining) {
            sh_digit = b, sh_above = above, sh_in_bucket = n;
            break;
          }
          above += n;
        }
      }
    }
    __syncthreads();
    prefix |= static_cast<uint32_t>(sh_digit) << shift;
    mask |= static_cast<uint32_t>(C::kBuckets - 1) << shift;
    remaining -= sh_above;
    if (sh_in_bucket == remaining) break;  // the whole bucket is taken: no need to tell its keys apart
  }

  // Keys above the threshold (masked key > prefix) and at it, per warp, block and cluster.
  int gt = 0, eq = 0;
  for (int i = wlo + lane; i < whi; i += 32) {
    const uint32_t m = key_at(i) & mask;
    gt += m > prefix;
    eq += m == prefix;
  }
  gt = __reduce_add_sync(0xffffffffu, gt);
  eq = __reduce_add_sync(0xffffffffu, eq);
  if (lane == 0) warp_gt[warp] = gt, warp_eq[warp] = eq;
  __syncthreads();
  if (threadIdx.x == 0) {
    int bg = 0, be = 0;
    for (int v = 0; v < C::kWarps; ++v) bg += warp_gt[v], be += warp_eq[v];
    block_counts[0] = bg, block_counts[1] = be;
  }
  cluster.sync();
  if (warp == 0) {
    // Ties before this block (E) and outputs before it (O): blocks before it take all their keys
    // above and the first of the `remaining` ties.
    int bg = 0, be = 0;
    if (lane < nblocks) {
      const int* bc = cluster.map_shared_rank(block_counts, lane);
      bg = bc[0], be = bc[1];
    }
    int e_incl = be;
    for (int o = 1; o < 32; o <<= 1) {
      const int v = __shfl_up_sync(0xffffffffu, e_incl, o);
      if (lane >= o) e_incl += v;
    }
    const int bsel = bg + max(0, min(be, remaining - (e_incl - be)));
    int o_incl = bsel;
    for (int o = 1; o < 32; o <<= 1) {
      const int v = __shfl_up_sync(0xffffffffu, o_incl, o);
      if (lane >= o) o_incl += v;
    }
    const int block_tie0 = __shfl_sync(0xffffffffu, e_incl - be, rank);
    const int block_out0 = __shfl_sync(0xffffffffu, o_incl - bsel, rank);
    // The same over the block's warps.
    const int wg = lane < C::kWarps ? warp_gt[lane] : 0, we = lane < C::kWarps ? warp_eq[lane] : 0;
    int we_incl = we;
    for (int o = 1; o < 32; o <<= 1) {
      const int v = __shfl_up_sync(0xffffffffu, we_incl, o);
      if (lane >= o) we_incl += v;
    }
    const int tie0 = block_tie0 + we_incl - we;
    const int wsel = wg + max(0, min(we, remaining - tie0));
    int ws_incl = wsel;
    for (int o = 1; o < 32; o <<= 1) {
      const int v = __shfl_up_sync(0xffffffffu, ws_incl, o);
      if (lane >= o) ws_incl += v;
    }
    if (lane < C::kWarps) warp_tie0[lane] = tie0, warp_out0[lane] = block_out0 + ws_incl - wsel;
  }
  cluster.sync();  // no block leaves while another reads its shared memory; warp bases are set

  // Each warp walks its sub-slice in index order: ties ranked by ballots, outputs compacted.
  int tie = warp_tie0[warp], o = warp_out0[warp];
  for (int base = wlo; base < whi; base += 32) {
    const int i = base + lane;
    const uint32_t m = i < whi ? key_at(i) & mask : 0u;
    const bool above = i < whi && m > prefix, at = i < whi && m == prefix;
    const uint32_t at_mask = __ballot_sync(0xffffffffu, at);
    const bool take = above || (at && tie + __popc(at_mask & lanes_below) < remaining);
    const uint32_t take_mask = __ballot_sync(0xffffffffu, take);
    if (take) out[o + __popc(take_mask & lanes_below)] = i;
    tie += __popc(at_mask);
    o += __popc(take_mask);
  }
}

// Blocks per row: enough that each slice fits in shared memory, more while the GPU has idle SMs
// and slices stay long (one decode row at 1M tokens: 16 blocks of 16384 keys where the GPU
// co-schedules a cluster of 16); a power of two up to `max_cluster`.
int topk_cluster(int64_t rows, int64_t ld, int sms, int max_cluster) {
  using C = TopkConfig;
  int fit = 1;
  while (fit < max_cluster && (ld + fit - 1) / fit > C::kMaxCachedKeys) fit *= 2;
  int par = 1;
  while (par < max_cluster && rows * par * 2 <= sms && ld / (par * 2) >= C::kMinSliceKeys) par *= 2;
  return std::max(fit, par);
}

// 16 when the kernel may form non-portable clusters of 16 blocks and the GPU can hold one at
// the largest shared-memory size; else the portable 8. Asked once (after the shared-memory opt-in).
int topk_max_cluster() {
  using C = TopkConfig;
  static int max_cluster = 0;
  if (max_cluster) return max_cluster;
  max_cluster = C::kMaxCluster;
  if (cudaFuncSetAttribute(topk_kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) == cudaSuccess) {
    cudaLaunchAttribute attr{};
    attr.id = cudaLaunchAttributeClusterDimension;
    attr.val.clusterDim.x = C::kMaxClusterWide;
    attr.val.clusterDim.y = attr.val.clusterDim.z = 1;
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(C::kMaxClusterWide);
    cfg.blockDim = dim3(C::kThreads);
    cfg.dynamicSmemBytes = C::kMaxCachedKeys * sizeof(uint32_t);
    cfg.attrs = &attr;
    cfg.numAttrs = 1;
    int clusters = 0;
    if (cudaOccupancyMaxActiveClusters(&clusters, topk_kernel, &cfg) == cudaSuccess && clusters >= 1)
      max_cluster = C::kMaxClusterWide;
  }
  (void)cudaGetLastError();  // a refusal above is an answer, not an error to report later
  return max_cluster;
}

}  // namespace

void indexer_scores_cuda(const float* qI, const float* w, float w_scale, int64_t rows, int HI, int DI, const int32_t* slot,
                         const int32_t* pos, const LayerCache* caches, bool compact, float* score, int64_t ld,
                         int64_t max_count, cudaStream_t s) {
  if (rows == 0 || max_count == 0) return;
  if (rows > kFewRows && prefill_scores_fit(DI))
    return prefill_scores(qI, w, w_scale, rows, HI, DI, slot, pos, caches, compact, score, ld, max_count, s);
  switch (DI) {
    case 32: return launch_scores<32>(qI, w, w_scale, rows, HI, slot, pos, caches, compact, score, ld, max_count, s);
    case 64: return launch_scores<64>(qI, w, w_scale, rows, HI, slot, pos, caches, compact, score, ld, max_count, s);
    case 128: return launch_scores<128>(qI, w, w_scale, rows, HI, slot, pos, caches, compact, score, ld, max_count, s);
    case 256: return launch_scores<256>(qI, w, w_scale, rows, HI, slot, pos, caches, compact, score, ld, max_count, s);
    default: throw Error("indexer", str("unsupported index_head_dim: ", DI, " (the CUDA indexer has 32, 64, 128, 256)"));
  }
}

void topk_cuda(const float* score, int64_t ld, int64_t rows, const int32_t* pos, int ratio, int K, int32_t* idx,
               cudaStream_t s) {
  using C = TopkConfig;
  if (rows == 0 || K == 0) return;
  int device = 0, sms = 0;
  DSV4_CUDA_CHECK(cudaGetDevice(&device));
  DSV4_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  // Opt in once to the largest slice: the kernel's static shared memory comes on top of the
  // dynamic part, so a dynamic size just under 48 KiB already needs it.
  static int raised = 0;
  if (!raised) {
    raised = C::kMaxCachedKeys * static_cast<int>(sizeof(uint32_t));
    DSV4_CUDA_CHECK(cudaFuncSetAttribute(topk_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, raised));
  }
  const int cluster = topk_cluster(rows, ld, sms, topk_max_cluster());
  const int64_t slice = ((ld + cluster - 1) / cluster + 31) / 32 * 32;
  const int cached = static_cast<int>(std::min<int64_t>(slice, C::kMaxCachedKeys));
  const int smem = cached * static_cast<int>(sizeof(uint32_t));
  cudaLaunchAttribute attr[2]{};
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = static_cast<unsigned>(cluster);
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  attr[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;  // PDL, as cuda::launch (launch.h)
  attr[1].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(rows * cluster));
  cfg.blockDim = dim3(C::kThreads);
  cfg.dynamicSmemBytes = static_cast<size_t>(smem);
  cfg.stream = s;
  cfg.attrs = attr;
  cfg.numAttrs = pdl_enabled() ? 2 : 1;
  const cudaError_t e = cudaLaunchKernelEx(&cfg, topk_kernel, score, ld, pos, ratio, K, idx, cached);
  DSV4_CHECK(e == cudaSuccess, "topk", "launch of ", rows, " rows × ", cluster, " blocks (ld ", ld, ", ", smem,
             " B shared, raised ", raised, ") failed: ", cudaGetErrorString(e));
}

}  // namespace dsv4::cuda
