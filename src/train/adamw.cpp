#include "train/adamw.h"

#include <cmath>

namespace dsv4 {

void adamw_step(Tensor& W, const Tensor& G, Tensor& m, Tensor& v, int64_t t, float lr,
                float weight_decay, const AdamWConfig& cfg) {
  DSV4_CHECK(G.shape == W.shape && m.shape == W.shape && v.shape == W.shape, "adamw", "weight ",
             shape_str(W.shape), ", gradient ", shape_str(G.shape), " and moments ",
             shape_str(m.shape), ", ", shape_str(v.shape), " must have one shape");
  DSV4_CHECK(t >= 1, "adamw", "step number ", t, " must be >= 1 (bias correction)");
  const float b1 = cfg.beta1, b2 = cfg.beta2, eps = cfg.eps;
  const float c1 = static_cast<float>(1.0 / (1.0 - std::pow(static_cast<double>(b1), static_cast<double>(t))));
  const float c2 = static_cast<float>(1.0 / (1.0 - std::pow(static_cast<double>(b2), static_cast<double>(t))));
  const float decay = 1.0f - lr * weight_decay;
  const int64_t N = W.numel();
  float *w = W.ptr(), *mp = m.ptr(), *vp = v.ptr();
  const float* g = G.ptr();
#pragma omp parallel for schedule(static) if (N > (1 << 16))
  for (int64_t i = 0; i < N; ++i) {
    mp[i] = b1 * mp[i] + (1.0f - b1) * g[i];
    vp[i] = b2 * vp[i] + (1.0f - b2) * g[i] * g[i];
    const float update = (mp[i] * c1) / (std::sqrt(vp[i] * c2) + eps);
    w[i] = w[i] * decay - lr * update;
  }
}

}  // namespace dsv4
