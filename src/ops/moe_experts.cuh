// Device pieces shared by the two expert-product kernels (moe_experts.cu: few rows, decode;
// moe_grouped.cu: many rows, prefill), so that both compute the same products: FP4 codes
// decoded exactly to bf16, bf16 mma.sync with float32 accumulation, the same SwiGLU.
#pragma once
#include <cstdint>

#include "cuda/check.h"
#include "cuda/launch.h"
#include "ops/cuda_ops.h"
#include "ops/cuda_ptx.cuh"
#include "ops/fp4_bf16.cuh"

namespace dsv4::cuda::expert {

using ptx::mma_bf16;
using ptx::mul_bf16x2;

// silu(min(g, λ)) · clamp(u, ±λ) in float32 (λ = 0: no clamp), model.md §9.
__device__ __forceinline__ float swiglu_value(float g, float u, float limit) {
  if (limit > 0.0f) {
    u = fminf(fmaxf(u, -limit), limit);
    g = fminf(g, limit);
  }
  return g / (1.0f + expf(-g)) * u;
}

using fp4::e2m1_pair;
using fp4::e8m0_factor1;
using fp4::e8m0_factor1_narrow;
using fp4::e8m0_factor2;

inline void check_expert(const ExpertMatrix& w, const char* what) {
  DSV4_CHECK((w.codes && w.scales) || w.w, "moe", what, ": no weights");
  DSV4_CHECK(w.cols % 32 == 0, "moe", what, ": ", w.cols, " columns, not a multiple of 32");
  DSV4_CHECK(!w.codes || w.rows % 16 == 0, "moe", what, ": ", w.rows, " rows of FP4 tiles, not a multiple of 16");
}

// A code word of the checkpoint (columns 0 .. 7 of its group of 8, two codes a byte, low nibble
// first) in the tiles' pair order: the even columns 0, 2, 4, 6 in nibbles 0 .. 3 and the odd ones
// in nibbles 4 .. 7, so that e2m1_pair<i> decodes columns 2i and 2i + 1, a bf16 pair in column
// order: the other operand of a product (activations, or a tile in shared memory) needs no byte
// permutes.
__host__ __device__ constexpr uint32_t fp4_pair_order(uint32_t q) {
  uint32_t r = 0;
  for (int c = 0; c < 8; ++c) r |= ((q >> (4 * c)) & 15u) << (4 * ((c & 1) * 4 + (c >> 1)));
  return r;
}
static_assert(fp4_pair_order(0x76543210u) == 0x75316420u, "even columns first, then odd");

// Where weight row `row` (experts stacked: e · rows + n) starts in the FP4 tiles (cuda_ops.h): its
// codes of columns 0 .. 127 and its 4 scale bytes of them; columns c .. c + 31 (c % 32 == 0) are
// then at tile_codes_at and tile_scale_at from there.
__device__ __forceinline__ int64_t tile_codes_row(int64_t row, int K) {
  return ((row >> 4) * (fp4_tiled_cols(K) >> 7)) * 1024 + (row & 15) * 64;
}
__device__ __forceinline__ int64_t tile_scales_row(int64_t row, int K) {
  return ((row >> 4) * (fp4_tiled_cols(K) >> 7)) * 64 + (row & 15) * 4;
}
__device__ __forceinline__ int tile_codes_at(int col) { return (col >> 7) * 1024 + ((col & 127) >> 1); }
__device__ __forceinline__ int tile_scale_at(int col) { return (col >> 7) * 64 + ((col & 127) >> 5); }

}  // namespace dsv4::cuda::expert
