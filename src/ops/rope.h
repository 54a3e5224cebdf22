// rope: rotates the last R dims of a vector as R/2 adjacent (real, imag) pairs:
// pair i at position t is multiplied by exp(±i·θ_i(t)), θ_i(t) = fp32(fp32(t) · f_i).
// Frequencies f_i = 1 / b^(2i/R) (float32), optionally YaRN-scaled (model.md §4).
// backward: a rotation is orthogonal, so the gradient of rope(+θ) is the rotation by −θ
// (and that of the inverse rope the rotation by +θ): rope_backward.
#pragma once
#include <cstdint>
#include <vector>

namespace dsv4::ops {

struct YarnParams {
  float factor = 1.0f;
  float beta_fast = 32.0f;
  float beta_slow = 1.0f;
  int original_max_pos = 0;  // 0: no YaRN
};

// f_i for i < R/2.
std::vector<float> rope_frequencies(int R, float base, const YarnParams& yarn);

// x: the R rope dims of one vector (x[2i], x[2i+1] = pair i); inverse rotates by −θ.
// The angle is float32 in both precisions; sin and cos are taken in S.
template <class S>
void rope_apply(S* x, int R, const float* freqs, int64_t pos, bool inverse = false);

// Rotates `count` vectors of stride `stride` (the rope dims at offset `offset` of each).
template <class S>
void rope_apply_heads(S* x, int64_t count, int64_t stride, int64_t offset, int R,
                      const float* freqs, int64_t pos, bool inverse = false);

// dx: the gradient of rope_apply's output, turned in place into that of its input.
template <class S>
void rope_backward(S* dx, int R, const float* freqs, int64_t pos, bool inverse = false) {
  rope_apply(dx, R, freqs, pos, !inverse);
}

}  // namespace dsv4::ops
