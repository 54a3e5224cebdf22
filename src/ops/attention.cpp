#include "ops/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace dsv4::ops {

template <class S>
void sink_attention(const S* q, int64_t H, int64_t Dh, const std::type_identity_t<S>* kv, int64_t S_len,
                    const std::type_identity_t<S>* sink, float scale, std::type_identity_t<S>* o) {
  std::vector<S> s(S_len);
  for (int64_t h = 0; h < H; ++h) {
    const S* qh = q + h * Dh;
    S mx = sink[h];
    for (int64_t j = 0; j < S_len; ++j) {
      const S* v = kv + j * Dh;
      S dot = 0;
      for (int64_t i = 0; i < Dh; ++i) dot += qh[i] * v[i];
      s[j] = dot * scale;
      mx = std::max(mx, s[j]);
    }
    S den = std::exp(sink[h] - mx);
    S* oh = o + h * Dh;
    for (int64_t i = 0; i < Dh; ++i) oh[i] = 0;
    for (int64_t j = 0; j < S_len; ++j) {
      S p = std::exp(s[j] - mx);
      den += p;
      const S* v = kv + j * Dh;
      for (int64_t i = 0; i < Dh; ++i) oh[i] += p * v[i];
    }
    S inv = S(1) / den;
    for (int64_t i = 0; i < Dh; ++i) oh[i] *= inv;
  }
}

template <class S>
S sink_attention_probs(const S* q, int64_t Dh, const std::type_identity_t<S>* kv, int64_t S_len,
                          std::type_identity_t<S> sink, float scale, std::type_identity_t<S>* p) {
  S mx = sink;
  for (int64_t j = 0; j < S_len; ++j) {
    const S* v = kv + j * Dh;
    S dot = 0;
    for (int64_t i = 0; i < Dh; ++i) dot += q[i] * v[i];
    p[j] = dot * scale;
    mx = std::max(mx, p[j]);
  }
  S den = std::exp(sink - mx);
  for (int64_t j = 0; j < S_len; ++j) den += (p[j] = std::exp(p[j] - mx));
  for (int64_t j = 0; j < S_len; ++j) p[j] /= den;
  return std::exp(sink - mx) / den;
}

template <class S>
void sink_attention_backward(const S* q, int64_t H, int64_t Dh, const std::type_identity_t<S>* kv, int64_t S_len,
                             const std::type_identity_t<S>* sink, float scale, const std::type_identity_t<S>* d_o,
                             std::type_identity_t<S>* dq, std::type_identity_t<S>* dkv,
                             std::type_identity_t<S>* dsink) {
  std::vector<S> p(S_len), dp(S_len);
  for (int64_t h = 0; h < H; ++h) {
    const S *qh = q + h * Dh, *doh = d_o + h * Dh;
    const S p_sink = sink_attention_probs(qh, Dh, kv, S_len, sink[h], scale, p.data());
    S pdp = 0;  // Σ p_j dp_j
    for (int64_t j = 0; j < S_len; ++j) {
      const S* v = kv + j * Dh;
      S dot = 0;
      for (int64_t i = 0; i < Dh; ++i) dot += doh[i] * v[i];
      dp[j] = dot;
      pdp += p[j] * dot;
    }
    // the sink is one more logit whose value vector is zero: dp_sink = 0
    dsink[h] += -p_sink * pdp;
    S* dqh = dq + h * Dh;
    for (int64_t j = 0; j < S_len; ++j) {
      const S ds = p[j] * (dp[j] - pdp) * scale;
      const S* v = kv + j * Dh;
      S* dv = dkv + j * Dh;
      for (int64_t i = 0; i < Dh; ++i) {
        dqh[i] += ds * v[i];
        dv[i] += ds * qh[i] + p[j] * doh[i];
      }
    }
  }
}

#define DSV4_ATTENTION(S)                                                                                         \
  template void sink_attention<S>(const S*, int64_t, int64_t, const S*, int64_t, const S*, float, S*);            \
  template S sink_attention_probs<S>(const S*, int64_t, const S*, int64_t, S, float, S*);                         \
  template void sink_attention_backward<S>(const S*, int64_t, int64_t, const S*, int64_t, const S*, float,        \
                                           const S*, S*, S*, S*);
DSV4_ATTENTION(float)
DSV4_ATTENTION(double)

}  // namespace dsv4::ops
