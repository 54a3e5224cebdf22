// CUDA expert products for many rows per expert (prefill; contracts in cuda_ops.h): a grouped
// GEMM over the tiles of moe_group_cuda, bf16 mma.sync with float32 accumulation, the products of
// the few-row kernel (moe_experts.cu) in another summation order. No host synchronization.
//
// Why a kernel of our own and not "dequantize each expert to bf16, then cuBLASLt per expert": at
// V4-Flash prefill (D = 4096, F = 2048, 256 FP4 experts, k = 6, 8192-token chunks: ~192 rows per
// expert) a weight feeds only ~2 · 192 FLOP. Kept as FP4 (0.53 byte) that is ~700 FLOP per byte of
// HBM, compute-bound; a bf16 copy written and read back (4.5 bytes a weight) drops it to ~85, under
// the H200's ~160 FLOP/byte ridge, needs a 12 GiB scratch per layer (or batches of experts), and
// a 192-row GEMM per expert fills a fraction of the GPU and needs the row counts on the host. Here
// the codes travel as FP4 through HBM and L2 and become bf16 only in shared memory, a tile at a time.
//
// A block computes 128 activation rows (one tile: rows of one expert) × 256 weight rows ("slots")
// over all K, with 8 warps of 64 × 64 (128 float32 accumulators a thread, one block per SM):
//   - swiglu blocks take 128 features of W1 and the same 128 of W3, interleaved by 32, so a warp's
//     64 slots are 32 features of both: g and u of an output meet in one thread and the epilogue
//     (SwiGLU with the clamp, the routing weight, h rounded to bf16) stays in registers;
//   - activations and FP4 codes arrive by cp.async, 64 columns a stage, kStages in flight; all
//     threads decode a stage's codes (one slot each) into a bf16 tile one stage ahead of the
//     tensor cores, with the exact decode of the gemv kernel (e2m1 · 2^k is a bf16); one barrier a
//     stage; both operands reach the mma through ldmatrix (rows padded to 144 bytes: no conflicts);
//   - bf16 expert weights (checkpoints stored otherwise) skip the decode: cp.async into the tile;
//   - a warp whose 64 rows are past the tile's valid rows skips its products (an expert's last
//     tile is often at most half full);
//   - grid x = feature blocks, y = tiles: blocks resident together share a tile's activations and
//     an expert's weights in L2, so HBM reads each about once.
// Shared memory bounds it: per stage and SM, 1024 mma (4096 FLOP each) against 128 KiB of
// ldmatrix, 32 KiB of decoded tile and 24 KiB of cp.async at 128 B a clock (~1500 clocks against
// 1024 at the tensor-core peak), near 65% of the bf16 peak before tile padding. Hopper's wgmma,
// reading B straight from shared memory, would lift that bound; mma.sync keeps the fragment
// layouts and the exact FP4 decode of the gemv kernel.
#include "ops/moe_experts.cuh"

namespace dsv4::cuda {

namespace {

using namespace expert;

template <bool kFp4>
struct GroupedConfig {
  static constexpr int kRows = kMoeTileRows;  // activation rows of a tile
  static constexpr int kSlots = 256;          // weight rows of a block
  static constexpr int kBK = 64;              // columns of a stage: two FP4 scale blocks
  static constexpr int kWarpsM = 2, kWarpsN = 4, kThreads = 32 * kWarpsM * kWarpsN;
  static constexpr int kWarpRows = kRows / kWarpsM, kWarpSlots = kSlots / kWarpsN;
  static constexpr int kFragM = kWarpRows / 16, kFragN = kWarpSlots / 8;  // m16 and n8 tiles of a warp
  static constexpr int kLd = kBK + 8;            // bf16 row stride: 144 bytes, 8 rows on distinct banks
  static constexpr int kCodeLd = kBK / 2 + 16;   // FP4 code row stride: 48 bytes, the same for 16-byte reads
  static constexpr int kStages = kFp4 ? 4 : 3;   // ring of activations and weights
  static constexpr int kLookahead = kFp4 ? 1 : 0;  // stages decoded ahead of the mma
  static constexpr int kXStage = kRows * kLd * 2;  // bytes of a stage
  static constexpr int kWStage = kFp4 ? kSlots * kCodeLd : kSlots * kLd * 2;
  static constexpr int kTile = kSlots * kLd * 2;  // a decoded bf16 weight tile (FP4: two)
  static constexpr int kSmem = kStages * (kXStage + kWStage) + (kFp4 ? 2 * kTile : 0);
  static_assert(kWarpRows == 64 && kWarpSlots == 64, "the loops below are written for 64 × 64 warp tiles");
  static_assert(kThreads == kSlots, "FP4: one thread decodes one slot");
  static_assert(kBK == 64 && kCodeLd % 16 == 0 && kLd % 8 == 0, "a stage: two 16-byte code pieces a slot");
  static_assert(kStages - 2 - kLookahead >= 0, "the ring must hold the stages in flight");
  static_assert(kSmem <= 227 * 1024, "more shared memory than a Hopper block has");
};

// Slot s of a swiglu block is row n0 + 32 (s / 64) + s % 32 of W1 (s / 32 even) or of W3 (odd);
// of a down block, row n0 + s of W2.
template <bool kSwiglu>
__device__ __forceinline__ int slot_row(int s, int n0) {
  return kSwiglu ? n0 + ((s >> 6) << 5) + (s & 31) : n0 + s;
}
template <bool kSwiglu>
__device__ __forceinline__ bool slot_in_second(int s) {
  return kSwiglu && ((s >> 5) & 1);
}


// What a block reads: tile rows [r0, r0 + valid) of x (rows of expert e) and its slots' weight rows.
struct GroupedBlock {
  const bf16* x;
  ExpertMatrix wa, wb;
  int e, r0, valid, n0, K, N;
};

// Stage kb (columns [64 kb, 64 kb + 64)) into ring entry kb % kStages, zeros past the valid rows,
// the last weight row and K: activations [kRows][kLd], then codes [kSlots][kCodeLd] (FP4) or bf16
// weights [kSlots][kLd]. Consecutive threads copy consecutive 16-byte pieces of a row.
template <bool kSwiglu, bool kFp4>
__device__ __forceinline__ void load_stage(const GroupedBlock& b, int kb, uint8_t* smem) {
  using C = GroupedConfig<kFp4>;
  const int tid = threadIdx.x, k0 = kb * C::kBK, entry = kb % C::kStages;
  bf16* xd = reinterpret_cast<bf16*>(smem + entry * C::kXStage);
  uint8_t* wd = smem + C::kStages * C::kXStage + entry * C::kWStage;
  const int piece8 = tid & 7;  // 8-column piece of a bf16 row
#pragma unroll
  for (int q = 0; q < C::kRows * (C::kBK / 8) / C::kThreads; ++q) {
    const int row = (tid >> 3) + q * (C::kThreads / 8), col = k0 + 8 * piece8;
    const bool valid = row < b.valid && col < b.K;
    ptx::cp_async<16>(xd + row * C::kLd + 8 * piece8, valid ? b.x + static_cast<int64_t>(b.r0 + row) * b.K + col : b.x, valid);
  }
  if constexpr (kFp4) {
    const int piece = tid & 1;  // 32-column piece (16 bytes of codes)
#pragma unroll
    for (int q = 0; q < C::kSlots * 2 / C::kThreads; ++q) {
      const int s = (tid >> 1) + q * (C::kThreads / 2), n = slot_row<kSwiglu>(s, b.n0), col = k0 + 32 * piece;
      const uint8_t* codes = slot_in_second<kSwiglu>(s) ? b.wb.codes : b.wa.codes;
      const bool valid = n < b.N && col < b.K;
      ptx::cp_async<16>(wd + s * C::kCodeLd + 16 * piece,
                 valid ? codes + tile_codes_row(static_cast<int64_t>(b.e) * b.N + n, b.K) + tile_codes_at(col) : codes,
                 valid);
    }
  } else {
#pragma unroll
    for (int q = 0; q < C::kSlots * (C::kBK / 8) / C::kThreads; ++q) {
      const int s = (tid >> 3) + q * (C::kThreads / 8), n = slot_row<kSwiglu>(s, b.n0), col = k0 + 8 * piece8;
      const bf16* w = slot_in_second<kSwiglu>(s) ? b.wb.w : b.wa.w;
      const bool valid = n < b.N && col < b.K;
      ptx::cp_async<16>(wd + (s * C::kLd + 8 * piece8) * 2, valid ? w + (static_cast<int64_t>(b.e) * b.N + n) * b.K + col : w,
                 valid);
    }
  }
}

// The two E8M0 bytes of stage kb of one weight row (row_scales: the row's start in the tiles; low
// byte: columns 64 kb ..; 127 = 1.0 for blocks past the end, whose codes are zero).
__device__ __forceinline__ uint32_t stage_scales(const uint8_t* row_scales, int kb, int K) {
  const int col = 64 * kb;
  if (!row_scales || col >= K) return 0x7f7fu;
  const uint32_t lo = __ldg(row_scales + tile_scale_at(col));
  const uint32_t hi = col + 32 < K ? __ldg(row_scales + tile_scale_at(col + 32)) : 0x7fu;
  return lo | hi << 8;
}

// Half h of a stage of one slot (32 codes, one scale byte) -> 32 bf16 in column order for ldmatrix:
// tile_pairs (moe_experts.cuh) gives columns 2i, 2i + 1 of each 8 of a tile word.
template <bool kWide>
__device__ __forceinline__ void decode_words(const uint4& q, uint32_t b, bf16* out) {
  const uint32_t f1 = e8m0_factor1(b), f2 = e8m0_factor2(b);
  const uint32_t w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    TilePairs t = tile_pairs(w[j]);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      t.p[i] = mul_bf16x2(t.p[i], f1);
      if (kWide) t.p[i] = mul_bf16x2(t.p[i], f2);
    }
    *reinterpret_cast<uint4*>(out + 8 * j) = make_uint4(t.p[0], t.p[1], t.p[2], t.p[3]);
  }
}
__device__ __forceinline__ void decode_half(const uint8_t* codes, int h, uint32_t scale_pair, bf16* out) {
  const uint4 q = *reinterpret_cast<const uint4*>(codes + 16 * h);
  const uint32_t b = (scale_pair >> (8 * h)) & 0xffu;
  if (b > 128u) decode_words<true>(q, b, out + 32 * h);  // scales past 2^1: two factors (rare)
  else decode_words<false>(q, b, out + 32 * h);
}

// Block (feature block blockIdx.x, tile blockIdx.y). Warp (wm, wn): rows [64 wm, + 64) of the tile,
// slots [64 wn, + 64). Lane (g, t) holds acc[i][j] = rows 64 wm + 16 i + g (+ 8), slots
// 64 wn + 8 j + 2 t (+ 1), as the m16n8 accumulator fragment.
template <bool kSwiglu, bool kFp4>
__global__ void __launch_bounds__(GroupedConfig<kFp4>::kThreads, 1)
moe_grouped_kernel(const bf16* x, ExpertMatrix wa, ExpertMatrix wb, const int2* tiles, const int32_t* ntiles,
                   const int32_t* offsets, float limit, const float* weight, const int32_t* perm, bf16* h_out,
                   float* y_out) {
  dev::pdl_begin();
  using C = GroupedConfig<kFp4>;
  extern __shared__ __align__(128) uint8_t smem[];
  if (static_cast<int>(blockIdx.y) >= *ntiles) return;
  const int2 tile = tiles[blockIdx.y];
  GroupedBlock b{x, wa, wb, tile.x, tile.y, 0, 0, wa.cols, wa.rows};
  b.valid = min(C::kRows, offsets[b.e + 1] - b.r0);
  b.n0 = blockIdx.x * (kSwiglu ? C::kSlots / 2 : C::kSlots);
  const int nkb = (b.K + C::kBK - 1) / C::kBK;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp / C::kWarpsN, wn = warp % C::kWarpsN;
  const bool has_rows = wm * C::kWarpRows < b.valid;
  bf16* decoded = reinterpret_cast<bf16*>(smem + C::kStages * (C::kXStage + C::kWStage));  // FP4: [2][kSlots][kLd]

  // FP4: this thread decodes slot tid; its scale bytes come through registers a stage early.
  const uint8_t* my_scales = nullptr;
  if (kFp4) {
    const int n = slot_row<kSwiglu>(tid, b.n0);
    const uint8_t* scales = slot_in_second<kSwiglu>(tid) ? wb.scales : wa.scales;
    if (n < b.N) my_scales = scales + tile_scales_row(static_cast<int64_t>(b.e) * b.N + n, b.K);
  }
  auto my_codes = [&](int kb) {
    return smem + C::kStages * C::kXStage + (kb % C::kStages) * C::kWStage + tid * C::kCodeLd;
  };
  auto my_decoded = [&](int kb) { return decoded + (kb & 1) * (C::kTile / 2) + tid * C::kLd; };

  // ldmatrix addresses of this lane: A (rows, x4 = the four 8×8 pieces of an m16k16 tile), B (slots,
  // x4 = k halves of two n8 tiles).
  const int a_off = (wm * C::kWarpRows + (lane & 15)) * C::kLd + ((lane >> 4) << 3);
  const int b_off = (wn * C::kWarpSlots + (lane & 7) + ((lane >> 4) << 3)) * C::kLd + (((lane >> 3) & 1) << 3);

  float acc[C::kFragM][C::kFragN][4] = {};

  for (int s = 0; s < C::kStages - 1; ++s) {
    if (s < nkb) load_stage<kSwiglu, kFp4>(b, s, smem);
    ptx::cp_async_commit();
  }
  uint32_t next_scales = 0;
  if constexpr (kFp4) {
    const uint32_t first = stage_scales(my_scales, 0, b.K);
    next_scales = stage_scales(my_scales, 1, b.K);
    ptx::cp_async_wait<C::kStages - 2>();  // stage 0 (this thread's copies)
    __syncthreads();
    decode_half(my_codes(0), 0, first, my_decoded(0));
    decode_half(my_codes(0), 1, first, my_decoded(0));
  }
  for (int kb = 0; kb < nkb; ++kb) {
    // Stage kb + kLookahead has landed; after the barrier everyone is done with iteration kb − 1,
    // so ring entry (kb − 1) % kStages and the decoded tile of kb − 1 are free.
    ptx::cp_async_wait<C::kStages - 2 - C::kLookahead>();
    __syncthreads();
    if (kb + C::kStages - 1 < nkb) load_stage<kSwiglu, kFp4>(b, kb + C::kStages - 1, smem);
    ptx::cp_async_commit();  // possibly empty: keeps the group count
    const bool decode = kFp4 && kb + 1 < nkb;
    const uint32_t scales = next_scales;
    if (kFp4) next_scales = stage_scales(my_scales, kb + 2, b.K);
    const bf16* xa = reinterpret_cast<const bf16*>(smem + (kb % C::kStages) * C::kXStage) + a_off;
    const bf16* ring_w = reinterpret_cast<const bf16*>(smem + C::kStages * C::kXStage + (kb % C::kStages) * C::kWStage);
    const bf16* wt = (kFp4 ? decoded + (kb & 1) * (C::kTile / 2) : ring_w) + b_off;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      if (decode) decode_half(my_codes(kb + 1), half, scales, my_decoded(kb + 1));
      if (has_rows) {
#pragma unroll
        for (int kk = 2 * half; kk < 2 * half + 2; ++kk) {
          uint32_t a[C::kFragM][4];
#pragma unroll
          for (int i = 0; i < C::kFragM; ++i) ptx::ldmatrix_x4(a[i], xa + 16 * i * C::kLd + 16 * kk);
#pragma unroll
          for (int jj = 0; jj < C::kFragN / 2; ++jj) {
            uint32_t w[4];
            ptx::ldmatrix_x4(w, wt + 16 * jj * C::kLd + 16 * kk);
#pragma unroll
            for (int i = 0; i < C::kFragM; ++i) {
              mma_bf16(acc[i][2 * jj], a[i], w[0], w[1]);
              mma_bf16(acc[i][2 * jj + 1], a[i], w[2], w[3]);
            }
          }
        }
      }
    }
  }
  ptx::cp_async_wait<0>();
  if (!has_rows) return;

  // Epilogue from registers: row pairs of an n8 tile are adjacent outputs (one 4- or 8-byte store).
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int i = 0; i < C::kFragM; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = wm * C::kWarpRows + 16 * i + g + 8 * h;
      if (row >= b.valid) continue;
      const int64_t r = b.r0 + row;
      if constexpr (kSwiglu) {
        const float route = weight[perm[r]];
#pragma unroll
        for (int j = 0; j < C::kFragN / 2; ++j) {  // tile j: W1 features; tile j + kFragN/2: the same of W3
          const int n = b.n0 + wn * (C::kWarpSlots / 2) + 8 * j + 2 * t;
          if (n >= b.N) continue;
          const float v0 = swiglu_value(acc[i][j][2 * h], acc[i][j + C::kFragN / 2][2 * h], limit) * route;
          const float v1 = swiglu_value(acc[i][j][2 * h + 1], acc[i][j + C::kFragN / 2][2 * h + 1], limit) * route;
          *reinterpret_cast<__nv_bfloat162*>(h_out + r * b.N + n) = __floats2bfloat162_rn(v0, v1);
        }
      } else {
#pragma unroll
        for (int j = 0; j < C::kFragN; ++j) {
          const int n = b.n0 + wn * C::kWarpSlots + 8 * j + 2 * t;
          if (n < b.N)
            *reinterpret_cast<float2*>(y_out + r * b.N + n) = make_float2(acc[i][j][2 * h], acc[i][j][2 * h + 1]);
        }
      }
    }
}

template <bool kSwiglu, bool kFp4>
void launch_form(const bf16* x, const ExpertMatrix& wa, const ExpertMatrix& wb, const int2* tiles,
                 const int32_t* ntiles, int max_tiles, const int32_t* offsets, float limit, const float* weight,
                 const int32_t* perm, bf16* h, float* y, cudaStream_t s) {
  using C = GroupedConfig<kFp4>;
  auto kernel = moe_grouped_kernel<kSwiglu, kFp4>;
  // Per device and cheap next to the GEMM: raised at every launch.
  DSV4_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmem));
  const int features = kSwiglu ? C::kSlots / 2 : C::kSlots;
  const dim3 grid((wa.rows + features - 1) / features, max_tiles);
  launch("moe_grouped_kernel", kernel, grid, C::kThreads, C::kSmem, s, x, wa, wb, tiles, ntiles, offsets, limit, weight, perm, h, y);
}

// The weight form becomes a template argument.
template <bool kSwiglu>
void launch_grouped(const bf16* x, const ExpertMatrix& wa, const ExpertMatrix& wb, const int2* tiles,
                    const int32_t* ntiles, int max_tiles, int tile_rows, const int32_t* offsets, float limit,
                    const float* weight, const int32_t* perm, bf16* h, float* y, cudaStream_t s) {
  DSV4_CHECK(tile_rows == kMoeTileRows, "moe", "grouped tiles must have ", kMoeTileRows, " rows, not ", tile_rows);
  DSV4_CHECK(wa.rows % 2 == 0, "moe", "grouped: ", wa.rows, " weight rows, not an even number");
  DSV4_CHECK(max_tiles <= 65535, "moe", "grouped: ", max_tiles, " tiles, more than a grid column holds (65535)");
  if (max_tiles == 0) return;
  if (wa.codes) launch_form<kSwiglu, true>(x, wa, wb, tiles, ntiles, max_tiles, offsets, limit, weight, perm, h, y, s);
  else launch_form<kSwiglu, false>(x, wa, wb, tiles, ntiles, max_tiles, offsets, limit, weight, perm, h, y, s);
}

}  // namespace

void moe_grouped_swiglu_cuda(const bf16* xs, const ExpertMatrix& w1, const ExpertMatrix& w3, const int2* tiles,
                             const int32_t* ntiles, int max_tiles, int tile_rows, const int32_t* offsets,
                             float limit, const float* weight, const int32_t* perm, bf16* h, cudaStream_t s) {
  check_expert(w1, "w1");
  check_expert(w3, "w3");
  DSV4_CHECK((w1.codes != nullptr) == (w3.codes != nullptr) && w1.rows == w3.rows && w1.cols == w3.cols, "moe",
             "grouped: w1 and w3 differ in format or shape");
  launch_grouped<true>(xs, w1, w3, tiles, ntiles, max_tiles, tile_rows, offsets, limit, weight, perm, h, nullptr, s);
}

void moe_grouped_down_cuda(const bf16* h, const ExpertMatrix& w2, const int2* tiles, const int32_t* ntiles,
                           int max_tiles, int tile_rows, const int32_t* offsets, float* y, cudaStream_t s) {
  check_expert(w2, "w2");
  launch_grouped<false>(h, w2, w2, tiles, ntiles, max_tiles, tile_rows, offsets, 0.0f, nullptr, nullptr, nullptr, y, s);
}

}  // namespace dsv4::cuda
