#include "ops/mhc.h"

#include <cmath>
#include <vector>

#include "ops/linear.h"

namespace dsv4::ops {

static float sigmoid(float v) { return 1.0f / (1.0f + std::exp(-v)); }

void hc_mix(const float* X, int64_t T, const HcShape& s, const float* fn, int64_t rows, float* mix) {
  const int64_t nD = s.n * s.D;
  linear(X, T, nD, fn, rows, mix);
#pragma omp parallel for if (T > 16)
  for (int64_t t = 0; t < T; ++t) {
    const float* x = X + t * nD;
    float ss = 0.0f;
    for (int64_t i = 0; i < nD; ++i) ss += x[i] * x[i];
    float inv = 1.0f / std::sqrt(ss / static_cast<float>(nD) + s.eps);
    for (int64_t r = 0; r < rows; ++r) mix[t * rows + r] *= inv;
  }
}

void hc_split_sinkhorn(const float* mix, const float* base, const float* scale, const HcShape& s,
                       float* pre, float* post, float* comb) {
  const int64_t n = s.n;
  for (int64_t j = 0; j < n; ++j) {
    pre[j] = sigmoid(mix[j] * scale[0] + base[j]) + s.hc_eps;
    post[j] = 2.0f * sigmoid(mix[n + j] * scale[1] + base[n + j]);
  }
  float* C = comb;
  for (int64_t j = 0; j < n; ++j) {
    float mx = -INFINITY;
    for (int64_t k = 0; k < n; ++k) {
      C[j * n + k] = mix[2 * n + j * n + k] * scale[2] + base[2 * n + j * n + k];
      mx = std::max(mx, C[j * n + k]);
    }
    float sum = 0.0f;
    for (int64_t k = 0; k < n; ++k) sum += (C[j * n + k] = std::exp(C[j * n + k] - mx));
    for (int64_t k = 0; k < n; ++k) C[j * n + k] = C[j * n + k] / sum + s.hc_eps;
  }
  auto col_norm = [&] {
    for (int64_t k = 0; k < n; ++k) {
      float sum = 0.0f;
      for (int64_t j = 0; j < n; ++j) sum += C[j * n + k];
      for (int64_t j = 0; j < n; ++j) C[j * n + k] /= (sum + s.hc_eps);
    }
  };
  auto row_norm = [&] {
    for (int64_t j = 0; j < n; ++j) {
      float sum = 0.0f;
      for (int64_t k = 0; k < n; ++k) sum += C[j * n + k];
      for (int64_t k = 0; k < n; ++k) C[j * n + k] /= (sum + s.hc_eps);
    }
  };
  col_norm();
  for (int it = 1; it < s.sinkhorn_iters; ++it) {
    row_norm();
    col_norm();
  }
}

void hc_pre(const float* X, int64_t T, const HcShape& s, const float* fn, const float* base,
            const float* scale, float* y, float* pre, float* post, float* comb) {
  const int64_t n = s.n, D = s.D, rows = (2 + n) * n;
  std::vector<float> mix(T * rows);
  hc_mix(X, T, s, fn, rows, mix.data());
#pragma omp parallel for if (T > 4)
  for (int64_t t = 0; t < T; ++t) {
    hc_split_sinkhorn(&mix[t * rows], base, scale, s, pre + t * n, post + t * n, comb + t * n * n);
    float* yt = y + t * D;
    for (int64_t d = 0; d < D; ++d) yt[d] = 0.0f;
    for (int64_t j = 0; j < n; ++j) {
      const float* xj = X + (t * n + j) * D;
      float pj = pre[t * n + j];
      for (int64_t d = 0; d < D; ++d) yt[d] += pj * xj[d];
    }
  }
}

void hc_post(const float* X, const float* o, const float* post, const float* comb, int64_t T,
             const HcShape& s, float* Xout) {
  const int64_t n = s.n, D = s.D;
#pragma omp parallel for if (T > 4)
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t k = 0; k < n; ++k) {
      float* xo = Xout + (t * n + k) * D;
      float pk = post[t * n + k];
      const float* ot = o + t * D;
      for (int64_t d = 0; d < D; ++d) xo[d] = pk * ot[d];
      for (int64_t j = 0; j < n; ++j) {
        float c = comb[t * n * n + j * n + k];
        const float* xj = X + (t * n + j) * D;
        for (int64_t d = 0; d < D; ++d) xo[d] += c * xj[d];
      }
    }
  }
}

void hc_head(const float* X, int64_t T, const HcShape& s, const float* fn, const float* base,
             const float* scale, float* y) {
  const int64_t n = s.n, D = s.D;
  std::vector<float> mix(T * n);
  hc_mix(X, T, s, fn, n, mix.data());
#pragma omp parallel for if (T > 4)
  for (int64_t t = 0; t < T; ++t) {
    float* yt = y + t * D;
    for (int64_t d = 0; d < D; ++d) yt[d] = 0.0f;
    for (int64_t j = 0; j < n; ++j) {
      float pj = sigmoid(mix[t * n + j] * scale[0] + base[j]) + s.hc_eps;
      const float* xj = X + (t * n + j) * D;
      for (int64_t d = 0; d < D; ++d) yt[d] += pj * xj[d];
    }
  }
}

}  // namespace dsv4::ops
