#include "ops/rmsnorm.h"

#include <cmath>

namespace dsv4::ops {

void rmsnorm(const float* x, int64_t T, int64_t D, const float* w, float eps, float* y) {
#pragma omp parallel for if (T * D > 65536)
  for (int64_t t = 0; t < T; ++t) {
    const float* xt = x + t * D;
    float* yt = y + t * D;
    float ss = 0.0f;
    for (int64_t i = 0; i < D; ++i) ss += xt[i] * xt[i];
    float inv = 1.0f / std::sqrt(ss / static_cast<float>(D) + eps);
    for (int64_t i = 0; i < D; ++i) yt[i] = (w ? w[i] : 1.0f) * (xt[i] * inv);
  }
}

}  // namespace dsv4::ops
