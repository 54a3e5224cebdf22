// Device pieces shared by the two expert-product kernels (moe_experts.cu: few rows, decode;
// moe_grouped.cu: many rows, prefill), so that both compute the same products: FP4 codes
// decoded exactly to bf16, bf16 mma.sync with float32 accumulation, the same SwiGLU.
#pragma once
#include <cstdint>

#include "cuda/check.h"
#include "cuda/launch.h"
#include "ops/cuda_ops.h"
#include "ops/cuda_ptx.cuh"

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

// FP4 codes i and i + 4 of the word q (low nibble first) as a bf16 pair of value e2m1 · 2^-126:
// the nibble (s e1 e0 m) goes to bf16 bits 15 (sign), 8 7 (exponent) and 6 (mantissa). The multiply
// places a copy shifted for the magnitude and one shifted for the sign; they do not overlap.
template <int i>
__device__ __forceinline__ uint32_t e2m1_pair(uint32_t q) {
  const uint32_t v = i < 2 ? q : q >> 8;
  constexpr int j = i & 1;
  constexpr uint32_t kNibbles = 0x000f000fu << (4 * j);
  constexpr uint32_t kPlace = (1u << (6 - 4 * j)) + (1u << (12 - 4 * j));
  return ((v & kNibbles) * kPlace) & 0x81c081c0u;
}
// 2^(e − 127) in both halves (a biased exponent e in 1..254).
__device__ __forceinline__ uint32_t bf16x2_pow2(uint32_t biased_exp) { return (biased_exp << 7) * 0x10001u; }
// An E8M0 byte b scales a decoded pair (e2m1 · 2^-126) by 2^(b − 1) = f1 · f2: f1 = 2^(min(b, 128) − 1)
// is a bf16 (one exact multiply); f2 = 2^(b − 128) only for b > 128 (else 1).
__device__ __forceinline__ uint32_t e8m0_factor1(uint32_t b) { return bf16x2_pow2(min(b, 128u) + 126u); }
__device__ __forceinline__ uint32_t e8m0_factor2(uint32_t b) { return bf16x2_pow2(b > 128u ? b - 1u : 127u); }


inline void check_expert(const ExpertMatrix& w, const char* what) {
  DSV4_CHECK((w.codes && w.scales) || w.w, "moe", what, ": no weights");
  DSV4_CHECK(w.cols % 32 == 0, "moe", what, ": ", w.cols, " columns, not a multiple of 32");
}

}  // namespace dsv4::cuda::expert
