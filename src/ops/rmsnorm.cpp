#include "ops/rmsnorm.h"

#include <cmath>
#include <vector>

namespace dsv4::ops {

template <class S>
void rmsnorm(const S* x, int64_t T, int64_t D, const std::type_identity_t<S>* w, float eps,
             std::type_identity_t<S>* y) {
#pragma omp parallel for if (T * D > 65536)
  for (int64_t t = 0; t < T; ++t) {
    const S* xt = x + t * D;
    S* yt = y + t * D;
    S ss = 0;
    for (int64_t i = 0; i < D; ++i) ss += xt[i] * xt[i];
    S inv = S(1) / std::sqrt(ss / static_cast<S>(D) + eps);
    for (int64_t i = 0; i < D; ++i) yt[i] = (w ? w[i] : S(1)) * (xt[i] * inv);
  }
}

template <class S>
void rmsnorm_backward(const S* x, int64_t T, int64_t D, const std::type_identity_t<S>* w, float eps,
                      const std::type_identity_t<S>* dy, std::type_identity_t<S>* dx, std::type_identity_t<S>* dw) {
  std::vector<S> inv(T);
#pragma omp parallel for if (T * D > 65536)
  for (int64_t t = 0; t < T; ++t) {
    const S *xt = x + t * D, *gt = dy + t * D;
    S ss = 0, gx = 0;
    for (int64_t i = 0; i < D; ++i) {
      ss += xt[i] * xt[i];
      gx += (w ? w[i] : S(1)) * gt[i] * xt[i];
    }
    const S r = S(1) / std::sqrt(ss / static_cast<S>(D) + eps);
    inv[t] = r;
    // the norm's own dependence on x: d r / d x_i = −r³ x_i / D
    const S c = r * r * r * gx / static_cast<S>(D);
    S* dxt = dx + t * D;
    for (int64_t i = 0; i < D; ++i) dxt[i] += r * (w ? w[i] : S(1)) * gt[i] - c * xt[i];
  }
  if (dw)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < D; ++i) dw[i] += dy[t * D + i] * x[t * D + i] * inv[t];
}

#define DSV4_RMSNORM(S)                                                                    \
  template void rmsnorm<S>(const S*, int64_t, int64_t, const S*, float, S*);               \
  template void rmsnorm_backward<S>(const S*, int64_t, int64_t, const S*, float, const S*, S*, S*);
DSV4_RMSNORM(float)
DSV4_RMSNORM(double)

}  // namespace dsv4::ops
