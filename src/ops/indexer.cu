// CUDA lightning indexer scores (contract in indexer.h / cuda_ops.h), built for decode at long
// context (one to 64 query rows, up to 262144 entries a sequence at 1M tokens); the top-k that
// follows them is in topk.cu.
//
// One row at 262144 entries is a GEMM [HI = 64, DI = 128] × [DI, 262144] (4.3 GFLOP)
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
//   - codes become bf16 in registers by pairs (codes i and i + 4 of a word: three integer
//     instructions and one bf16x2 multiply by the scale, fp4_bf16.cuh; 3.5% faster at 1M tokens
//     than byte tables through prmt), never through shared memory tiles;
//   - each warp keeps kStages tiles in flight with cp.async (private to the thread, so no
//     barriers); the grid is sized to fill the GPU once, warps stride over the tiles;
//   - the ReLU-weighted head sum is fused: per thread 8 heads, then over the 8 lanes of an entry
//     through shared memory, four tiles at a time;
//   - with `digits` (decode), each written score is also counted by the top-k's first digit
//     (topk.cu), in shared memory, and the block adds its counts to the row's once at its end.
// More than kGroupHeads heads take several passes, the later ones adding to the scores.
// More than kFewRows rows (prefill) go to indexer_prefill.cu, where query rows share each
// entry tile.
#include <algorithm>
#include <type_traits>

#include "cuda/check.h"
#include "cuda/launch.h"
#include "ops/cuda_device.cuh"
#include "ops/fp4_bf16.cuh"
#include "ops/indexer_cuda.cuh"

namespace dsv4::cuda {

namespace {

using namespace indexer;

// ---- scores ----------------------------------------------------------------------------------------

// Config: a warp owns whole tiles of kEntries entries; the 4 threads t of entry g (lane = 4g + t)
// hold elements [t·DI/4, (t+1)·DI/4). Float32 entries: MMA k step kk, logical k = 2t + c (c < 2)
// is element t·DI/4 + 4kk + c and k = 2t + 8 + c is element t·DI/4 + 4kk + 2 + c. Compact entries
// (the pairs of fp4_bf16.cuh): k step 2j + h, logical k = 2t + c is element t·DI/4 + 8j + 2h + 4c
// and k = 2t + 8 + c is element t·DI/4 + 8j + 2h + 1 + 4c. q takes the same map.
template <int DI, bool kCompact>
struct ScoreTraits {
  static_assert(DI == 32 || DI == 64 || DI == 128 || DI == 256, "index_head_dim 32..256, a power of two");
  // The compact form: 8 warps at up to 255 registers (q takes 128), none spilled; measured against
  // 12 warps at 168 registers (spills, indices recomputed every tile) and 2 × 4 warps, the scores
  // at 1M tokens took 27.0 µs against 29.5 and 28.6. The float32 form's larger stages keep 2 × 6.
  static constexpr int kWarps = kCompact ? 8 : 6, kThreads = 32 * kWarps;
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
  // Tiles a warp works on at once (independent MMA chains): two measured slower than one at 1M
  // tokens (27.4 against 26.8 µs, scripts/experiments/indexer_stream.cu), so one.
  static constexpr int kPair = 1;
  static constexpr int kMinBlocks = kCompact ? 1 : 2;    // blocks per SM
  // Per warp and stage: codes [kCopies][32 lanes][kCopy] then scale words [32 lanes][4 bytes];
  // or float32 [kF32Copies][32 lanes][16 bytes].
  static constexpr int kStageCompact = 32 * (kCodeBytes + 4), kStageF32 = 32 * kChunk * 4;
  static_assert(kCopies * kCopy == kCodeBytes && kWords * 8 == kChunk, "whole words of codes per thread");
  static_assert(kF32Copies * 4 == kChunk, "whole 16-byte units of float32 per thread");
  static_assert(kHeadTiles * kKSteps * 4 <= 128, "q fragments fit in 128 registers");
};

template <int DI, bool kCompact>
__global__ void __launch_bounds__(ScoreTraits<DI, kCompact>::kThreads, ScoreTraits<DI, kCompact>::kMinBlocks)
    indexer_scores_kernel(const float* qI, const float* w, float w_scale, int HI, const int32_t* slot,
                          const int32_t* pos, const LayerCache* caches, float* score, int64_t ld,
                          uint32_t* digits) {
  using T = ScoreTraits<DI, kCompact>;
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ float ws[T::kGroupHeads];
  // q as the warps' A fragments while a pass loads its registers, then the lanes' head sums of a
  // group of tiles (red: tile u at u·kGroupStride, lane L's two entries at 2L; the stride's 8
  // extra words spread a reading lane's tiles over the banks). One space for both: the float32
  // form at DI = 128 fills the shared memory up to ~3 KiB.
  constexpr int kGroup = 4, kGroupStride = 72;
  __shared__ __align__(16) union {
    uint32_t qfrag[T::kHeadTiles][T::kKSteps][32][4];
    float red[T::kWarps][kGroup * kGroupStride];
  } q_or_sums;
  auto& qfrag = q_or_sums.qfrag;
  auto& red = q_or_sums.red;
  __shared__ uint32_t digit_count[kTopkDigits];  // with `digits`: the block's scores by first top-k digit
  const int64_t r = blockIdx.x;
  const int count = (pos[r] + 1) / 4;
  const int tiles = (count + T::kEntries - 1) / T::kEntries;
  if (static_cast<int>(blockIdx.y) * T::kWarps >= tiles) return;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int tile0 = blockIdx.y * T::kWarps + warp, tile_stride = gridDim.y * T::kWarps;
  const int my_tiles = tile0 < tiles ? (tiles - tile0 + tile_stride - 1) / tile_stride : 0;
  const CacheRows cache = caches[slot[r]].idx_entries;
  // The row's position, tile count and entries' pointers come from the batch descriptor, which no
  // earlier kernel writes (launch.h): read before the wait, as are the blocks past the row's tiles.
  dev::pdl_begin();
  constexpr int stage_bytes = kCompact ? T::kStageCompact : T::kStageF32;
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
      if constexpr (kCompact) {
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

  if (digits) clear_counts(digit_count);
#pragma unroll 1
  for (int hb = 0; hb < HI; hb += T::kGroupHeads) {
    const bool last = hb + T::kGroupHeads >= HI;
    __syncthreads();  // the previous pass's readers of ws are done
    for (int h = threadIdx.x; h < T::kGroupHeads; h += blockDim.x)
      ws[h] = hb + h < HI ? w[r * HI + hb + h] * w_scale : 0.0f;
    // A fragments: reg 0/1 = heads g / g+8 at logical k 2t, 2t+1; reg 2/3 the same at 2t+8, 2t+9.
    // The block converts q once into shared memory in fragment order (coalesced float4 reads of
    // each head's row), and each warp loads its registers from there: q read and rounded per block,
    // not per warp (it was as many L2 bytes as the entries, and a third of the kernel's time).
    // A batch of a thread's loads is issued before the first is used: two L2 round trips, where a
    // loop of dependent iterations waited one per float4 (~11 of them, a fixed ~5 µs a launch).
    constexpr int kRowF4 = DI / 4;  // float4s of a head's row: [4 quarters t][kKSteps]
    constexpr int kQTotal = T::kGroupHeads * kRowF4, kQBatch = 6;
    for (int i0 = threadIdx.x; i0 < kQTotal; i0 += kQBatch * T::kThreads) {
      float4 qv[kQBatch];
#pragma unroll
      for (int u = 0; u < kQBatch; ++u) {
        const int i = i0 + u * T::kThreads, hl = i / kRowF4, f = i % kRowF4, h = hb + hl;
        qv[u] = i < kQTotal && h < HI ? __ldg(reinterpret_cast<const float4*>(qI + (r * HI + h) * DI) + f)
                                      : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      }
#pragma unroll
      for (int u = 0; u < kQBatch; ++u) {
        const int i = i0 + u * T::kThreads;
        if (i >= kQTotal) break;
        const int hl = i / kRowF4, f = i % kRowF4, t4 = f / T::kKSteps, kk = f % T::kKSteps;
        const int mt = hl / 16, half = (hl / 8) % 2, gg = hl % 8;
        if constexpr (kCompact) {
          // Elements 8j + e of the thread's quarter: e = 2h + 4c at logical k 2t + c of step 2j + h,
          // e = 2h + 1 + 4c at 2t + 8 + c (the order of e2m1_pair<0..3>). This float4 holds e = 0..3
          // (c = 0: low halves) or 4..7 (c = 1: high halves) of word j = kk / 2.
          const int j = kk / 2, c = kk % 2;
          bf16* s0 = reinterpret_cast<bf16*>(qfrag[mt][2 * j][4 * gg + t4]);
          bf16* s1 = reinterpret_cast<bf16*>(qfrag[mt][2 * j + 1][4 * gg + t4]);
          s0[2 * half + c] = __float2bfloat16_rn(qv[u].x);
          s0[2 * (2 + half) + c] = __float2bfloat16_rn(qv[u].y);
          s1[2 * half + c] = __float2bfloat16_rn(qv[u].z);
          s1[2 * (2 + half) + c] = __float2bfloat16_rn(qv[u].w);
        } else {
          uint32_t* frag = qfrag[mt][kk][4 * gg + t4];
          frag[half] = pack_bf16x2(qv[u].x, qv[u].y);
          frag[2 + half] = pack_bf16x2(qv[u].z, qv[u].w);
        }
      }
    }
    __syncthreads();
    uint32_t qa[T::kHeadTiles][T::kKSteps][4];
#pragma unroll
    for (int mt = 0; mt < T::kHeadTiles; ++mt)
#pragma unroll
      for (int kk = 0; kk < T::kKSteps; ++kk) {
        const uint4 v = *reinterpret_cast<const uint4*>(qfrag[mt][kk][lane]);
        qa[mt][kk][0] = v.x, qa[mt][kk][1] = v.y, qa[mt][kk][2] = v.z, qa[mt][kk][3] = v.w;
      }

    // kPair tiles an iteration (independent MMA chains: a warp alone keeps the tensor cores and
    // the decode busier), the stages of the previous iteration's tiles refilled first.
    constexpr int kPair = T::kPair, kAhead = T::kStages - kPair;  // tiles issued ahead of the current ones
    for (int k = 0; k < kAhead; ++k) issue(k);
    float wh[T::kHeadTiles][2];  // the weights of the thread's heads 16mt + g, + 8
#pragma unroll
    for (int mt = 0; mt < T::kHeadTiles; ++mt) wh[mt][0] = ws[16 * mt + g], wh[mt][1] = ws[16 * mt + 8 + g];
    __syncthreads();  // every warp holds its fragments: their space takes the head sums now
#pragma unroll 1
    for (int k = 0; k < my_tiles; k += kPair) {
#pragma unroll
      for (int p = 0; p < kPair; ++p) issue(k + kAhead + p);  // into the stages read at k − kPair ..
      cp_async_wait<kAhead>();  // tiles k .. k + kPair − 1 have landed (the thread's own copies)
      float acc[kPair][T::kHeadTiles][4] = {};
      if constexpr (kCompact) {
        uint32_t words[kPair][T::kWords], scale_word[kPair];
        int scale_shift[kPair];
#pragma unroll
        for (int p = 0; p < kPair; ++p) {
          const unsigned char* st = stages + ((k + p) % T::kStages) * stage_bytes;
#pragma unroll
          for (int u = 0; u < T::kCopies; ++u) {
            const unsigned char* q = st + (u * 32 + lane) * T::kCopy;
            if constexpr (T::kCopy == 16) {
              const uint4 v = *reinterpret_cast<const uint4*>(q);
              words[p][4 * u] = v.x, words[p][4 * u + 1] = v.y, words[p][4 * u + 2] = v.z, words[p][4 * u + 3] = v.w;
            } else if constexpr (T::kCopy == 8) {
              const uint2 v = *reinterpret_cast<const uint2*>(q);
              words[p][2 * u] = v.x, words[p][2 * u + 1] = v.y;
            } else {
              words[p][u] = *reinterpret_cast<const uint32_t*>(q);
            }
          }
          const int e = (tile0 + (k + p) * tile_stride) * T::kEntries + g;
          scale_word[p] = *reinterpret_cast<const uint32_t*>(st + 32 * T::kCodeBytes + lane * 4);
          scale_shift[p] = 8 * static_cast<int>((static_cast<int64_t>(e) * (DI / 32) + blk0) & 3);
        }
        // Pair decoding: one bf16x2 multiply by 2^(b − 1) a pair, a second one where a scale byte of
        // the warp's exceeds 128 (see e8m0_factor1).
        auto pair_products = [&](auto wide) {
#pragma unroll
          for (int j = 0; j < T::kWords; ++j) {
            uint32_t b[kPair][4];
#pragma unroll
            for (int p = 0; p < kPair; ++p) {
              const uint32_t sb = (scale_word[p] >> (scale_shift[p] + 8 * (j / 4))) & 0xFFu;
              const uint32_t f1 = fp4::e8m0_factor1(sb);
              b[p][0] = mul_bf16x2(fp4::e2m1_pair<0>(words[p][j]), f1);
              b[p][1] = mul_bf16x2(fp4::e2m1_pair<1>(words[p][j]), f1);
              b[p][2] = mul_bf16x2(fp4::e2m1_pair<2>(words[p][j]), f1);
              b[p][3] = mul_bf16x2(fp4::e2m1_pair<3>(words[p][j]), f1);
              if constexpr (decltype(wide)::value) {
                const uint32_t f2 = fp4::e8m0_factor2(sb);
#pragma unroll
                for (int i = 0; i < 4; ++i) b[p][i] = mul_bf16x2(b[p][i], f2);
              }
            }
#pragma unroll
            for (int mt = 0; mt < T::kHeadTiles; ++mt)
#pragma unroll
              for (int p = 0; p < kPair; ++p) {
                mma_bf16(acc[p][mt], qa[mt][2 * j], b[p][0], b[p][1]);
                mma_bf16(acc[p][mt], qa[mt][2 * j + 1], b[p][2], b[p][3]);
              }
          }
        };
        {
          bool wide = false;
#pragma unroll
          for (int p = 0; p < kPair; ++p)
#pragma unroll
            for (int q = 0; q < (T::kWords + 3) / 4; ++q)
              wide |= ((scale_word[p] >> (scale_shift[p] + 8 * q)) & 0xFFu) > 128u;
          if (__any_sync(0xffffffffu, wide)) pair_products(std::true_type{});
          else pair_products(std::false_type{});
        }
      } else {
#pragma unroll
        for (int p = 0; p < kPair; ++p) {
          const unsigned char* st = stages + ((k + p) % T::kStages) * stage_bytes;
#pragma unroll
          for (int kk = 0; kk < T::kKSteps; ++kk) {
            const float4 v = *reinterpret_cast<const float4*>(st + (kk * 32 + lane) * 16);
            const uint32_t b0 = pack_bf16x2(v.x, v.y), b1 = pack_bf16x2(v.z, v.w);  // exact: FP4 values
#pragma unroll
            for (int mt = 0; mt < T::kHeadTiles; ++mt) mma_bf16(acc[p][mt], qa[mt][kk], b0, b1);
          }
        }
      }
      // acc[p][mt] = heads 16mt + g (regs 0, 1) and + 8 (regs 2, 3) at entries 2t, 2t + 1 of tile k + p.
      // Sum over g, kGroup tiles at a time: the lanes' parts go to the warp's shared buffer, and
      // after the group's last tile lane 8u + j adds up entry j of tile u over the 8 lanes g
      // (8 independent loads, then a chain of adds). Per tile that is two stores, where a
      // butterfly cost three dependent shuffles and every tile's own store and index arithmetic.
#pragma unroll
      for (int p = 0; p < kPair; ++p) {
        float part[2] = {0.0f, 0.0f};
#pragma unroll
        for (int mt = 0; mt < T::kHeadTiles; ++mt) {
          const float w0 = wh[mt][0], w1 = wh[mt][1];
#pragma unroll
          for (int c = 0; c < 2; ++c)
            part[c] += w0 * fmaxf(acc[p][mt][c], 0.0f) + w1 * fmaxf(acc[p][mt][2 + c], 0.0f);
        }
        *reinterpret_cast<float2*>(&red[warp][((k + p) % kGroup) * kGroupStride + 2 * lane]) =
            make_float2(part[0], part[1]);
      }
      const int u = (k + kPair - 1) % kGroup;  // the group slot of this iteration's last tile
      if (u == kGroup - 1 || k + kPair >= my_tiles) {
        __syncwarp();
        const int mu = lane / 8, j = lane % 8, kt = k + kPair - 1 - u + mu;  // this lane's tile and entry
        const float* pr = &red[warp][mu * kGroupStride + j];
        float p8[8];
#pragma unroll
        for (int gg = 0; gg < 8; ++gg) p8[gg] = pr[8 * gg];  // lane (gg, j / 2), entry j % 2
        float v = p8[0];
#pragma unroll
        for (int gg = 1; gg < 8; ++gg) v += p8[gg];
        const int e = (tile0 + kt * tile_stride) * T::kEntries + j;
        const bool valid = mu <= u && kt < my_tiles && e < count;
        put_score(score_row, e, v, valid, hb == 0, digits && last, digit_count);
        __syncwarp();
      }
    }
    cp_async_wait<0>();
  }
  if (digits) flush_counts(digit_count, digits + r * kTopkDigits);
}

template <int DI, bool kCompact>
bool launch_scores(const float* qI, const float* w, float w_scale, int64_t rows, int HI, const int32_t* slot,
                   const int32_t* pos, const LayerCache* caches, float* score, int64_t ld, int64_t max_count,
                   cudaStream_t s, uint32_t* digits) {
  using T = ScoreTraits<DI, kCompact>;
  const auto kernel = indexer_scores_kernel<DI, kCompact>;
  const int smem = T::kWarps * T::kStages * (kCompact ? T::kStageCompact : T::kStageF32);
  static int per_sm = 0;  // resident blocks per SM
  const dim3 grid = few_row_grid(kernel, T::kThreads, smem, rows, (max_count + T::kEntries - 1) / T::kEntries, T::kWarps, per_sm);
  launch("indexer_scores_kernel", kernel, grid, T::kThreads, smem, s, qI, w, w_scale, HI, slot, pos, caches, score, ld,
         digits);
  return digits != nullptr;
}
template <int DI>
bool launch_scores(const float* qI, const float* w, float w_scale, int64_t rows, int HI, const int32_t* slot,
                   const int32_t* pos, const LayerCache* caches, bool compact, float* score, int64_t ld,
                   int64_t max_count, cudaStream_t s, uint32_t* digits) {
  return compact ? launch_scores<DI, true>(qI, w, w_scale, rows, HI, slot, pos, caches, score, ld, max_count, s, digits)
                 : launch_scores<DI, false>(qI, w, w_scale, rows, HI, slot, pos, caches, score, ld, max_count, s, digits);
}

}  // namespace

bool indexer_scores_cuda(const float* qI, const float* w, float w_scale, int64_t rows, int HI, int DI, const int32_t* slot,
                         const int32_t* pos, const LayerCache* caches, bool compact, float* score, int64_t ld,
                         int64_t max_count, cudaStream_t s, uint32_t* digits) {
  if (rows == 0 || max_count == 0) return false;
  if (rows > kFewRows && prefill_scores_fit(DI)) {
    prefill_scores(qI, w, w_scale, rows, HI, DI, slot, pos, caches, compact, score, ld, max_count, s);
    return false;
  }
  if (wgmma_scores_fit(DI, compact))
    return wgmma_scores(qI, w, w_scale, rows, HI, slot, pos, caches, score, ld, max_count, s, digits);
  switch (DI) {
    case 32: return launch_scores<32>(qI, w, w_scale, rows, HI, slot, pos, caches, compact, score, ld, max_count, s, digits);
    case 64: return launch_scores<64>(qI, w, w_scale, rows, HI, slot, pos, caches, compact, score, ld, max_count, s, digits);
    case 128: return launch_scores<128>(qI, w, w_scale, rows, HI, slot, pos, caches, compact, score, ld, max_count, s, digits);
    case 256: return launch_scores<256>(qI, w, w_scale, rows, HI, slot, pos, caches, compact, score, ld, max_count, s, digits);
    default: throw Error("indexer", str("unsupported index_head_dim: ", DI, " (the CUDA indexer has 32, 64, 128, 256)"));
  }
}

}  // namespace dsv4::cuda
