// FP4 (e2m1) codes and their E8M0 scales to exact bf16 in registers: a pair of codes placed as a
// bf16 pair of value e2m1 · 2^-126 (the bits kPairBits), then one bf16x2 multiply by the scale.
// The scale factors serve every FP4 product. e2m1_pair places a pair from a checkpoint word in
// three integer instructions: the indexer's scores use it (indexer.cu, indexer_wgmma.cu), a pair
// holding codes i and i + 4 of the word, so the other operand takes the same K order. The expert
// tiles store re-encoded words that place a pair in two (moe_experts.cuh's tile_pairs).
#pragma once
#include <cstdint>

namespace dsv4::cuda::fp4 {

// Where a bf16 pair of value e2m1 · 2^-126 has its bits: sign 15, exponent 8 7, mantissa 6 (and 16 up).
inline constexpr uint32_t kPairBits = 0x81c081c0u;
// FP4 codes i and i + 4 of the word q (low nibble first) as a bf16 pair of value e2m1 · 2^-126:
// the nibble (s e1 e0 m) goes to bf16 bits 15 (sign), 8 7 (exponent) and 6 (mantissa). The multiply
// places a copy shifted for the magnitude and one shifted for the sign; they do not overlap.
template <int i>
__device__ __forceinline__ uint32_t e2m1_pair(uint32_t q) {
  const uint32_t v = i < 2 ? q : q >> 8;
  constexpr int j = i & 1;
  constexpr uint32_t kNibbles = 0x000f000fu << (4 * j);
  constexpr uint32_t kPlace = (1u << (6 - 4 * j)) + (1u << (12 - 4 * j));
  return ((v & kNibbles) * kPlace) & kPairBits;
}
// 2^(e − 127) in both halves (a biased exponent e in 1..254).
__device__ __forceinline__ uint32_t bf16x2_pow2(uint32_t biased_exp) { return (biased_exp << 7) * 0x10001u; }
// An E8M0 byte b scales a decoded pair (e2m1 · 2^-126) by 2^(b − 1) = f1 · f2: f1 = 2^(min(b, 128) − 1)
// is a bf16 (one exact multiply); f2 = 2^(b − 128) only for b > 128 (else 1).
__device__ __forceinline__ uint32_t e8m0_factor1(uint32_t b) { return bf16x2_pow2(min(b, 128u) + 126u); }
__device__ __forceinline__ uint32_t e8m0_factor2(uint32_t b) { return bf16x2_pow2(b > 128u ? b - 1u : 127u); }
// e8m0_factor1 of a byte known to be at most 128 (no min): bf16x2_pow2(b + 126) as one multiply-add.
__device__ __forceinline__ uint32_t e8m0_factor1_narrow(uint32_t b) { return b * 0x00800080u + 126u * 0x00800080u; }

}  // namespace dsv4::cuda::fp4
