// CUDA lightning indexer scores for many query rows (prefill; contract in cuda_ops.h, the
// few-row kernel and the top-k in indexer.cu).
//
// A prefill chunk's rows are consecutive positions of one sequence, so they attend nearly the
// same entries (row r has (pos[r]+1)/4). The few-row kernel streams every entry through each
// row on its own and decodes its e2m1 codes again for each; here a block of kRows rows shares
// each tile of entries: [rows · HI, DI] × [DI, entries] as one product per block, HI·DI·2 =
// 16384 tensor-core flops per score for HI = 64, DI = 128.
//   - a block's threads copy a tile of kTile entries' codes and scales with cp.async (kStages
//     tiles in flight), decode them once into a bf16 tile in shared memory (exact: FP4 values
//     times powers of two; the float32 cache form is converted, also exactly), XOR-swizzled
//     so that ldmatrix and the decoding stores meet no bank conflicts;
//   - each warp owns one query row: its q (64 heads × DI, bf16, exact) stays in 128 registers as
//     the MMA's B fragments (N = 8 heads), the entries are the A fragments (M = 16 entries,
//     ldmatrix.x4), mma.sync m16n8k16 bf16 -> float32; only the float32 summation order differs
//     from the CPU;
//   - the ReLU-weighted head sum is fused: a thread holds 16 heads of two entries (their
//     weights in shared memory: q fills the registers), then a butterfly over the 4 threads of
//     an entry;
//   - two bf16 tiles: the block decodes tile k+1 while its warps multiply tile k, one barrier
//     a tile;
//   - rows of different sequences in one block (at a sequence boundary) take one pass each;
//     more than kHeads heads take several passes, the later ones adding to the scores;
//   - the grid: row blocks × parts, a part striding over the entry tiles; the latest rows (the
//     most entries) are scheduled first.
// Only DI = 128 (V4's index_head_dim) is built; other DI stay on the few-row kernel.
//
// Bound: a score is 4 MMAs (16384 flops), so what mma.sync reaches on an H200 (~600 of the
// 989 dense bf16 TFLOP/s) allows ~3.7e10 scores/s. Around its 64 MMAs of 16 entries a warp
// issues 8 ldmatrix, ~80 epilogue instructions and ~55 of its block's decoding, fewer than the
// tensor pipe's cycles for them; the entries come from L2 (68 bytes per 4 scores), the scores
// go out at 4 bytes each.
#include <algorithm>

#include "cuda/check.h"
#include "cuda/launch.h"
#include "ops/indexer_cuda.cuh"

namespace dsv4::cuda::indexer {

namespace {

// Config: the cache form (compact e2m1 + E8M0 rows, or float32 rows) sets the raw stage.
template <bool kCompact>
struct PrefillTraits {
  static constexpr int kDI = 128;
  static constexpr int kWarps = 4, kThreads = 32 * kWarps;
  static constexpr int kRows = kWarps;                 // a warp per query row
  static constexpr int kHeads = 64;                    // heads of one pass: q in 128 registers
  static constexpr int kHeadTiles = kHeads / 8;        // the MMA's N = 8 heads
  static constexpr int kKSteps = kDI / 16;
  static constexpr int kTile = 64;                     // entries decoded per step, shared by the rows
  static constexpr int kEntryTiles = kTile / 16;       // the MMA's M = 16 entries
  static constexpr int kChunks = kDI / 8;              // 16-byte bf16 chunks of an entry
  static constexpr int kRowBytes = 2 * kDI;
  static constexpr int kTileBytes = kTile * kRowBytes;  // one bf16 tile, 16 KiB
  static constexpr int kCodeBytes = kDI / 2, kBlocks = kDI / 32;  // e2m1 codes, E8M0 scales of an entry
  static constexpr int kUnits = kCompact ? kTile * kBlocks : kTile * kChunks;  // decoding work items of a tile
  // Raw stage: codes [kTile][kCodeBytes] then scales [kTile][kBlocks]; or float32 [kTile][kDI].
  static constexpr int kStageBytes = kCompact ? kTile * (kCodeBytes + kBlocks) : kTile * kDI * 4;
  static constexpr int kStages = kCompact ? 4 : 2;     // float32: 2 · 32 KiB, two blocks still fit an SM
  static constexpr int kSmemBytes = 2 * kTileBytes + kStages * kStageBytes;
  static constexpr int kMinBlocks = 2;                 // per SM: up to 255 registers, q takes 128
  static constexpr int kWaves = 4;                     // blocks per resident slot, for the uneven rows
  static constexpr int kMinTilesPerBlock = 16;         // a part's tiles pay for its q loads and prologue
  static_assert(kDI == 128, "the swizzle and the 16-byte decoding units assume 16 chunks of 8 elements a row");
  static_assert(kHeads % 8 == 0 && kTile % 16 == 0 && kStages >= 2, "whole MMA tiles, at least double buffering");
  static_assert(kUnits % kThreads == 0 && (kTile * kCodeBytes / 16) % kThreads == 0 && (kTile * kDI / 4) % kThreads == 0,
                "whole work items and copies per thread");
  static_assert(kSmemBytes * kMinBlocks <= 227 * 1024, "kMinBlocks blocks fit an SM's shared memory");
};

// Physical 16-byte chunk of logical chunk c (0..15) in tile row `row`: the 8 rows an ldmatrix
// reads at one c land on 8 distinct bank groups (c ^ row), and so do the 8 threads of a
// decoding store phase, 2 entries × 4 blocks of 4 chunks (the c ≥ 8 half also flips bit 1).
__device__ __forceinline__ int swizzle_chunk(int row, int c) { return c ^ (row & 7) ^ ((c >> 2) & 2); }

template <bool kCompact>
__global__ void __launch_bounds__(PrefillTraits<kCompact>::kThreads, PrefillTraits<kCompact>::kMinBlocks)
    indexer_prefill_kernel(const float* qI, const float* w, float w_scale, int64_t rows, int HI,
                           const int32_t* slot, const int32_t* pos, const LayerCache* caches, float* score,
                           int64_t ld, int parts) {
  dev::pdl_begin();
  using T = PrefillTraits<kCompact>;
  extern __shared__ __align__(128) unsigned char smem[];  // bf16 tiles [2][kTile][kRowBytes], raw [kStages][kStageBytes]
  __shared__ int row_slot[T::kRows], row_count[T::kRows];
  __shared__ float2 head_w[T::kRows][T::kHeads / 2];  // a warp's w · w_scale, heads 2j, 2j+1 (out of the registers)
  unsigned char* raw = smem + 2 * T::kTileBytes;
  const uint32_t tiles_addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const int row_blocks = static_cast<int>(gridDim.x) / parts;
  const int rb = row_blocks - 1 - static_cast<int>(blockIdx.x) / parts, part = static_cast<int>(blockIdx.x) % parts;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t r0 = static_cast<int64_t>(rb) * T::kRows, r = r0 + warp;
  if (threadIdx.x < T::kRows) {
    const int64_t ri = r0 + threadIdx.x;
    row_slot[threadIdx.x] = ri < rows ? slot[ri] : -1;
    row_count[threadIdx.x] = ri < rows ? (pos[ri] + 1) / 4 : 0;
  }
  __syncthreads();
  const int my_count = row_count[warp];
  float* score_row = score + r * ld;
  // ldmatrix rows of this lane: entries 16i + (lane & 15); chunk 2kk + (lane >> 4), swizzled with
  // (entry & 7) = (lane & 7): the lane's part of the swizzle is the same for every entry tile.
  const uint32_t lane_row = static_cast<uint32_t>((lane & 15) * T::kRowBytes);
  const int lane_swz = (lane >> 4) ^ (lane & 7);

  unsigned done = 0;  // rows handled, or past the batch
  for (int i = 0; i < T::kRows; ++i)
    if (row_slot[i] < 0) done |= 1u << i;
  while (done != (1u << T::kRows) - 1) {
    // One pass per sequence among the block's rows, in row order.
    const int s = row_slot[__ffs(~done) - 1];
    unsigned active = 0;
    int count = 0;
    for (int i = 0; i < T::kRows; ++i)
      if (!(done >> i & 1) && row_slot[i] == s) active |= 1u << i, count = max(count, row_count[i]);
    done |= active;
    const int tiles = (count + T::kTile - 1) / T::kTile;
    const int my_tiles = part < tiles ? (tiles - part + parts - 1) / parts : 0;
    if (my_tiles == 0) continue;
    const bool mine = active >> warp & 1;
    const CacheRows cache = caches[s].idx_entries;
    auto tile_entry0 = [&](int k) { return (part + k * parts) * T::kTile; };

    // Tile k's codes and scales (or float32 rows) into raw stage k mod kStages, entries past the
    // count zero-filled; k ≥ my_tiles: an empty group, to keep the group count uniform.
    auto issue = [&](int k) {
      if (k < my_tiles) {
        unsigned char* st = raw + (k % T::kStages) * T::kStageBytes;
        const int e0 = tile_entry0(k);
        if constexpr (kCompact) {
#pragma unroll 1
          for (int it = 0; it < T::kTile * T::kCodeBytes / 16 / T::kThreads; ++it) {
            const int u = it * T::kThreads + threadIdx.x, e = e0 + u / (T::kCodeBytes / 16);
            const bool valid = e < count;
            cp_async<16>(st + 16 * u, cache.codes + (valid ? e : 0) * int64_t{T::kCodeBytes} + 16 * (u % (T::kCodeBytes / 16)),
                         valid);
          }
          if (threadIdx.x < T::kTile) {  // an entry's kBlocks = 4 scale bytes: one word
            const int e = e0 + threadIdx.x;
            const bool valid = e < count;
            cp_async<4>(st + T::kTile * T::kCodeBytes + 4 * threadIdx.x,
                        cache.scales + (valid ? e : 0) * int64_t{T::kBlocks}, valid);
          }
        } else {
#pragma unroll 1
          for (int it = 0; it < T::kTile * T::kDI / 4 / T::kThreads; ++it) {
            const int u = it * T::kThreads + threadIdx.x, e = e0 + u / (T::kDI / 4);
            const bool valid = e < count;
            cp_async<16>(st + 16 * u, cache.f32 + (valid ? e : 0) * int64_t{T::kDI} + 4 * (u % (T::kDI / 4)), valid);
          }
        }
      }
      cp_async_commit();
    };

    // Raw tile k -> bf16 tile k mod 2 (rows = entries, swizzled chunks of 8 elements).
    auto decode = [&](int k) {
      const unsigned char* st = raw + (k % T::kStages) * T::kStageBytes;
      unsigned char* dst = smem + (k % 2) * T::kTileBytes;
#pragma unroll 1
      for (int it = 0; it < T::kUnits / T::kThreads; ++it) {
        const int u = it * T::kThreads + threadIdx.x;
        if constexpr (kCompact) {  // unit = (entry, block of 32): 16 code bytes, one scale, 4 chunks
          const int e = u / T::kBlocks, blk = u % T::kBlocks;
          const uint4 codes = *reinterpret_cast<const uint4*>(st + 16 * u);
          const uint32_t scale = e8m0_to_bf16x2(st[T::kTile * T::kCodeBytes + u]);  // byte e·kBlocks + blk
          const uint32_t words[4] = {codes.x, codes.y, codes.z, codes.w};
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            uint32_t p[4];
            e2m1x8_to_bf16(words[j], p);
#pragma unroll
            for (int q = 0; q < 4; ++q) p[q] = mul_bf16x2(p[q], scale);  // exact: a power of two
            *reinterpret_cast<uint4*>(dst + e * T::kRowBytes + 16 * swizzle_chunk(e, 4 * blk + j)) =
                make_uint4(p[0], p[1], p[2], p[3]);
          }
        } else {  // unit = (entry, chunk): 8 floats
          const int e = u / T::kChunks, c = u % T::kChunks;
          const float4* src = reinterpret_cast<const float4*>(st + (e * T::kDI + 8 * c) * 4);
          const float4 a = src[0], b = src[1];
          *reinterpret_cast<uint4*>(dst + e * T::kRowBytes + 16 * swizzle_chunk(e, c)) =
              make_uint4(pack_bf16x2(a.x, a.y), pack_bf16x2(a.z, a.w), pack_bf16x2(b.x, b.y), pack_bf16x2(b.z, b.w));
        }
      }
    };

#pragma unroll 1
    for (int hb = 0; hb < HI; hb += T::kHeads) {
      // B fragments (B[k][n] = q[head hb + 8nt + n][dim k]): reg 0 = head 8nt + g at dims
      // 16kk + 2t, +1; reg 1 the same at 16kk + 8 + 2t, +1. Heads past HI are zero, weight 0.
      uint32_t qb[T::kHeadTiles][T::kKSteps][2];
#pragma unroll
      for (int nt = 0; nt < T::kHeadTiles; ++nt) {
        const int h = hb + 8 * nt + g;
        const float* qh = qI + (r * HI + (h < HI ? h : 0)) * int64_t{T::kDI} + 2 * t;
#pragma unroll
        for (int kk = 0; kk < T::kKSteps; ++kk) {
          float2 lo = make_float2(0.0f, 0.0f), hi = lo;
          if (mine && h < HI) {
            lo = *reinterpret_cast<const float2*>(qh + 16 * kk);
            hi = *reinterpret_cast<const float2*>(qh + 16 * kk + 8);
          }
          qb[nt][kk][0] = pack_bf16x2(lo.x, lo.y);  // exact: FP4-simulated
          qb[nt][kk][1] = pack_bf16x2(hi.x, hi.y);
        }
      }
      __syncwarp();  // the warp's last reads of head_w (the previous pass) are done
      for (int j = lane; j < T::kHeads / 2; j += 32) {
        const int h = hb + 2 * j;
        head_w[warp][j] = make_float2(mine && h < HI ? w[r * HI + h] * w_scale : 0.0f,
                                      mine && h + 1 < HI ? w[r * HI + h + 1] * w_scale : 0.0f);
      }
      __syncwarp();

      // Tile k through this warp's row: 16 entries at a time, all heads, then the head sum.
      auto multiply = [&](int k) {
        const uint32_t tile = tiles_addr + (k % 2) * T::kTileBytes + lane_row;
        const int e0 = tile_entry0(k);
#pragma unroll 1
        for (int i = 0; i < T::kEntryTiles; ++i) {
          float acc[T::kHeadTiles][4] = {};
#pragma unroll
          for (int kk = 0; kk < T::kKSteps; ++kk) {
            // Logical chunk 2kk + (lane >> 4): its swizzle (2kk ^ (2kk >> 2 & 2)) ^ lane_swz.
            const int c = (2 * kk) ^ (((2 * kk) >> 2) & 2) ^ lane_swz;
            uint32_t a[4];  // entries 16i + g / + 8 at dims 16kk + 2t, +1 / + 8
            ldmatrix_x4(a, tile + 16 * i * T::kRowBytes + 16 * c);
#pragma unroll
            for (int nt = 0; nt < T::kHeadTiles; ++nt) mma_bf16(acc[nt], a, qb[nt][kk][0], qb[nt][kk][1]);
          }
          // acc[nt] = entries 16i + g (regs 0, 1) and + 8 (regs 2, 3) at heads 8nt + 2t, +1. Two
          // sums a column (even and odd head tiles) shorten the dependent chains.
          float sums[2][2] = {};
#pragma unroll
          for (int nt = 0; nt < T::kHeadTiles; ++nt) {
            const float2 wh = head_w[warp][4 * nt + t];  // heads 8nt + 2t, +1
#pragma unroll
            for (int half = 0; half < 2; ++half)
              sums[half][nt & 1] += wh.x * fmaxf(acc[nt][2 * half], 0.0f) + wh.y * fmaxf(acc[nt][2 * half + 1], 0.0f);
          }
          float part_sum[2] = {sums[0][0] + sums[0][1], sums[1][0] + sums[1][1]};
#pragma unroll
          for (int half = 0; half < 2; ++half) {  // over t: every lane of an entry gets its sum
            part_sum[half] += __shfl_xor_sync(0xffffffffu, part_sum[half], 1);
            part_sum[half] += __shfl_xor_sync(0xffffffffu, part_sum[half], 2);
          }
          if (t < 2) {  // lanes t = 0, 1 store entries 16i + g + 8t
            const int e = e0 + 16 * i + g + 8 * t;
            const float v = t ? part_sum[1] : part_sum[0];
            if (e < my_count) score_row[e] = hb == 0 ? v : score_row[e] + v;
          }
        }
      };

      // Pipeline, one barrier a tile. At the barrier of step k: bf16 tile k is decoded, raw tile
      // k+1 has landed, every warp is done with bf16 tile k−1 (its buffer is decoded into next)
      // and raw tile k was decoded (its stage is refilled next). The previous pass's last reads
      // of the buffers come before this pass's first barrier.
      for (int j = 0; j < T::kStages - 1; ++j) issue(j);
      cp_async_wait<T::kStages - 2>();
      __syncthreads();
      decode(0);
      issue(T::kStages - 1);
#pragma unroll 1
      for (int k = 0; k < my_tiles; ++k) {
        cp_async_wait<T::kStages - 2>();
        __syncthreads();
        if (k + 1 < my_tiles) decode(k + 1);
        issue(k + T::kStages);
        if (mine) multiply(k);
      }
      cp_async_wait<0>();
    }
  }
}

template <bool kCompact>
void launch_prefill(const float* qI, const float* w, float w_scale, int64_t rows, int HI, const int32_t* slot,
                    const int32_t* pos, const LayerCache* caches, float* score, int64_t ld, int64_t max_count,
                    cudaStream_t s) {
  using T = PrefillTraits<kCompact>;
  static int per_sm = 0;  // resident blocks per SM
  if (per_sm == 0) {
    DSV4_CUDA_CHECK(cudaFuncSetAttribute(indexer_prefill_kernel<kCompact>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         T::kSmemBytes));
    DSV4_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, indexer_prefill_kernel<kCompact>,
                                                                  T::kThreads, T::kSmemBytes));
    per_sm = std::max(1, per_sm);
  }
  int device = 0, sms = 0;
  DSV4_CUDA_CHECK(cudaGetDevice(&device));
  DSV4_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  // Parts per row block: a few waves of blocks (rows of a causal prefill have uneven counts),
  // while each part keeps enough tiles.
  const int64_t row_blocks = (rows + T::kRows - 1) / T::kRows;
  const int64_t tiles = (max_count + T::kTile - 1) / T::kTile;
  const int64_t want = (int64_t{T::kWaves} * sms * per_sm + row_blocks - 1) / row_blocks;
  const int64_t parts = std::clamp<int64_t>(want, 1, std::max<int64_t>(1, tiles / T::kMinTilesPerBlock));
  DSV4_CHECK(row_blocks * parts <= INT32_MAX, "indexer", rows, " rows × ", parts, " parts: too many blocks");
  launch("indexer_prefill_kernel", indexer_prefill_kernel<kCompact>, static_cast<unsigned>(row_blocks * parts), T::kThreads, T::kSmemBytes, s, 
      qI, w, w_scale, rows, HI, slot, pos, caches, score, ld, static_cast<int>(parts));
}

}  // namespace

bool prefill_scores_fit(int DI) { return DI == PrefillTraits<true>::kDI; }

void prefill_scores(const float* qI, const float* w, float w_scale, int64_t rows, int HI, int DI, const int32_t* slot,
                    const int32_t* pos, const LayerCache* caches, bool compact, float* score, int64_t ld,
                    int64_t max_count, cudaStream_t s) {
  DSV4_CHECK(prefill_scores_fit(DI), "indexer", "the many-row kernel has index_head_dim 128, not ", DI);
  if (compact) return launch_prefill<true>(qI, w, w_scale, rows, HI, slot, pos, caches, score, ld, max_count, s);
  return launch_prefill<false>(qI, w, w_scale, rows, HI, slot, pos, caches, score, ld, max_count, s);
}

}  // namespace dsv4::cuda::indexer
