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
//   - codes become bf16 in registers (byte tables through prmt, the sign bit moved in, one
//     bf16x2 multiply by the scale), never through shared memory tiles;
//   - each warp keeps kStages tiles in flight with cp.async (private to the thread, so no
//     barriers); the grid is sized to fill the GPU once, warps stride over the tiles;
//   - the ReLU-weighted head sum is fused: per thread 8 heads, then a butterfly over the warp;
//   - with `digits` (decode), each written score is also counted by the top-k's first digit
//     (topk.cu), in shared memory, and the block adds its counts to the row's once at its end.
// More than kGroupHeads heads take several passes, the later ones adding to the scores.
// More than kFewRows rows (prefill) go to indexer_prefill.cu, where query rows share each
// entry tile.
#include <algorithm>

#include "cuda/check.h"
#include "cuda/launch.h"
#include "ops/cuda_device.cuh"
#include "ops/indexer_cuda.cuh"

namespace dsv4::cuda {

namespace {

using namespace indexer;

// ---- shared by both kernels ------------------------------------------------------------------------

// The MMA's C fragments acc[mt] (heads 16mt + g in regs 0, 1 and 16mt + 8 + g in 2, 3, entries 2t,
// 2t + 1) folded into lane (g, t)'s part of Σ_h w_h · ReLU for its two entries; w[mt] = the weights
// of heads 16mt + g and 16mt + 8 + g.
template <int kHeadTiles>
__device__ __forceinline__ void head_sums(const float (&acc)[kHeadTiles][4], const float (&w)[kHeadTiles][2],
                                          float (&part)[2]) {
  part[0] = part[1] = 0.0f;
#pragma unroll
  for (int mt = 0; mt < kHeadTiles; ++mt)
#pragma unroll
    for (int c = 0; c < 2; ++c) part[c] += w[mt][0] * fmaxf(acc[mt][c], 0.0f) + w[mt][1] * fmaxf(acc[mt][2 + c], 0.0f);
}

// The end of a tile of 8 entries from e0: the sum over g of part (lane (g, t): entries 2t, 2t + 1),
// stored for the entries below count (added to the pass before unless `first`), and with
// digit_count each stored score counted by its first top-k digit (topk.cu).
// The butterfly's first step halves the values (lanes of odd g keep entry 2t + 1): the adds two full
// butterflies would make, with half the shuffles.
__device__ __forceinline__ void store_tile(const float (&part)[2], int g, int t, int e0, int count, bool first,
                                           float* score_row, uint32_t* digit_count) {
  float v = (g & 1) ? part[1] : part[0];
  v += __shfl_xor_sync(0xffffffffu, (g & 1) ? part[0] : part[1], 4);
  v += __shfl_xor_sync(0xffffffffu, v, 8);
  v += __shfl_xor_sync(0xffffffffu, v, 16);
  if (g < 2) {  // lanes 0..7 store entry 2t + g
    const int e = e0 + 2 * t + g;
    if (e < count) {
      const float out = first ? v : score_row[e] + v;
      score_row[e] = out;
      if (digit_count) atomicAdd(&digit_count[dev::order_key(out) >> (32 - kTopkDigitBits)], 1u);
    }
  }
}

// q of heads hb .. hb + kGroupHeads of row r as bf16 A fragments in ScoreTraits' k order, in shared
// memory (frag [kGroupHeads/16][DI/16][32 lanes][4]): reg 0/1 = heads g / g+8 at logical k 2t,
// 2t+1; reg 2/3 the same at 2t+8, 2t+9; heads past HI zero. The block converts q once (coalesced
// float4 reads of each head's row), and each warp loads its registers from there: q read and
// rounded per block, not per warp (it was as many L2 bytes as the entries, and a third of the
// kernel's time). A batch of a thread's loads is issued before the first is used: two L2 round
// trips, where a loop of dependent iterations waited one per float4 (~11, a fixed ~5 µs a launch).
template <int DI, int kGroupHeads, int kThreads>
__device__ __forceinline__ void stage_q_bf16(const float* qI, int64_t r, int HI, int hb, uint32_t (*frag)[DI / 16][32][4]) {
  constexpr int kKSteps = DI / 16;
  constexpr int kRowF4 = DI / 4;  // float4s of a head's row: [4 quarters t][kKSteps]
  constexpr int kQTotal = kGroupHeads * kRowF4, kQBatch = 6;
  for (int i0 = threadIdx.x; i0 < kQTotal; i0 += kQBatch * kThreads) {
    float4 qv[kQBatch];
#pragma unroll
    for (int u = 0; u < kQBatch; ++u) {
      const int i = i0 + u * kThreads, hl = i / kRowF4, f = i % kRowF4, h = hb + hl;
      qv[u] = i < kQTotal && h < HI ? __ldg(reinterpret_cast<const float4*>(qI + (r * HI + h) * DI) + f)
                                    : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
#pragma unroll
    for (int u = 0; u < kQBatch; ++u) {
      const int i = i0 + u * kThreads;
      if (i >= kQTotal) break;
      const int hl = i / kRowF4, f = i % kRowF4, t4 = f / kKSteps, kk = f % kKSteps;
      const int mt = hl / 16, half = (hl / 8) % 2, gg = hl % 8;
      uint32_t* fr = frag[mt][kk][4 * gg + t4];
      fr[half] = pack_bf16x2(qv[u].x, qv[u].y);
      fr[2 + half] = pack_bf16x2(qv[u].z, qv[u].w);
    }
  }
}

// ---- float32 entries: bf16 tensor cores -----------------------------------------------------------

// Config: a warp owns whole tiles of kEntries entries; the 4 threads t of entry g (lane = 4g + t)
// hold elements [t·DI/4, (t+1)·DI/4). MMA k step kk, logical k = 2t + c (c < 2) is element
// t·DI/4 + 4kk + c and k = 2t + 8 + c is element t·DI/4 + 4kk + 2 + c (the same map for q).
template <int DI>
struct ScoreTraits {
  static_assert(DI == 32 || DI == 64 || DI == 128 || DI == 256, "index_head_dim 32..256, a power of two");
  static constexpr int kWarps = 6, kThreads = 32 * kWarps;
  static constexpr int kEntries = 8;                      // the N of one MMA
  static constexpr int kKSteps = DI / 16;                 // MMAs along one dot product
  static constexpr int kHeadTiles = kKSteps <= 8 ? 4 : 2;  // q in registers: 4·kHeadTiles·kKSteps ≤ 128
  static constexpr int kGroupHeads = 16 * kHeadTiles;     // heads of one pass over the entries
  static constexpr int kChunk = DI / 4;                   // elements of an entry per thread
  static constexpr int kF32Copies = kChunk / 4;           // 16-byte units per thread
  static constexpr int kStages = DI <= 128 ? 8 : 4;       // tiles in flight per warp (DI = 256: 128 KiB)
  static constexpr int kMinBlocks = 2;                    // per SM: 12 warps, 3 on each scheduler at ≤ 168 registers (q takes 128)
  static constexpr int kStageBytes = 32 * kChunk * 4;     // per warp and stage: [kF32Copies][32 lanes][16 bytes]
  static_assert(kHeadTiles * kKSteps * 4 <= 128, "q fragments fit in 128 registers");
};

template <int DI>
__global__ void __launch_bounds__(ScoreTraits<DI>::kThreads, ScoreTraits<DI>::kMinBlocks)
    indexer_scores_kernel(const float* qI, const float* w, float w_scale, int HI, const int32_t* slot,
                          const int32_t* pos, const LayerCache* caches, float* score, int64_t ld, uint32_t* digits) {
  dev::pdl_begin();
  using T = ScoreTraits<DI>;
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ float ws[T::kGroupHeads];
  __shared__ __align__(16) uint32_t qfrag[T::kHeadTiles][T::kKSteps][32][4];  // q as the warps' A fragments
  __shared__ uint32_t digit_count[kTopkDigits];  // with `digits`: the block's scores by first top-k digit
  const int64_t r = blockIdx.x;
  const int count = (pos[r] + 1) / 4;
  const int tiles = (count + T::kEntries - 1) / T::kEntries;
  if (static_cast<int>(blockIdx.y) * T::kWarps >= tiles) return;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int tile0 = blockIdx.y * T::kWarps + warp, tile_stride = gridDim.y * T::kWarps;
  const int my_tiles = tile0 < tiles ? (tiles - tile0 + tile_stride - 1) / tile_stride : 0;
  const CacheRows cache = caches[slot[r]].idx_entries;
  unsigned char* stages = smem + warp * T::kStages * T::kStageBytes;
  const int c0 = t * T::kChunk;  // first element of the thread's quarter
  float* score_row = score + r * ld;

  // Tile k of this warp (k ≥ my_tiles: an empty group, to keep the group count uniform).
  auto issue = [&](int k) {
    if (k < my_tiles) {
      unsigned char* st = stages + (k % T::kStages) * T::kStageBytes;
      const int e = (tile0 + k * tile_stride) * T::kEntries + g;
      const bool valid = e < count;
      const int64_t es = valid ? e : 0;
#pragma unroll
      for (int u = 0; u < T::kF32Copies; ++u)
        cp_async<16>(st + (u * 32 + lane) * 16, cache.f32 + es * DI + c0 + 4 * u, valid);
    }
    cp_async_commit();
  };

  if (digits)
    for (int b = threadIdx.x; b < kTopkDigits; b += blockDim.x) digit_count[b] = 0;
#pragma unroll 1
  for (int hb = 0; hb < HI; hb += T::kGroupHeads) {
    const bool last = hb + T::kGroupHeads >= HI;
    __syncthreads();  // the previous pass's readers of ws are done
    for (int h = threadIdx.x; h < T::kGroupHeads; h += blockDim.x)
      ws[h] = hb + h < HI ? w[r * HI + hb + h] * w_scale : 0.0f;
    stage_q_bf16<DI, T::kGroupHeads, T::kThreads>(qI, r, HI, hb, qfrag);
    __syncthreads();
    uint32_t qa[T::kHeadTiles][T::kKSteps][4];
    float wh[T::kHeadTiles][2];
#pragma unroll
    for (int mt = 0; mt < T::kHeadTiles; ++mt) {
#pragma unroll
      for (int kk = 0; kk < T::kKSteps; ++kk) {
        const uint4 v = *reinterpret_cast<const uint4*>(qfrag[mt][kk][lane]);
        qa[mt][kk][0] = v.x, qa[mt][kk][1] = v.y, qa[mt][kk][2] = v.z, qa[mt][kk][3] = v.w;
      }
      wh[mt][0] = ws[16 * mt + g], wh[mt][1] = ws[16 * mt + 8 + g];
    }

    for (int k = 0; k < T::kStages - 1; ++k) issue(k);
#pragma unroll 1
    for (int k = 0; k < my_tiles; ++k) {
      cp_async_wait<T::kStages - 2>();  // tile k has landed (the thread's own copies)
      issue(k + T::kStages - 1);        // into the stage read at k − 1
      const unsigned char* st = stages + (k % T::kStages) * T::kStageBytes;
      float acc[T::kHeadTiles][4] = {};
#pragma unroll
      for (int kk = 0; kk < T::kKSteps; ++kk) {
        const float4 v = *reinterpret_cast<const float4*>(st + (kk * 32 + lane) * 16);
        const uint32_t b0 = pack_bf16x2(v.x, v.y), b1 = pack_bf16x2(v.z, v.w);  // exact: FP4 values
#pragma unroll
        for (int mt = 0; mt < T::kHeadTiles; ++mt) mma_bf16(acc[mt], qa[mt][kk], b0, b1);
      }
      float part[2];
      head_sums(acc, wh, part);
      store_tile(part, g, t, (tile0 + k * tile_stride) * T::kEntries, count, hb == 0, score_row,
                 digits && last ? digit_count : nullptr);
    }
    cp_async_wait<0>();
  }
  if (digits) {
    __syncthreads();
    for (int b = threadIdx.x; b < kTopkDigits; b += blockDim.x)
      if (digit_count[b]) atomicAdd(&digits[r * kTopkDigits + b], digit_count[b]);
  }
}

// ---- compact entries: e4m3 tensor cores -----------------------------------------------------------
//
// The e2m1 codes go to the MMA (m16n8k32, e4m3 × e4m3 → float32) through a byte table per block:
// an FP4 value v · 2^(s_b − 127) (s_b the block's E8M0 byte) is the e4m3 value v · 2^(s_b − smax + 6)
// times 2^(smax − 133), smax the entry's largest scale byte. For s_b ≥ smax − 11 every e2m1 value
// (0.5 .. 6) times 2^(−5 .. 6) is an exact e4m3 (exponent field d = s_b − smax + 12 ∈ 1..12), so
// the table of the 8 magnitudes is two multiply-adds from s_b, and the signs come from prmt's
// sign-replicating mode. One MMA chain then sums all of an entry's blocks, and 2^(smax − 133) (a
// factor per entry, outside the ReLU: positive) scales the head sum once. Per tile of 8 entries
// that is ~170 instructions where the bf16 decoding took ~310 (the kernel is bound by instruction
// issue and latency at 1M tokens).
//   - q: each head is scaled by one power of two P_h (its largest magnitude in [128, 256)) and
//     rounded to e4m3, exact for FP4-simulated heads unless a block is ~2^13 below the head's
//     largest; ReLU(P·x) = P·ReLU(x), so P_h joins the head's weight.
//   - the products within one MMA are of one block pair (≤ 13 significant bits for the sum of
//     32), so each MMA's own sum is exact; the chain adds in float32 as the bf16 path does.
//   - entries whose scales span more than 11 binades (or with a scale below 2^-120), and passes
//     whose q did not convert exactly, take the bf16 path instead, tile by tile (its A fragments
//     from shared memory): the same exact products for any input.
//   - the k order: the 4 threads of entry g hold its block b's word t (codes 8t .. 8t + 7); MMA k
//     4t + j is element 8t + j of the block and k 16 + 4t + j element 8t + 4 + j (the same map for
//     q). A warp copies whole entries with 16-byte cp.async (lane t: quarter t) into a stage whose
//     16-byte units (one block each) are XOR-swizzled per entry, so the 32 lanes' word reads of one
//     block meet 32 different banks.
template <int DI>
struct Fp8Traits {
  static_assert(DI == 32 || DI == 64 || DI == 128 || DI == 256, "index_head_dim 32..256, a power of two");
  static constexpr int kWarps = 6, kThreads = 32 * kWarps;
  static constexpr int kEntries = 8;                        // the N of one MMA
  static constexpr int kBlocks = DI / 32;                   // E8M0 blocks of an entry: MMA k steps
  static constexpr int kKSteps = DI / 16;                   // the bf16 path's k steps
  static constexpr int kHeadTiles = kBlocks <= 4 ? 4 : 2;   // q in 4·kHeadTiles·kBlocks ≤ 64 registers
  static constexpr int kGroupHeads = 16 * kHeadTiles;       // heads of one pass over the entries
  static constexpr int kEntryBytes = DI / 2;                // an entry's codes
  static constexpr int kChunk = DI / 8;                     // the bytes of it one lane copies
  static constexpr int kCopy = kChunk < 16 ? kChunk : 16, kCopies = kChunk / kCopy;
  static constexpr int kScaleWords = kBlocks <= 4 ? 1 : kBlocks / 4;  // aligned words holding an entry's scales
  static constexpr int kSwizzleSpan = 256 / DI;             // entries whose words fill the 32 banks once
  static constexpr int kStages = 8;                         // tiles in flight per warp
  static constexpr int kMinBlocks = 2;
  // A stage: the tile's codes [kEntries][kEntryBytes] (swizzled units), then its scale words
  // [kEntries][kScaleWords].
  static constexpr int kStageBytes = kEntries * kEntryBytes + kEntries * kScaleWords * 4;
  // q staging: a head's DI floats as float4s over kLanes lanes, kVec each, in kRounds rounds.
  static constexpr int kLanes = DI / 4 < 32 ? DI / 4 : 32, kVec = DI / 4 / kLanes;
  static constexpr int kRounds = (kGroupHeads * kLanes + kThreads - 1) / kThreads;
  static_assert(kHeadTiles * kBlocks * 4 <= 64, "q fragments fit in 64 registers");
  static_assert(kStageBytes % 16 == 0, "stages stay 16-byte aligned");
};

// floor(log2 a) − 7 for a head's largest magnitude a (clamped so that 2^±x stays a normal float):
// the head over 2^that is below 256.
__device__ __forceinline__ int q_exp(float a) {
  const int e = static_cast<int>((__float_as_uint(a) >> 23) & 0xFFu) - 127;
  return min(max(e - 7, -100), 100);
}
__device__ __forceinline__ float exp2i(int e) { return __uint_as_float(static_cast<uint32_t>(e + 127) << 23); }
// Four values rounded to e4m3 (x in the low byte), and whether that was exact.
__device__ __forceinline__ uint32_t e4m3x4_exact(float4 v, bool& exact) {
  const uint32_t lo = dev::e4m3x2_rn(v.x, v.y), hi = dev::e4m3x2_rn(v.z, v.w);
  uint32_t h0, h1;
  asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(h0) : "h"(static_cast<uint16_t>(lo)));
  asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(h1) : "h"(static_cast<uint16_t>(hi)));
  const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&h0));
  const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&h1));
  exact = exact && a.x == v.x && a.y == v.y && b.x == v.z && b.y == v.w;
  return lo | hi << 16;
}

template <int DI>
__global__ void __launch_bounds__(Fp8Traits<DI>::kThreads, Fp8Traits<DI>::kMinBlocks)
    indexer_scores_fp8_kernel(const float* qI, const float* w, float w_scale, int HI, const int32_t* slot,
                              const int32_t* pos, const LayerCache* caches, float* score, int64_t ld,
                              uint32_t* digits) {
  dev::pdl_begin();
  using T = Fp8Traits<DI>;
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ float ws[T::kGroupHeads];     // w · w_scale · P_h (the e4m3 path)
  __shared__ float wsb[T::kGroupHeads];    // w · w_scale (the bf16 path)
  __shared__ __align__(16) uint32_t qfrag[T::kHeadTiles][T::kBlocks][32][4];    // e4m3 A fragments
  __shared__ __align__(16) uint32_t qfragb[T::kHeadTiles][T::kKSteps][32][4];   // bf16 A fragments
  __shared__ uint32_t digit_count[kTopkDigits];  // with `digits`: the block's scores by first top-k digit
  const int64_t r = blockIdx.x;
  const int count = (pos[r] + 1) / 4;
  const int tiles = (count + T::kEntries - 1) / T::kEntries;
  if (static_cast<int>(blockIdx.y) * T::kWarps >= tiles) return;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int tile0 = blockIdx.y * T::kWarps + warp, tile_stride = gridDim.y * T::kWarps;
  const int my_tiles = tile0 < tiles ? (tiles - tile0 + tile_stride - 1) / tile_stride : 0;
  const CacheRows cache = caches[slot[r]].idx_entries;
  unsigned char* stages = smem + warp * T::kStages * T::kStageBytes;
  const int swz = (g / T::kSwizzleSpan) % T::kBlocks;  // entry g's unit u sits at u ^ swz
  float* score_row = score + r * ld;

  // Tile k of this warp (k ≥ my_tiles: an empty group, to keep the group count uniform).
  auto issue = [&](int k) {
    if (k < my_tiles) {
      unsigned char* st = stages + (k % T::kStages) * T::kStageBytes;
      const int e = (tile0 + k * tile_stride) * T::kEntries + g;
      const bool valid = e < count;
      const int64_t es = valid ? e : 0;
#pragma unroll
      for (int c = 0; c < T::kCopies; ++c) {
        const int o = t * T::kChunk + c * T::kCopy;  // byte of the entry
        cp_async<T::kCopy>(st + g * T::kEntryBytes + (((o / 16) ^ swz) * 16) + o % 16,
                           cache.codes + es * T::kEntryBytes + o, valid);
      }
      // The aligned word(s) holding the entry's scale bytes (shared with a neighbour for DI < 128,
      // inside the 256-byte aligned cache buffer); an entry past the count reads as zeros.
      if (t < T::kScaleWords)
        cp_async<4>(st + T::kEntries * T::kEntryBytes + (g * T::kScaleWords + t) * 4,
                    cache.scales + ((es * T::kBlocks) & ~int64_t{3}) + 4 * t, valid);
    }
    cp_async_commit();
  };
  // Scale byte b of entry c of a stage (c's aligned words; its first byte at (c·kBlocks) mod 4).
  auto scale_byte = [&](const unsigned char* st, int c, int b) -> uint32_t {
    const int i = ((c * T::kBlocks) & 3) + b;
    const uint32_t word = *reinterpret_cast<const uint32_t*>(st + T::kEntries * T::kEntryBytes +
                                                            (c * T::kScaleWords + i / 4) * 4);
    return (word >> (8 * (i % 4))) & 0xFFu;
  };

  if (digits)
    for (int b = threadIdx.x; b < kTopkDigits; b += blockDim.x) digit_count[b] = 0;
#pragma unroll 1
  for (int hb = 0; hb < HI; hb += T::kGroupHeads) {
    const bool last = hb + T::kGroupHeads >= HI;
    uint32_t* const count_to = digits && last ? digit_count : nullptr;
    __syncthreads();  // the previous pass's readers of ws, wsb and the fragments are done
    stage_q_bf16<DI, T::kGroupHeads, T::kThreads>(qI, r, HI, hb, qfragb);
    // q into e4m3 A fragments (a0/a1 = heads g / g + 8 at k 4t .. 4t + 3 = block elements 8t ..
    // 8t + 3, a2/a3 at k 16 + 4t .. = 8t + 4 ..), once per block: every thread's loads first (one
    // L2 round trip), then per head its largest magnitude over its kLanes lanes and the conversion.
    float4 qv[T::kRounds][T::kVec];
#pragma unroll
    for (int i = 0; i < T::kRounds; ++i) {
      const int item = i * T::kThreads + threadIdx.x, hl = item / T::kLanes, l = item % T::kLanes, h = hb + hl;
#pragma unroll
      for (int v = 0; v < T::kVec; ++v)
        qv[i][v] = hl < T::kGroupHeads && h < HI
                       ? __ldg(reinterpret_cast<const float4*>(qI + (r * HI + h) * DI) + l + v * T::kLanes)
                       : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    bool exact = true;
#pragma unroll
    for (int i = 0; i < T::kRounds; ++i) {
      const int item = i * T::kThreads + threadIdx.x, hl = item / T::kLanes, l = item % T::kLanes, h = hb + hl;
      float amax = 0.0f;
#pragma unroll
      for (int v = 0; v < T::kVec; ++v)
        amax = fmaxf(amax, fmaxf(fmaxf(fabsf(qv[i][v].x), fabsf(qv[i][v].y)), fmaxf(fabsf(qv[i][v].z), fabsf(qv[i][v].w))));
#pragma unroll
      for (int o = T::kLanes / 2; o >= 1; o /= 2) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
      const int eh = q_exp(amax);
      const float inv = exp2i(-eh);
      if (hl < T::kGroupHeads) {
#pragma unroll
        for (int v = 0; v < T::kVec; ++v) {
          const float4 x = qv[i][v];
          const int f = l + v * T::kLanes, b = f / 8, fb = f % 8;  // float4 fb of block b: 8t + 4(fb % 2)
          const int mt = hl / 16, half = (hl / 8) % 2, gg = hl % 8;
          qfrag[mt][b][4 * gg + fb / 2][(fb % 2) * 2 + half] =
              e4m3x4_exact(make_float4(x.x * inv, x.y * inv, x.z * inv, x.w * inv), exact);
        }
        if (l == 0) {
          const float wh = h < HI ? w[r * HI + h] * w_scale : 0.0f;
          wsb[hl] = wh;
          ws[hl] = wh * exp2i(eh);
        }
      }
    }
    const bool q_exact = !__syncthreads_or(!exact);
    uint32_t qa[T::kHeadTiles][T::kBlocks][4];
    float wh[T::kHeadTiles][2], whb[T::kHeadTiles][2];
#pragma unroll
    for (int mt = 0; mt < T::kHeadTiles; ++mt) {
#pragma unroll
      for (int b = 0; b < T::kBlocks; ++b) {
        const uint4 v = *reinterpret_cast<const uint4*>(qfrag[mt][b][lane]);
        qa[mt][b][0] = v.x, qa[mt][b][1] = v.y, qa[mt][b][2] = v.z, qa[mt][b][3] = v.w;
      }
      wh[mt][0] = ws[16 * mt + g], wh[mt][1] = ws[16 * mt + 8 + g];
      whb[mt][0] = wsb[16 * mt + g], whb[mt][1] = wsb[16 * mt + 8 + g];
    }

    for (int k = 0; k < T::kStages - 1; ++k) issue(k);
#pragma unroll 1
    for (int k = 0; k < my_tiles; ++k) {
      cp_async_wait<T::kStages - 2>();  // tile k has landed (the thread's own copies)
      __syncwarp();                     // and the warp's (a lane reads its neighbours' copies); all
                                        // lanes are past tile k − 1, whose stage is refilled now
      issue(k + T::kStages - 1);
      const unsigned char* st = stages + (k % T::kStages) * T::kStageBytes;
      const int e0 = (tile0 + k * tile_stride) * T::kEntries;
      // Entry g's scale range: the e4m3 tables hold 12 binades below its largest scale.
      uint32_t sb[T::kBlocks], smax = 0, smin = 255;
#pragma unroll
      for (int b = 0; b < T::kBlocks; ++b) {
        sb[b] = scale_byte(st, g, b);
        smax = max(smax, sb[b]), smin = min(smin, sb[b]);
      }
      const bool wide = e0 + g < count && (smax - smin > 11 || smax < 7);
      float part[2];
      if (q_exact && !__any_sync(0xffffffffu, wide)) {
        // Tables: magnitudes 0..3 = bytes {0, 8d, 8d + 0x08, 8d + 0x0C}, 4..7 = 8d + {0x10, 0x14,
        // 0x18, 0x1C}, d = s_b − smax + 12, as s_b · 0x08080800 + base (bytes stay below 0x80).
        const uint32_t base_lo = 0x0C080000u + 96u * 0x01010100u - smax * 0x08080800u;
        const uint32_t base_hi = 0x1C181410u + 96u * 0x01010101u - smax * 0x08080808u;
        float acc[T::kHeadTiles][4] = {};
        const unsigned char* mine = st + g * T::kEntryBytes + 4 * t;
#pragma unroll
        for (int b = 0; b < T::kBlocks; ++b) {
          const uint32_t x = *reinterpret_cast<const uint32_t*>(mine + ((b ^ swz) * 16));
          const uint32_t tab_lo = sb[b] * 0x08080800u + base_lo, tab_hi = sb[b] * 0x08080808u + base_hi;
          const uint32_t mag = x & 0x77777777u, x4 = x << 4;
          // Elements 0..3 and 4..7; the sign of element 2p is bit 7 of byte p of x4, of 2p + 1 of x.
          const uint32_t b0 = prmt(tab_lo, tab_hi, mag) | (prmt(x4, x, 0xD9C8u) & 0x80808080u);
          const uint32_t b1 = prmt(tab_lo, tab_hi, mag >> 16) | (prmt(x4, x, 0xFBEAu) & 0x80808080u);
#pragma unroll
          for (int mt = 0; mt < T::kHeadTiles; ++mt) mma_e4m3(acc[mt], qa[mt][b][0], qa[mt][b][1], qa[mt][b][2], qa[mt][b][3], b0, b1);
        }
        head_sums(acc, wh, part);
        // Entry 2t + c's factor 2^(smax − 133), from the lane that holds it (4·(2t + c)).
        const float f = __uint_as_float((smax - 6) << 23);
        const float f0 = __shfl_sync(0xffffffffu, f, 8 * t), f1 = __shfl_sync(0xffffffffu, f, 8 * t + 4);
        part[0] *= f0, part[1] *= f1;
      } else {
        // The bf16 path: thread t's quarter of entry g (ScoreTraits' k order), codes times scales;
        // a word at a time (the A fragments come from shared memory: 32 registers a word).
        float acc[T::kHeadTiles][4] = {};
        constexpr int kWords = T::kChunk / 4;
#pragma unroll 1
        for (int j = 0; j < kWords; ++j) {  // word j: elements t·DI/4 + 8j .. + 7 = k steps (t-local) 2j, 2j + 1
          const int o = t * T::kChunk + 4 * j;
          const uint32_t x = *reinterpret_cast<const uint32_t*>(st + g * T::kEntryBytes + (((o / 16) ^ swz) * 16) + o % 16);
          const uint32_t scale = e8m0_to_bf16x2(scale_byte(st, g, (t * DI / 4 + 8 * j) / 32));
          uint32_t bb[4];
          e2m1x8_to_bf16(x, bb);
#pragma unroll
          for (int p = 0; p < 4; ++p) bb[p] = mul_bf16x2(bb[p], scale);  // exact: a power of two
#pragma unroll
          for (int mt = 0; mt < T::kHeadTiles; ++mt) {
            const uint4 a0 = *reinterpret_cast<const uint4*>(qfragb[mt][2 * j][lane]);
            const uint4 a1 = *reinterpret_cast<const uint4*>(qfragb[mt][2 * j + 1][lane]);
            const uint32_t fa0[4] = {a0.x, a0.y, a0.z, a0.w}, fa1[4] = {a1.x, a1.y, a1.z, a1.w};
            mma_bf16(acc[mt], fa0, bb[0], bb[1]);
            mma_bf16(acc[mt], fa1, bb[2], bb[3]);
          }
        }
        head_sums(acc, whb, part);
      }
      store_tile(part, g, t, e0, count, hb == 0, score_row, count_to);
    }
    cp_async_wait<0>();
  }
  if (digits) {
    __syncthreads();
    for (int b = threadIdx.x; b < kTopkDigits; b += blockDim.x)
      if (digit_count[b]) atomicAdd(&digits[r * kTopkDigits + b], digit_count[b]);
  }
}

// Grid: a block per row and part of it, enough to fill the GPU once (warps stride over the tiles),
// none without a tile.
template <int kWarps, int kThreads, typename... Params>
bool launch_scores(const char* name, void (*kernel)(Params...), int smem, int64_t rows, int64_t max_count,
                   cudaStream_t s, const float* qI, const float* w, float w_scale, int HI, const int32_t* slot,
                   const int32_t* pos, const LayerCache* caches, float* score, int64_t ld, uint32_t* digits) {
  static int per_sm = 0;  // resident blocks per SM (one static per kernel instance)
  if (per_sm == 0) {  // opted in whatever the size: the static shared memory (~33 KiB) counts too
    DSV4_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    DSV4_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem));
    per_sm = std::max(1, per_sm);
  }
  int device = 0, sms = 0;
  DSV4_CUDA_CHECK(cudaGetDevice(&device));
  DSV4_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  constexpr int kEntries = 8;
  const int64_t tiles = (max_count + kEntries - 1) / kEntries;
  const int64_t fill = std::max<int64_t>(1, static_cast<int64_t>(sms) * per_sm / rows);
  const int64_t parts = std::min((tiles + kWarps - 1) / kWarps, fill);
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(parts));
  launch(name, kernel, grid, kThreads, smem, s, qI, w, w_scale, HI, slot, pos, caches, score, ld, digits);
  return digits != nullptr;
}

template <int DI>
bool scores_di(const float* qI, const float* w, float w_scale, int64_t rows, int HI, const int32_t* slot,
               const int32_t* pos, const LayerCache* caches, bool compact, float* score, int64_t ld,
               int64_t max_count, cudaStream_t s, uint32_t* digits) {
  if (compact) {
    using T = Fp8Traits<DI>;
    return launch_scores<T::kWarps, T::kThreads>("indexer_scores_fp8_kernel", indexer_scores_fp8_kernel<DI>,
                                                 T::kWarps * T::kStages * T::kStageBytes, rows, max_count, s, qI,
                                                 w, w_scale, HI, slot, pos, caches, score, ld, digits);
  }
  using T = ScoreTraits<DI>;
  return launch_scores<T::kWarps, T::kThreads>("indexer_scores_kernel", indexer_scores_kernel<DI>,
                                               T::kWarps * T::kStages * T::kStageBytes, rows, max_count, s, qI, w,
                                               w_scale, HI, slot, pos, caches, score, ld, digits);
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
  switch (DI) {
    case 32: return scores_di<32>(qI, w, w_scale, rows, HI, slot, pos, caches, compact, score, ld, max_count, s, digits);
    case 64: return scores_di<64>(qI, w, w_scale, rows, HI, slot, pos, caches, compact, score, ld, max_count, s, digits);
    case 128: return scores_di<128>(qI, w, w_scale, rows, HI, slot, pos, caches, compact, score, ld, max_count, s, digits);
    case 256: return scores_di<256>(qI, w, w_scale, rows, HI, slot, pos, caches, compact, score, ld, max_count, s, digits);
    default: throw Error("indexer", str("unsupported index_head_dim: ", DI, " (the CUDA indexer has 32, 64, 128, 256)"));
  }
}

}  // namespace dsv4::cuda
