// CUDA expert products for few rows per expert (decode; contracts in cuda_ops.h). Expert weights
// stay in their stored form (packed FP4 with E8M0 scales per 32, or bf16) and are decoded in
// registers: Hopper has no FP4 tensor cores. Both forms take bf16 activations and accumulate in
// float32 on the bf16 tensor cores, the products of the many-row kernel (moe_grouped.cu), so a
// decode step computes what a prefill computes up to summation order.
#include <algorithm>
#include <type_traits>
#include <vector>

#include "cuda/buffer.h"
#include "ops/moe_experts.cuh"

namespace dsv4::cuda {

namespace {

using namespace expert;

// ---- gemv (decode) ---------------------------------------------------------------------------
// A decode step reads every weight of its experts once, so the kernel must keep up with HBM: about
// 15 bytes (30 FP4 weights) per SM per cycle on an H200, against 128 thread-instructions per SM per
// cycle, only 64 of them integer. One float32 FMA per weight and row plus a compare-chain decode
// does not fit; so the products go to the tensor cores (mma.m16n8k16, bf16 × bf16 -> float32, the
// products the grouped kernel makes) and a weight costs two to three instructions:
//   - a block owns 16 · kMT output rows of one expert (kMT mma M-tiles of 16 a warp) and takes
//     the expert's activation rows 8 per pass (the N); its 4 warps split K in steps of 128 columns
//     and add their partial sums in shared memory in warp order (deterministic). Four, not eight:
//     a warp then streams eight steps of W1/W3 and four of W2, not four and two, and a decode step
//     at batch 8 took 9.7 ms instead of 10.3 (batch 1: the same);
//   - in a step a lane loads 32 consecutive weights of each of its 2 · kMT rows (16 bytes of FP4
//     with their one E8M0 scale, or 64 bytes of bf16), one or two steps ahead of the tensor cores;
//   - a 32-bit register of A holds columns 2i and 2i + 1 of a tile word (tile_pairs,
//     moe_experts.cuh): a rotation or two and one AND a pair (two instructions a pair) put sign,
//     exponent and mantissa bits at bf16's sign, low exponent and top mantissa bits, a bf16 of value
//     e2m1 · 2^-126 (exponent 0 lands on bf16 subnormals: exact); one bf16x2 multiply by
//     2^126 · scale gives the exact bf16 weight of the grouped kernel (power-of-two scaling);
//   - activation rows (small, shared by the expert's blocks) come through L1 in column order (bf16
//     weights: both operands byte-permuted to one K order); weights bypass L1.
// FP4 shapes (bench/results/2026-11-30-cuda-31.md, calls 1-4, 20 layers at 4K), 4 blocks an SM:
//   - W1/W3 of one token's experts (at most kOneTokenTiles tiles): 16 rows a block, two steps in
//     flight (B=1's 768 blocks fill 1.45 waves). Fewer, deeper blocks were slower: 3 steps at 3
//     blocks 2.79 ms at B=1 and 9.40 at B=8, 4 at 3 blocks 2.81 and 9.18, against 2.72 and 8.66
//     (2026-11-30-cuda-25.md); one step at 6 blocks (one wave) 3.00 against 2.97
//     (2026-11-30-cuda-16.md); 32 rows and one step 2.71 against 2.69 (call 4);
//   - W1/W3 of more tiles: 32 rows a block, one step in flight: B=8 8.47 -> 8.27-8.28 ms, B=64
//     28.72-28.83 -> 27.46 (call 4; at 3 blocks an SM, 8.77 against 8.74 at B=8, call 1);
//   - W2 (K = 2048: four steps a warp): 64 rows a block, one step in flight (8 rows' loads a lane),
//     4 blocks an SM: B=1's W2 is 384 blocks, one wave, not 1536 blocks of 16 rows and two steps
//     (2.9 waves). B=1 2.72 -> 2.68-2.69 ms, B=8 8.74-8.75 -> 8.42-8.46, B=64 30.29 -> 28.67
//     (calls 2-3). 32 rows gave 8.63 and 29.61 (two steps) or 8.47 and 28.98 (one step at 6
//     blocks); 128 rows at 2 blocks 8.88 and 30.45; 64 rows at 3 blocks 8.58 (one step), 8.63 (two).
#ifndef DSV4_MOE_FP4_DEPTH
#define DSV4_MOE_FP4_DEPTH 2  // steps in flight a warp with one M-tile
#endif
#ifndef DSV4_MOE_FP4_DEPTH_MT
#define DSV4_MOE_FP4_DEPTH_MT 1  // with several
#endif
#ifndef DSV4_MOE_FP4_BLOCKS
#define DSV4_MOE_FP4_BLOCKS 4  // blocks an SM the registers must allow (both products)
#endif
#ifndef DSV4_MOE_MTILES_MANY
#define DSV4_MOE_MTILES_MANY 2  // W1/W3 mma M-tiles a warp above kOneTokenTiles tiles
#endif
#ifndef DSV4_MOE_MTILES_DOWN
#define DSV4_MOE_MTILES_DOWN 4
#endif
struct GemvConfig {
  static constexpr int kWarps = 4;                // K slices of a block
  static constexpr int kRows = 16;                // output rows of an M-tile: M of mma.m16n8k16
  static constexpr int kCols = 8;                 // activation rows per pass: N of the mma
  static constexpr int kMmaK = 16;                // K of the mma
  static constexpr int kLanesK = 4;               // lanes of an mma row group, side by side in K
  static constexpr int kChunk = 32;               // columns per lane per step: one FP4 scale block
  static constexpr int kStep = kLanesK * kChunk;  // columns per warp per step
  static constexpr int kWords = kChunk / 2;       // 32-bit words of a lane's chunk of bf16 activations
  // Steps of weights in registers per warp, blocks per SM the registers must allow, M-tiles a warp.
  static constexpr int kFp4Depth = DSV4_MOE_FP4_DEPTH, kFp4DepthMT = DSV4_MOE_FP4_DEPTH_MT, kBf16Depth = 1;
  static constexpr int kFp4Blocks = DSV4_MOE_FP4_BLOCKS, kBf16Blocks = 2;
  static constexpr int kMTilesMany = DSV4_MOE_MTILES_MANY, kMTilesDown = DSV4_MOE_MTILES_DOWN;
  static constexpr int kOneTokenTiles = 8;  // W1/W3 of more tiles than this take kMTilesMany (Flash: k = 6)
  static_assert(kChunk == 32 && kMmaK / kLanesK == 4, "a chunk is four code words of two mma k-steps each");
};

// Per-lane weights of one step: rows g + 8q (q < 2 kMT) of the block's 16 kMT, for kMats matrices;
// mma M-tile mt takes q = 2 mt, 2 mt + 1.
template <bool kFp4, int kMats, int kMT>
struct GemvStage;
template <int kMats, int kMT>
struct GemvStage<true, kMats, kMT> {
  uint4 codes[kMats][2 * kMT];     // 32 FP4 codes
  uint32_t scale[kMats][2 * kMT];  // their E8M0 byte
};
template <int kMats, int kMT>
struct GemvStage<false, kMats, kMT> {
  uint4 w[kMats][2 * kMT][4];  // 32 bf16
};

// Where a lane's bf16 rows n + 8q of each matrix start (null past the last row).
template <int kMT>
struct GemvRows {
  const bf16* w[2][2 * kMT] = {};
};
template <int kMT>
__device__ __forceinline__ GemvRows<kMT> gemv_rows(const ExpertMatrix& wa, const ExpertMatrix& wb, int e, int n) {
  GemvRows<kMT> p;
  const int K = wa.cols;
#pragma unroll
  for (int m = 0; m < 2; ++m)
#pragma unroll
    for (int r = 0; r < 2 * kMT; ++r) {
      const ExpertMatrix& w = m == 0 ? wa : wb;
      const int nr = n + 8 * r;
      if (nr < w.rows && w.w) p.w[m][r] = w.w + (static_cast<int64_t>(e) * w.rows + nr) * K;
    }
  return p;
}

// A trim of the FP4 step (0 turns it off): scale bytes b <= 128 (every one in a warp's step
// without kWide) take e8m0_factor1_narrow, one multiply-add. With the trim of the slots' zeroing
// (since gone into the FP4 loads below): B=1 4K 2.68-2.69 -> 2.66-2.67 ms, B=8 8.20-8.24 ->
// 8.19-8.22 (bench/results/2026-12-01-cuda-32.md, calls 1-2). Not in the two-tile form, whose
// registers spilled with it then.
#ifndef DSV4_MOE_LEAN
#define DSV4_MOE_LEAN 1
#endif
constexpr bool lean_scale(int mt) { return DSV4_MOE_LEAN && mt != 2; }
// The bf16 chunk at column `col` of the lane's rows (zeros where the row or column is past the end).
template <int kMats, int kMT>
__device__ __forceinline__ void gemv_load(GemvStage<false, kMats, kMT>& st, const GemvRows<kMT>& p, int col, bool valid) {
#pragma unroll
  for (int m = 0; m < kMats; ++m)
#pragma unroll
    for (int r = 0; r < 2 * kMT; ++r)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        st.w[m][r][i] = make_uint4(0, 0, 0, 0);
        if (valid && p.w[m][r]) st.w[m][r][i] = ptx::ld_streamed(p.w[m][r] + col + 8 * i);
      }
}

// The FP4 loads and the activation loads of a step, without per-load checks or branches (the
// leaner step):
//   - FP4 rows come in whole 16-row tiles (check_expert) padded to 128 columns with zero codes, so a
//     lane's rows g and g + 8 of an M-tile lie 512 code bytes and 32 scale bytes apart, a step
//     (128 columns) 1024 and 64 further on: a step's loads are immediates off one address a matrix
//     and M-tile, and only the warp's step count (uniform) decides whether they are made;
//   - a lane whose activation row is past the pass's rows reads the pass's last row instead, and a
//     chunk past K the row's last chunk (its weights there are zero codes): finite values in columns
//     the epilogue drops or that meet zero weights, so no lane zeroes or branches;
//   - a lane's slots start as zeros once; a slot it never loads (a tile past the rows) keeps them.
// With tile words in column order (then a nibble pair order; now fp4_tile_word's) and narrow_scales:
// 11.2M -> 9.2M warp-instructions in B=1's W1/W3, B=1 4K 2.64 -> 2.58-2.59 ms, B=8 8.20 -> 7.76
// (bench/results/2026-12-01-cuda-35.md, calls 1-3); fp4_tile_word then 9.2M -> 7.26M, 2.59 -> 2.56
// ms (2026-12-01-cuda-36.md, calls 1 and 5).
template <int kMT>
struct Fp4Rows {
  const uint8_t* codes[2][kMT] = {};   // row g of M-tile mt at step 0's column 32t (null: past the rows)
  const uint8_t* scales[2][kMT] = {};  // its scale byte
};
template <int kMT>
__device__ __forceinline__ Fp4Rows<kMT> fp4_rows(const ExpertMatrix& wa, const ExpertMatrix& wb, int e, int n, int t) {
  Fp4Rows<kMT> p;
  const int K = wa.cols;
#pragma unroll
  for (int m = 0; m < 2; ++m)
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
      const ExpertMatrix& w = m == 0 ? wa : wb;
      const int nr = n + 16 * mt;
      if (nr >= w.rows || !w.codes) continue;
      const int64_t row = static_cast<int64_t>(e) * w.rows + nr;
      p.codes[m][mt] = w.codes + tile_codes_row(row, K) + 16 * t;
      p.scales[m][mt] = w.scales + tile_scales_row(row, K) + t;
    }
  return p;
}
// Step s's weights (the caller loads only steps below the warp's count).
template <int kMats, int kMT>
__device__ __forceinline__ void fp4_load(GemvStage<true, kMats, kMT>& st, const Fp4Rows<kMT>& p, int s) {
  const int oc = s * 1024, os = s * 64;
#pragma unroll
  for (int m = 0; m < kMats; ++m)
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
      if (kMT > 1 && !p.codes[m][mt]) continue;  // one M-tile: the grid holds no tile past the rows
      const uint8_t* c = p.codes[m][mt] + oc;
      const uint8_t* sc = p.scales[m][mt] + os;
      st.codes[m][2 * mt] = ptx::ld_streamed(c);  // read once: L1 keeps x
      st.codes[m][2 * mt + 1] = ptx::ld_streamed(c + 512);
      st.scale[m][2 * mt] = __ldg(sc);
      st.scale[m][2 * mt + 1] = __ldg(sc + 32);
    }
}

// 32 consecutive bf16 (16 words: word i = columns 2i, 2i + 1) in the bf16 weights' mma K order,
// words 4j .. 4j + 3 of it: columns (8j, 8j + 4), (8j + 1, 8j + 5), (8j + 2, 8j + 6), (8j + 3, 8j + 7)
// (weights and activations alike).
__device__ __forceinline__ void mma_order4(const uint4 (&v)[4], int j, uint32_t* out) {
  const uint32_t* w = reinterpret_cast<const uint32_t*>(v) + 4 * j;
  out[0] = __byte_perm(w[0], w[2], 0x5410);
  out[1] = __byte_perm(w[0], w[2], 0x7632);
  out[2] = __byte_perm(w[1], w[3], 0x5410);
  out[3] = __byte_perm(w[1], w[3], 0x7632);
}

// The 8 mma k-steps of one chunk: step 2j + h takes A from code word j (or words 4j + 2h, + 1 of
// the bf16 order) and B from xb[4j + 2h], xb[4j + 2h + 1].
// FP4: the weight is e2m1 · 2^(b − 127) for scale byte b: 2^(b − 1) times the decoded pair, one
// bf16 multiply while 2^(b − 1) is a bf16 (b ≤ 128); a second factor beyond (kWide).
template <bool kWide, int kMats, int kMT>
__device__ __forceinline__ void gemv_mma_fp4(const GemvStage<true, kMats, kMT>& st,
                                             const uint32_t (&xb)[GemvConfig::kWords], float (&acc)[kMats * kMT][4]) {
#pragma unroll
  for (int mm = 0; mm < kMats * kMT; ++mm) {
    const int m = mm / kMT, mt = mm % kMT;
    uint32_t f1[2], f2[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const uint32_t b = st.scale[m][2 * mt + r];
      f1[r] = lean_scale(kMT) && !kWide ? e8m0_factor1_narrow(b) : e8m0_factor1(b);
      f2[r] = e8m0_factor2(b);
    }
    const uint32_t* q0 = reinterpret_cast<const uint32_t*>(&st.codes[m][2 * mt]);
    const uint32_t* q1 = reinterpret_cast<const uint32_t*>(&st.codes[m][2 * mt + 1]);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const TilePairs p0 = tile_pairs(q0[j]), p1 = tile_pairs(q1[j]);
      uint32_t a[2][4] = {{p0.p[0], p1.p[0], p0.p[1], p1.p[1]}, {p0.p[2], p1.p[2], p0.p[3], p1.p[3]}};
#pragma unroll
      for (int h = 0; h < 2; ++h) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          a[h][i] = mul_bf16x2(a[h][i], f1[i & 1]);
          if (kWide) a[h][i] = mul_bf16x2(a[h][i], f2[i & 1]);
        }
        mma_bf16(acc[mm], a[h], xb[4 * j + 2 * h], xb[4 * j + 2 * h + 1]);
      }
    }
  }
}
// narrow: the matrices hold no scale byte above 128 (ExpertMatrix::narrow_scales), so no step checks
// its bytes (eight compares and a vote a step).
template <int kMats, int kMT>
__device__ __forceinline__ void gemv_mma(const GemvStage<true, kMats, kMT>& st, const uint32_t (&xb)[GemvConfig::kWords],
                                         float (&acc)[kMats * kMT][4], bool narrow) {
  if (!narrow) {
    bool wide = false;
#pragma unroll
    for (int m = 0; m < kMats; ++m)
#pragma unroll
      for (int r = 0; r < 2 * kMT; ++r) wide |= st.scale[m][r] > 128u;
    if (__any_sync(0xffffffffu, wide)) {
      gemv_mma_fp4<true>(st, xb, acc);
      return;
    }
  }
  gemv_mma_fp4<false>(st, xb, acc);
}
template <int kMats, int kMT>
__device__ __forceinline__ void gemv_mma(const GemvStage<false, kMats, kMT>& st, const uint32_t (&xb)[GemvConfig::kWords],
                                         float (&acc)[kMats * kMT][4], bool) {
#pragma unroll
  for (int mm = 0; mm < kMats * kMT; ++mm) {
    const int m = mm / kMT, mt = mm % kMT;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      uint32_t w0[4], w1[4];
      mma_order4(st.w[m][2 * mt], j, w0);
      mma_order4(st.w[m][2 * mt + 1], j, w1);
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const uint32_t a[4] = {w0[2 * h], w1[2 * h], w0[2 * h + 1], w1[2 * h + 1]};
        mma_bf16(acc[mm], a, xb[4 * j + 2 * h], xb[4 * j + 2 * h + 1]);
      }
    }
  }
}

// 32 activations (columns col .. col + 31) as 16 bf16 words: a bf16 row as stored, or a float32 row
// rounded as moe_gather_kernel rounds it (zeros without a row).
__device__ __forceinline__ void gemv_load_x(uint4 (&xv)[4], const bf16* xrow, const float* xrow_f32, int col) {
  if (xrow) {
#pragma unroll
    for (int i = 0; i < 4; ++i) xv[i] = __ldg(reinterpret_cast<const uint4*>(xrow + col) + i);
  } else if (xrow_f32) {
    using ptx::pack_bf16x2;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float4 a = __ldg(reinterpret_cast<const float4*>(xrow_f32 + col) + 2 * i);
      const float4 b = __ldg(reinterpret_cast<const float4*>(xrow_f32 + col) + 2 * i + 1);
      xv[i] = make_uint4(pack_bf16x2(a.x, a.y), pack_bf16x2(a.z, a.w), pack_bf16x2(b.x, b.y), pack_bf16x2(b.z, b.w));
    }
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i) xv[i] = make_uint4(0, 0, 0, 0);
  }
}

// Activation row r of a pass: x[r] (bf16; with k > 0, swiglu only: the token row x[perm[r] / k]), or
// with x_f32 (swiglu only) the token row x_f32[perm[r] / k], rounded to bf16 on load (gemv_load_x);
// neither without a row.
template <bool kSwiglu>
__device__ __forceinline__ void gemv_x_row(const bf16* x, const float* x_f32, int k, const int32_t* perm, int K, int r,
                                           bool has_row, const bf16*& xrow, const float*& xrow_f32) {
  xrow = nullptr;
  xrow_f32 = nullptr;
  if (kSwiglu && has_row && x_f32) xrow_f32 = x_f32 + static_cast<int64_t>(perm[r] / k) * K;
  else if (has_row) xrow = x + static_cast<int64_t>(kSwiglu && k > 0 ? perm[r] / k : r) * K;
}

// The end of a pass: the warps' partial sums (acc[m · kMT + mt] = D[g][2t], D[g][2t + 1],
// D[g + 8][2t], D[g + 8][2t + 1] of matrix m's M-tile mt: output row, activation row) meet in shared
// memory and are added in warp order; then SwiGLU times the routing weight (h, bf16) or the plain
// product (y; at row perm[r] with perm).
template <bool kSwiglu, int kWarps, int kMats, int kRowsB>
__device__ __forceinline__ void gemv_epilogue(float (&partial)[kWarps][kMats][kRowsB][GemvConfig::kCols],
                                              const float (&acc)[kMats * (kRowsB / GemvConfig::kRows)][4], int n0, int N,
                                              int r0, int nr, float limit, const float* weight, const int32_t* perm,
                                              bf16* h_out, float* y_out) {
  using C = GemvConfig;
  constexpr int kMT = kRowsB / C::kRows;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int mm = 0; mm < kMats * kMT; ++mm) {
    const int m = mm / kMT, r = 16 * (mm % kMT) + g;
    partial[warp][m][r][2 * t] = acc[mm][0];
    partial[warp][m][r][2 * t + 1] = acc[mm][1];
    partial[warp][m][r + 8][2 * t] = acc[mm][2];
    partial[warp][m][r + 8][2 * t + 1] = acc[mm][3];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < kRowsB * C::kCols; i += kWarps * 32) {
    const int row = i % kRowsB, col = i / kRowsB, n = n0 + row;
    if (n < N && col < nr) {
      float a = 0.0f, b = 0.0f;
      for (int w = 0; w < kWarps; ++w) {
        a += partial[w][0][row][col];
        if (kSwiglu) b += partial[w][kMats - 1][row][col];
      }
      const int64_t r = r0 + col;
      if (kSwiglu) h_out[r * N + n] = __float2bfloat16_rn(swiglu_value(a, b, limit) * weight[perm[r]]);
      else y_out[(perm ? perm[r] : r) * N + n] = a;
    }
  }
  __syncthreads();
}

// Block (row slice blockIdx.x, tile blockIdx.y): output rows n0 .. n0 + 16 kMT − 1 of the tile's
// expert for all its activation rows. Lane (g, t) of warp w: rows n0 + g + 8q (q < 2 kMT),
// activation row g of the pass, columns [32 (4s + t), + 32) of the steps s = w, w + 4, ...
// Activation row r: see gemv_x_row (no gather in either token form).
template <bool kSwiglu, bool kFp4, int kMT>
__global__ void __launch_bounds__(GemvConfig::kWarps * 32, kFp4 ? GemvConfig::kFp4Blocks : GemvConfig::kBf16Blocks)
moe_gemv_kernel(const bf16* x, const float* x_f32, int k, ExpertMatrix wa, ExpertMatrix wb, const int2* tiles,
                const int32_t* ntiles, const int32_t* offsets, float limit, const float* weight, const int32_t* perm,
                bf16* h_out, float* y_out) {
  // The down product (!kSwiglu) follows the SwiGLU product, which waited for the routing: the
  // routing's tiles are complete when this kernel launches, so it reads them (past L1) and loads
  // its first weights before its own wait.
  constexpr bool kEarly = !kSwiglu;
  if (!kEarly) dev::pdl_begin();
  using C = GemvConfig;
  constexpr int kMats = kSwiglu ? 2 : 1;
  using Stage = GemvStage<kFp4, kMats, kMT>;
  constexpr int kDepth = !kFp4 ? C::kBf16Depth : kMT == 1 ? C::kFp4Depth : C::kFp4DepthMT;
  constexpr int kRowsB = C::kRows * kMT;
  __shared__ float partial[C::kWarps][kMats][kRowsB][C::kCols];
  const int2 tile = __ldcg(tiles + blockIdx.y);  // in bounds for every block: read alongside the count
  if (static_cast<int>(blockIdx.y) >= __ldcg(ntiles)) return;
  const int e = tile.x;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int K = wa.cols, N = wa.rows, n0 = blockIdx.x * kRowsB;
  const bool narrow = wa.narrow_scales && (!kSwiglu || wb.narrow_scales);
  const int steps = (K + C::kStep - 1) / C::kStep;
  const GemvRows<kMT> rows = kFp4 ? GemvRows<kMT>{} : gemv_rows<kMT>(wa, wb, e, n0 + g);
  const Fp4Rows<kMT> frows = kFp4 ? fp4_rows<kMT>(wa, wb, e, n0 + g, t) : Fp4Rows<kMT>{};
  auto column = [&](int s) { return (s * C::kLanesK + t) * C::kChunk; };
  Stage st[kDepth];
  if (kFp4)  // zeros once (fp4_load)
#pragma unroll
    for (int u = 0; u < kDepth; ++u) st[u] = Stage{};
  auto load_step = [&](Stage& slot, int s) {
    if constexpr (kFp4) {
      if (s < steps) fp4_load(slot, frows, s);
    } else {
      gemv_load(slot, rows, column(s), s < steps && column(s) < K);
    }
  };
  auto load_first_steps = [&] {
#pragma unroll
    for (int u = 0; u < kDepth; ++u) load_step(st[u], warp + u * C::kWarps);
  };
  load_first_steps();  // the weights do not wait for the row range
  if (kEarly) dev::pdl_begin();
  const int r_begin = offsets[e], r_end = offsets[e + 1];
  for (int r0 = r_begin; r0 < r_end; r0 += C::kCols) {
    const int nr = min(C::kCols, r_end - r0);
    const bf16* xrow;
    const float* xrow_f32;
    if (kFp4)  // lanes past the pass's rows read its last row (their columns are dropped)
      gemv_x_row<kSwiglu>(x, x_f32, k, perm, K, r0 + min(g, nr - 1), true, xrow, xrow_f32);
    else
      gemv_x_row<kSwiglu>(x, x_f32, k, perm, K, r0 + g, g < nr, xrow, xrow_f32);
    float acc[kMats * kMT][4] = {};
    for (int s0 = warp; s0 < steps; s0 += kDepth * C::kWarps) {
#pragma unroll
      for (int u = 0; u < kDepth; ++u) {
        const int s = s0 + u * C::kWarps;
        if (s >= steps) break;
        const int col = column(s);
        uint4 xv[4];
        if (kFp4)  // a chunk past K: the row's last (zero codes meet it)
          gemv_load_x(xv, xrow, xrow_f32, min(col, K - C::kChunk));
        else
          gemv_load_x(xv, col < K ? xrow : nullptr, col < K ? xrow_f32 : nullptr, col);
        uint32_t xb[C::kWords];
        if (kFp4) {  // tile_pairs gives column order
#pragma unroll
          for (int i = 0; i < C::kWords; ++i) xb[i] = reinterpret_cast<const uint32_t*>(xv)[i];
        } else {
#pragma unroll
          for (int j = 0; j < 4; ++j) mma_order4(xv, j, xb + 4 * j);
        }
        gemv_mma(st[u], xb, acc, narrow);
        const int next = s + kDepth * C::kWarps;
        load_step(st[u], next);
      }
    }
    if (r0 + C::kCols < r_end) load_first_steps();  // the next pass's, under this epilogue
    gemv_epilogue<kSwiglu, C::kWarps>(partial, acc, n0, N, r0, nr, limit, weight, perm, h_out, y_out);
  }
}

// One block per 16 kMT output rows of each tile (the tiles of one expert adjacent, sharing its
// activation rows in L1); the weight format and kMT become template arguments.
template <bool kSwiglu>
void launch_gemv(const bf16* x, const float* x_f32, int k, const ExpertMatrix& wa, const ExpertMatrix& wb, const int2* tiles,
                 const int32_t* ntiles, int max_tiles, const int32_t* offsets, float limit, const float* weight,
                 const int32_t* perm, bf16* h, float* y, cudaStream_t s) {
  using C = GemvConfig;
  DSV4_CHECK(max_tiles <= 65535, "moe", "gemv: ", max_tiles, " tiles, more than a grid column holds (65535)");
  const dim3 block(C::kWarps * 32);
  auto fp4 = [&](auto mt) {
    constexpr int kMT = decltype(mt)::value;
    const dim3 grid((wa.rows + C::kRows * kMT - 1) / (C::kRows * kMT), max_tiles);
    launch("moe_gemv_kernel", moe_gemv_kernel<kSwiglu, true, kMT>, grid, block, 0, s, x, x_f32, k, wa, wb, tiles, ntiles, offsets, limit, weight, perm, h, y);
  };
  if (wa.codes) {
    if constexpr (!kSwiglu) fp4(std::integral_constant<int, C::kMTilesDown>{});
    else if (max_tiles > C::kOneTokenTiles) fp4(std::integral_constant<int, C::kMTilesMany>{});
    else fp4(std::integral_constant<int, 1>{});
  } else {
    const dim3 grid((wa.rows + C::kRows - 1) / C::kRows, max_tiles);
    launch("moe_gemv_kernel", moe_gemv_kernel<kSwiglu, false, 1>, grid, block, 0, s, x, x_f32, k, wa, wb, tiles, ntiles, offsets, limit, weight, perm, h, y);
  }
}

}  // namespace

namespace {
void check_swiglu(const ExpertMatrix& w1, const ExpertMatrix& w3) {
  check_expert(w1, "w1");
  check_expert(w3, "w3");
  DSV4_CHECK((w1.codes != nullptr) == (w3.codes != nullptr) && w1.rows == w3.rows && w1.cols == w3.cols, "moe",
             "gemv: w1 and w3 differ in format or shape");
}

// Thread i: the 16 code bytes (each word as fp4_tile_word writes it) and the scale byte of 32-column
// piece i of the tiled rows (row i / pieces) into its tile; a padding piece (past cols) gets zero
// codes and the scale 1.
__global__ void fp4_tile_kernel(const uint8_t* codes_in, const uint8_t* scales_in, int64_t rows, int cols,
                                uint8_t* codes, uint8_t* scales, const TileEncoder enc) {
  dev::pdl_begin();
  const int pieces = static_cast<int>(fp4_tiled_cols(cols) / 32), real = cols / 32;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < rows * pieces;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / pieces;
    const int piece = static_cast<int>(i - row * pieces), col = piece * 32;
    const int64_t in = row * real + piece;
    uint4 q = make_uint4(0, 0, 0, 0);
    if (piece < real) {
      q = *reinterpret_cast<const uint4*>(codes_in + in * 16);
      q = make_uint4(fp4_tile_word(q.x, enc), fp4_tile_word(q.y, enc), fp4_tile_word(q.z, enc),
                     fp4_tile_word(q.w, enc));
    }
    *reinterpret_cast<uint4*>(codes + tile_codes_row(row, cols) + tile_codes_at(col)) = q;
    scales[tile_scales_row(row, cols) + tile_scale_at(col)] = piece < real ? scales_in[in] : 127;
  }
}
}  // namespace

namespace {
__global__ void fp4_scale_max_kernel(const uint8_t* scales, int64_t n, uint32_t* out) {
  uint32_t m = 0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    m = max(m, static_cast<uint32_t>(scales[i]));
  m = __reduce_max_sync(0xffffffffu, m);
  if ((threadIdx.x & 31) == 0) atomicMax(out, m);
}
}  // namespace

uint8_t fp4_scale_max_cuda(const uint8_t* scales, int64_t n, cudaStream_t s) {
  if (n <= 0) return 0;
  DeviceArray<uint32_t> out(std::vector<uint32_t>{0});
  launch("fp4_scale_max_kernel", fp4_scale_max_kernel, dim3(static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 4096))),
         dim3(256), 0, s, scales, n, out.get());
  DSV4_CUDA_CHECK(cudaStreamSynchronize(s));
  return static_cast<uint8_t>(out.to_host()[0]);
}

void fp4_tile_cuda(const uint8_t* codes_in, const uint8_t* scales_in, int64_t rows, int cols, uint8_t* codes,
                   uint8_t* scales, cudaStream_t s) {
  DSV4_CHECK(rows % 16 == 0 && cols % 32 == 0 && cols > 0, "moe", "fp4 tiles: ", rows, " × ", cols,
             " weights: rows must be a multiple of 16 and columns of 32");
  DSV4_CHECK(reinterpret_cast<uintptr_t>(codes_in) % 16 == 0 && reinterpret_cast<uintptr_t>(codes) % 16 == 0, "moe",
             "fp4 tiles: codes not 16-byte aligned");
  const int64_t n = rows * (fp4_tiled_cols(cols) / 32);
  if (n == 0) return;
  launch("fp4_tile_kernel", fp4_tile_kernel, dim3(static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 4096))),
         dim3(256), 0, s, codes_in, scales_in, rows, cols, codes, scales, kTileEncoder);
}

void moe_gemv_swiglu_cuda(const bf16* xs, const ExpertMatrix& w1, const ExpertMatrix& w3, const int2* tiles,
                          const int32_t* ntiles, int max_tiles, const int32_t* offsets, float limit,
                          const float* weight, const int32_t* perm, bf16* h, cudaStream_t s) {
  check_swiglu(w1, w3);
  if (max_tiles == 0) return;
  launch_gemv<true>(xs, nullptr, 0, w1, w3, tiles, ntiles, max_tiles, offsets, limit, weight, perm, h, nullptr, s);
}

void moe_gemv_swiglu_tokens_cuda(const bf16* x, int k, const ExpertMatrix& w1, const ExpertMatrix& w3,
                                 const int2* tiles, const int32_t* ntiles, int max_tiles, const int32_t* offsets,
                                 float limit, const float* weight, const int32_t* perm, bf16* h, cudaStream_t s) {
  check_swiglu(w1, w3);
  DSV4_CHECK(k >= 1, "moe", "gemv: token rows need k >= 1, not ", k);
  if (max_tiles == 0) return;
  launch_gemv<true>(x, nullptr, k, w1, w3, tiles, ntiles, max_tiles, offsets, limit, weight, perm, h, nullptr, s);
}

void moe_gemv_swiglu_gather_cuda(const float* x, int k, const ExpertMatrix& w1, const ExpertMatrix& w3,
                                 const int2* tiles, const int32_t* ntiles, int max_tiles, const int32_t* offsets,
                                 float limit, const float* weight, const int32_t* perm, bf16* h, cudaStream_t s) {
  check_swiglu(w1, w3);
  if (max_tiles == 0) return;
  launch_gemv<true>(nullptr, x, k, w1, w3, tiles, ntiles, max_tiles, offsets, limit, weight, perm, h, nullptr, s);
}

void moe_gemv_down_cuda(const bf16* h, const ExpertMatrix& w2, const int2* tiles, const int32_t* ntiles,
                        int max_tiles, const int32_t* offsets, float* y, cudaStream_t s, const int32_t* out_rows) {
  check_expert(w2, "w2");
  if (max_tiles == 0) return;
  launch_gemv<false>(h, nullptr, 1, w2, w2, tiles, ntiles, max_tiles, offsets, 0.0f, nullptr, out_rows, nullptr, y, s);
}

}  // namespace dsv4::cuda
