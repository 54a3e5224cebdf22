#include "ops/quant.h"

#include <algorithm>
#include <cmath>

#include "core/dtype.h"
#include "core/error.h"

namespace dsv4::ops {

void fp8_sim(float* x, int64_t n, int64_t block) {
  const float inv_max = 1.0f / 448.0f;
  for (int64_t b0 = 0; b0 < n; b0 += block) {
    int64_t b1 = std::min(n, b0 + block);
    float amax = 1e-4f;
    for (int64_t i = b0; i < b1; ++i) amax = std::max(amax, std::fabs(x[i]));
    float s = pow2_ceil(amax * inv_max);
    for (int64_t i = b0; i < b1; ++i) x[i] = round_e4m3(std::clamp(x[i] / s, -448.0f, 448.0f)) * s;
  }
}

void fp4_sim(float* x, int64_t n, int64_t block) {
  const float inv_max = 1.0f / 6.0f;
  const float amin = 6.0f * std::ldexp(1.0f, -126);
  for (int64_t b0 = 0; b0 < n; b0 += block) {
    int64_t b1 = std::min(n, b0 + block);
    float amax = amin;
    for (int64_t i = b0; i < b1; ++i) amax = std::max(amax, std::fabs(x[i]));
    float s = pow2_ceil(amax * inv_max);
    for (int64_t i = b0; i < b1; ++i) x[i] = round_e2m1(std::clamp(x[i] / s, -6.0f, 6.0f)) * s;
  }
}

template <class S>
void hadamard(S* x, int64_t d) {
  DSV4_CHECK(d > 0 && (d & (d - 1)) == 0, "hadamard", "size ", d, " is not a power of two");
  // Fast Walsh–Hadamard transform in Sylvester order: x · H_d (H_d is symmetric).
  for (int64_t h = 1; h < d; h *= 2)
    for (int64_t i = 0; i < d; i += 2 * h)
      for (int64_t j = i; j < i + h; ++j) {
        S a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
  const S scale = static_cast<S>(1.0 / std::sqrt(static_cast<double>(d)));
  for (int64_t i = 0; i < d; ++i) x[i] *= scale;
}

template void hadamard<float>(float*, int64_t);
template void hadamard<double>(double*, int64_t);

}  // namespace dsv4::ops
