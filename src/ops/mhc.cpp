#include "ops/mhc.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/linear.h"

namespace dsv4::ops {

namespace {

template <class S> S sigmoid(S v) { return S(1) / (S(1) + std::exp(-v)); }

// Which scale a row of the mix uses: 0 for pre, 1 for post, 2 for comb.
int64_t scale_group(int64_t r, int64_t n) { return r < n ? 0 : r < 2 * n ? 1 : 2; }

template <class S> void col_norm(S* C, int64_t n, float hc_eps) {
  for (int64_t k = 0; k < n; ++k) {
    S sum = 0;
    for (int64_t j = 0; j < n; ++j) sum += C[j * n + k];
    for (int64_t j = 0; j < n; ++j) C[j * n + k] /= (sum + hc_eps);
  }
}
template <class S> void row_norm(S* C, int64_t n, float hc_eps) {
  for (int64_t j = 0; j < n; ++j) {
    S sum = 0;
    for (int64_t k = 0; k < n; ++k) sum += C[j * n + k];
    for (int64_t k = 0; k < n; ++k) C[j * n + k] /= (sum + hc_eps);
  }
}
// out = in / (sum + ε) along columns (or rows): turns g = dout into din, given in.
template <class S> void norm_backward(const S* in, S* g, int64_t n, float hc_eps, bool columns) {
  for (int64_t a = 0; a < n; ++a) {
    auto at = [&](int64_t b) { return columns ? b * n + a : a * n + b; };
    S sum = 0, gin = 0;
    for (int64_t b = 0; b < n; ++b) {
      sum += in[at(b)];
      gin += g[at(b)] * in[at(b)];
    }
    const S inv = S(1) / (sum + hc_eps);
    for (int64_t b = 0; b < n; ++b) g[at(b)] = g[at(b)] * inv - gin * inv * inv;
  }
}

}  // namespace

template <class S>
void hc_mix(const S* X, int64_t T, const HcShape& s, const HcT<S>* fn, int64_t rows, HcT<S>* mix) {
  const int64_t nD = s.n * s.D;
  linear(X, T, nD, fn, rows, mix);
#pragma omp parallel for if (T > 16)
  for (int64_t t = 0; t < T; ++t) {
    const S* x = X + t * nD;
    S ss = 0;
    for (int64_t i = 0; i < nD; ++i) ss += x[i] * x[i];
    S inv = S(1) / std::sqrt(ss / static_cast<S>(nD) + s.eps);
    for (int64_t r = 0; r < rows; ++r) mix[t * rows + r] *= inv;
  }
}

template <class S>
void hc_mix_backward(const S* X, int64_t T, const HcShape& s, const HcT<S>* fn, int64_t rows, const HcT<S>* dmix,
                     HcT<S>* dX, HcT<S>* dfn) {
  const int64_t nD = s.n * s.D;
  std::vector<S> raw(T * rows), draw(T * rows), inv(T), dinv(T);
  linear(X, T, nD, fn, rows, raw.data());
#pragma omp parallel for if (T > 16)
  for (int64_t t = 0; t < T; ++t) {
    const S* x = X + t * nD;
    S ss = 0;
    for (int64_t i = 0; i < nD; ++i) ss += x[i] * x[i];
    inv[t] = S(1) / std::sqrt(ss / static_cast<S>(nD) + s.eps);
    dinv[t] = 0;
    for (int64_t r = 0; r < rows; ++r) {
      draw[t * rows + r] = dmix[t * rows + r] * inv[t];
      dinv[t] += dmix[t * rows + r] * raw[t * rows + r];
    }
  }
  linear_backward(X, T, nD, fn, rows, draw.data(), dX, dfn);
  // the norm's own dependence on x: d inv / d x_i = −inv³ x_i / (n·D)
#pragma omp parallel for if (T > 16)
  for (int64_t t = 0; t < T; ++t) {
    const S c = dinv[t] * inv[t] * inv[t] * inv[t] / static_cast<S>(nD);
    for (int64_t i = 0; i < nD; ++i) dX[t * nD + i] -= c * X[t * nD + i];
  }
}

template <class S>
void hc_split_sinkhorn(const S* mix, const HcT<S>* base, const HcT<S>* scale, const HcShape& s, HcT<S>* pre,
                       HcT<S>* post, HcT<S>* comb) {
  const int64_t n = s.n;
  for (int64_t j = 0; j < n; ++j) {
    pre[j] = sigmoid(mix[j] * scale[0] + base[j]) + s.hc_eps;
    post[j] = S(2) * sigmoid(mix[n + j] * scale[1] + base[n + j]);
  }
  S* C = comb;
  for (int64_t j = 0; j < n; ++j) {
    S mx = -INFINITY;
    for (int64_t k = 0; k < n; ++k) {
      C[j * n + k] = mix[2 * n + j * n + k] * scale[2] + base[2 * n + j * n + k];
      mx = std::max(mx, C[j * n + k]);
    }
    S sum = 0;
    for (int64_t k = 0; k < n; ++k) sum += (C[j * n + k] = std::exp(C[j * n + k] - mx));
    for (int64_t k = 0; k < n; ++k) C[j * n + k] = C[j * n + k] / sum + s.hc_eps;
  }
  col_norm(C, n, s.hc_eps);
  for (int it = 1; it < s.sinkhorn_iters; ++it) {
    row_norm(C, n, s.hc_eps);
    col_norm(C, n, s.hc_eps);
  }
}

template <class S>
void hc_split_sinkhorn_backward(const S* mix, const HcT<S>* base, const HcT<S>* scale, const HcShape& s,
                                const HcT<S>* dpre, const HcT<S>* dpost, const HcT<S>* dcomb, HcT<S>* dlogit) {
  const int64_t n = s.n;
  for (int64_t j = 0; j < n; ++j) {
    const S gp = sigmoid(mix[j] * scale[0] + base[j]);
    const S gq = sigmoid(mix[n + j] * scale[1] + base[n + j]);
    dlogit[j] = dpre ? dpre[j] * gp * (S(1) - gp) : S(0);
    dlogit[n + j] = dpost ? dpost[j] * S(2) * gq * (S(1) - gq) : S(0);
  }
  S* dL = dlogit + 2 * n;
  if (!dcomb) {
    for (int64_t i = 0; i < n * n; ++i) dL[i] = 0;
    return;
  }
  // Forward again, keeping the input of every normalization (columns first, then row/column pairs).
  std::vector<S> P(n * n);
  for (int64_t j = 0; j < n; ++j) {
    S mx = -INFINITY;
    for (int64_t k = 0; k < n; ++k) mx = std::max(mx, mix[2 * n + j * n + k] * scale[2] + base[2 * n + j * n + k]);
    S sum = 0;
    for (int64_t k = 0; k < n; ++k)
      sum += (P[j * n + k] = std::exp(mix[2 * n + j * n + k] * scale[2] + base[2 * n + j * n + k] - mx));
    for (int64_t k = 0; k < n; ++k) P[j * n + k] /= sum;
  }
  const int stages = 2 * s.sinkhorn_iters - 1;
  std::vector<S> inputs(static_cast<size_t>(stages) * n * n), C(n * n);
  for (int64_t i = 0; i < n * n; ++i) C[i] = P[i] + s.hc_eps;
  for (int st = 0; st < stages; ++st) {
    std::copy(C.begin(), C.end(), inputs.begin() + st * n * n);
    const bool columns = st % 2 == 0;
    if (columns) col_norm(C.data(), n, s.hc_eps);
    else row_norm(C.data(), n, s.hc_eps);
  }
  std::vector<S> g(dcomb, dcomb + n * n);
  for (int st = stages - 1; st >= 0; --st) norm_backward(&inputs[st * n * n], g.data(), n, s.hc_eps, st % 2 == 0);
  // row softmax: dL = P ⊙ (g − Σ_k P g)
  for (int64_t j = 0; j < n; ++j) {
    S pg = 0;
    for (int64_t k = 0; k < n; ++k) pg += P[j * n + k] * g[j * n + k];
    for (int64_t k = 0; k < n; ++k) dL[j * n + k] = P[j * n + k] * (g[j * n + k] - pg);
  }
}

template <class S>
void hc_pre(const S* X, int64_t T, const HcShape& s, const HcT<S>* fn, const HcT<S>* base, const HcT<S>* scale,
            HcT<S>* y, HcT<S>* pre, HcT<S>* post, HcT<S>* comb) {
  const int64_t n = s.n, D = s.D, rows = (2 + n) * n;
  std::vector<S> mix(T * rows);
  hc_mix(X, T, s, fn, rows, mix.data());
#pragma omp parallel for if (T > 4)
  for (int64_t t = 0; t < T; ++t) {
    hc_split_sinkhorn(&mix[t * rows], base, scale, s, pre + t * n, post + t * n, comb + t * n * n);
    S* yt = y + t * D;
    for (int64_t d = 0; d < D; ++d) yt[d] = 0;
    for (int64_t j = 0; j < n; ++j) {
      const S* xj = X + (t * n + j) * D;
      S pj = pre[t * n + j];
      for (int64_t d = 0; d < D; ++d) yt[d] += pj * xj[d];
    }
  }
}

template <class S>
void hc_pre_backward(const S* X, int64_t T, const HcShape& s, const HcT<S>* fn, const HcT<S>* base,
                     const HcT<S>* scale, const HcT<S>* dy, const HcT<S>* dpost, const HcT<S>* dcomb, HcT<S>* dX,
                     HcT<S>* dfn, HcT<S>* dbase, HcT<S>* dscale) {
  const int64_t n = s.n, D = s.D, rows = (2 + n) * n;
  std::vector<S> mix(T * rows), dlogit(T * rows);
  hc_mix(X, T, s, fn, rows, mix.data());
#pragma omp parallel for if (T > 4)
  for (int64_t t = 0; t < T; ++t) {
    std::vector<S> pre(n), post(n), comb(n * n), dpre(n);
    hc_split_sinkhorn(&mix[t * rows], base, scale, s, pre.data(), post.data(), comb.data());
    const S* dyt = dy + t * D;
    for (int64_t j = 0; j < n; ++j) {
      const S* xj = X + (t * n + j) * D;
      S* dxj = dX + (t * n + j) * D;
      S acc = 0;
      for (int64_t d = 0; d < D; ++d) {
        acc += dyt[d] * xj[d];
        dxj[d] += pre[j] * dyt[d];
      }
      dpre[j] = acc;
    }
    hc_split_sinkhorn_backward(&mix[t * rows], base, scale, s, dpre.data(), dpost + t * n, dcomb + t * n * n,
                               &dlogit[t * rows]);
  }
  std::vector<S> dmix(T * rows);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t r = 0; r < rows; ++r) {
      const S dl = dlogit[t * rows + r];
      const int64_t g = scale_group(r, n);
      dbase[r] += dl;
      dscale[g] += dl * mix[t * rows + r];
      dmix[t * rows + r] = dl * scale[g];
    }
  hc_mix_backward(X, T, s, fn, rows, dmix.data(), dX, dfn);
}

template <class S>
void hc_post(const S* X, const HcT<S>* o, const HcT<S>* post, const HcT<S>* comb, int64_t T, const HcShape& s,
             HcT<S>* Xout) {
  const int64_t n = s.n, D = s.D;
#pragma omp parallel for if (T > 4)
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t k = 0; k < n; ++k) {
      S* xo = Xout + (t * n + k) * D;
      S pk = post[t * n + k];
      const S* ot = o + t * D;
      for (int64_t d = 0; d < D; ++d) xo[d] = pk * ot[d];
      for (int64_t j = 0; j < n; ++j) {
        S c = comb[t * n * n + j * n + k];
        const S* xj = X + (t * n + j) * D;
        for (int64_t d = 0; d < D; ++d) xo[d] += c * xj[d];
      }
    }
  }
}

template <class S>
void hc_post_backward(const S* X, const HcT<S>* o, const HcT<S>* post, const HcT<S>* comb, int64_t T,
                      const HcShape& s, const HcT<S>* dXout, HcT<S>* dX, HcT<S>* d_o, HcT<S>* dpost,
                      HcT<S>* dcomb) {
  const int64_t n = s.n, D = s.D;
#pragma omp parallel for if (T > 4)
  for (int64_t t = 0; t < T; ++t) {
    const S* ot = o + t * D;
    S* dot = d_o + t * D;
    for (int64_t d = 0; d < D; ++d) dot[d] = 0;
    for (int64_t k = 0; k < n; ++k) {
      const S* g = dXout + (t * n + k) * D;
      const S pk = post[t * n + k];
      S acc = 0;
      for (int64_t d = 0; d < D; ++d) {
        acc += g[d] * ot[d];
        dot[d] += pk * g[d];
      }
      dpost[t * n + k] = acc;
      for (int64_t j = 0; j < n; ++j) {
        const S* xj = X + (t * n + j) * D;
        S* dxj = dX + (t * n + j) * D;
        const S c = comb[t * n * n + j * n + k];
        S cj = 0;
        for (int64_t d = 0; d < D; ++d) {
          cj += g[d] * xj[d];
          dxj[d] += c * g[d];
        }
        dcomb[t * n * n + j * n + k] = cj;
      }
    }
  }
}

template <class S>
void hc_head(const S* X, int64_t T, const HcShape& s, const HcT<S>* fn, const HcT<S>* base, const HcT<S>* scale,
             HcT<S>* y) {
  const int64_t n = s.n, D = s.D;
  std::vector<S> mix(T * n);
  hc_mix(X, T, s, fn, n, mix.data());
#pragma omp parallel for if (T > 4)
  for (int64_t t = 0; t < T; ++t) {
    S* yt = y + t * D;
    for (int64_t d = 0; d < D; ++d) yt[d] = 0;
    for (int64_t j = 0; j < n; ++j) {
      S pj = sigmoid(mix[t * n + j] * scale[0] + base[j]) + s.hc_eps;
      const S* xj = X + (t * n + j) * D;
      for (int64_t d = 0; d < D; ++d) yt[d] += pj * xj[d];
    }
  }
}

template <class S>
void hc_head_backward(const S* X, int64_t T, const HcShape& s, const HcT<S>* fn, const HcT<S>* base,
                      const HcT<S>* scale, const HcT<S>* dy, HcT<S>* dX, HcT<S>* dfn, HcT<S>* dbase,
                      HcT<S>* dscale) {
  const int64_t n = s.n, D = s.D;
  std::vector<S> mix(T * n), dlogit(T * n);
  hc_mix(X, T, s, fn, n, mix.data());
#pragma omp parallel for if (T > 4)
  for (int64_t t = 0; t < T; ++t) {
    const S* dyt = dy + t * D;
    for (int64_t j = 0; j < n; ++j) {
      const S g = sigmoid(mix[t * n + j] * scale[0] + base[j]);
      const S pj = g + s.hc_eps;
      const S* xj = X + (t * n + j) * D;
      S* dxj = dX + (t * n + j) * D;
      S acc = 0;
      for (int64_t d = 0; d < D; ++d) {
        acc += dyt[d] * xj[d];
        dxj[d] += pj * dyt[d];
      }
      dlogit[t * n + j] = acc * g * (S(1) - g);
    }
  }
  std::vector<S> dmix(T * n);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < n; ++j) {
      dbase[j] += dlogit[t * n + j];
      dscale[0] += dlogit[t * n + j] * mix[t * n + j];
      dmix[t * n + j] = dlogit[t * n + j] * scale[0];
    }
  hc_mix_backward(X, T, s, fn, n, dmix.data(), dX, dfn);
}

#define DSV4_MHC(S)                                                                                                \
  template void hc_mix<S>(const S*, int64_t, const HcShape&, const S*, int64_t, S*);                               \
  template void hc_mix_backward<S>(const S*, int64_t, const HcShape&, const S*, int64_t, const S*, S*, S*);        \
  template void hc_split_sinkhorn<S>(const S*, const S*, const S*, const HcShape&, S*, S*, S*);                    \
  template void hc_split_sinkhorn_backward<S>(const S*, const S*, const S*, const HcShape&, const S*, const S*,    \
                                              const S*, S*);                                                       \
  template void hc_pre<S>(const S*, int64_t, const HcShape&, const S*, const S*, const S*, S*, S*, S*, S*);        \
  template void hc_pre_backward<S>(const S*, int64_t, const HcShape&, const S*, const S*, const S*, const S*,      \
                                   const S*, const S*, S*, S*, S*, S*);                                            \
  template void hc_post<S>(const S*, const S*, const S*, const S*, int64_t, const HcShape&, S*);                   \
  template void hc_post_backward<S>(const S*, const S*, const S*, const S*, int64_t, const HcShape&, const S*,     \
                                    S*, S*, S*, S*);                                                               \
  template void hc_head<S>(const S*, int64_t, const HcShape&, const S*, const S*, const S*, S*);                   \
  template void hc_head_backward<S>(const S*, int64_t, const HcShape&, const S*, const S*, const S*, const S*,     \
                                    S*, S*, S*, S*);
DSV4_MHC(float)
DSV4_MHC(double)

}  // namespace dsv4::ops
