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

using fp4::e8m0_factor1;
using fp4::e8m0_factor1_narrow;
using fp4::e8m0_factor2;

inline void check_expert(const ExpertMatrix& w, const char* what) {
  DSV4_CHECK((w.codes && w.scales) || w.w, "moe", what, ": no weights");
  DSV4_CHECK(w.cols % 32 == 0, "moe", what, ": ", w.cols, " columns, not a multiple of 32");
  DSV4_CHECK(!w.codes || w.rows % 16 == 0, "moe", what, ": ", w.rows, " rows of FP4 tiles, not a multiple of 16");
}

// The tiles' code words. A checkpoint word q holds columns 0 .. 7 of a group of 8, two codes a byte,
// low nibble first: byte i = columns 2i, 2i + 1. The products need each such pair as a bf16 pair
// of value e2m1 · 2^-126 (fp4_bf16.cuh): a nibble's bits 0 .. 2 at bf16 bits 6 .. 8 and its sign bit
// at 15, the odd column 16 bits up (the bits kPairBits). From q that takes three integer instructions
// a pair and a shift every two (e2m1_pair). A tile stores instead a word w from which each pair is
// one masked rotation of w, or the masked XOR of two: four rotations and four ANDs a word
// (tile_pairs). The map from w to the pairs is linear over GF(2) and invertible, so
// make_tile_encoder solves it once, at compile time, and fp4_tile_word writes w for q.
using fp4::kPairBits;
struct TilePairs {
  uint32_t p[4];  // p[i]: columns 2i, 2i + 1 as bf16 (e2m1 · 2^-126)
};
__host__ __device__ constexpr uint32_t rotl(uint32_t x, int r) { return x << r | x >> (32 - r); }  // 0 < r < 32
// Rotations by 2, 6, 8 and 12 read every bit of w at some position of kPairBits; these four
// combinations of them make the map invertible (an exhaustive search over four rotations found no
// form with fewer XORs, and three rotations cannot reach all 32 bits).
__host__ __device__ constexpr TilePairs tile_pairs(uint32_t w) {
  const uint32_t r2 = rotl(w, 2), r6 = rotl(w, 6), r8 = rotl(w, 8), r12 = rotl(w, 12);
  return {{w & kPairBits, r12 & kPairBits, (r2 ^ r6) & kPairBits, (r2 ^ r8) & kPairBits}};
}
// The pairs' bits back in the checkpoint's layout (pair i's 8 bits to byte i).
__host__ __device__ constexpr uint32_t gather_pairs(const TilePairs& t) {
  uint32_t q = 0;
  for (int i = 0; i < 4; ++i) {
    const uint32_t v = t.p[i];
    q |= ((v >> 6 & 7u) | (v >> 15 & 1u) << 3 | (v >> 22 & 7u) << 4 | (v >> 31) << 7) << (8 * i);
  }
  return q;
}
struct TileEncoder {
  uint32_t word[32];  // the tile word whose pairs gather to bit i of q alone
  bool invertible;
};
// Gauss-Jordan over GF(2) on the images of the 32 unit words (image[k] = gather_pairs(tile_pairs(
// word[k])) throughout), until image[i] is bit i.
constexpr TileEncoder make_tile_encoder() {
  TileEncoder e{};
  uint32_t image[32] = {};
  for (int k = 0; k < 32; ++k) {
    e.word[k] = 1u << k;
    image[k] = gather_pairs(tile_pairs(1u << k));
  }
  for (int i = 0; i < 32; ++i) {
    int k = i;
    while (k < 32 && !(image[k] >> i & 1u)) ++k;
    if (k == 32) return e;  // singular: invertible stays false
    const uint32_t ti = image[i], tw = e.word[i];
    image[i] = image[k], e.word[i] = e.word[k];
    image[k] = ti, e.word[k] = tw;
    for (int m = 0; m < 32; ++m)
      if (m != i && (image[m] >> i & 1u)) image[m] ^= image[i], e.word[m] ^= e.word[i];
  }
  e.invertible = true;
  return e;
}
inline constexpr TileEncoder kTileEncoder = make_tile_encoder();
static_assert(kTileEncoder.invertible, "tile_pairs must be invertible");
// The tile word of checkpoint word q (the XOR of the encoder's words for q's bits).
__host__ __device__ constexpr uint32_t fp4_tile_word(uint32_t q, const TileEncoder& e) {
  uint32_t w = 0;
  for (int i = 0; i < 32; ++i) w ^= e.word[i] & (0u - (q >> i & 1u));
  return w;
}
// Both maps are linear, so the 32 unit words decide every word.
constexpr bool tile_words_round_trip() {
  for (int i = 0; i < 32; ++i)
    if (gather_pairs(tile_pairs(fp4_tile_word(1u << i, kTileEncoder))) != 1u << i) return false;
  return true;
}
static_assert(tile_words_round_trip(), "fp4_tile_word must invert tile_pairs");

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
