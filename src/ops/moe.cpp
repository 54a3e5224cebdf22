#include "ops/moe.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/indexer.h"

namespace dsv4::ops {

template <class S>
void moe_scores(const S* logits, int64_t E, ScoringFunc f, std::type_identity_t<S>* p) {
  switch (f) {
    case ScoringFunc::Softmax: {
      S mx = *std::max_element(logits, logits + E), sum = 0;
      for (int64_t e = 0; e < E; ++e) sum += (p[e] = std::exp(logits[e] - mx));
      for (int64_t e = 0; e < E; ++e) p[e] /= sum;
      break;
    }
    case ScoringFunc::Sigmoid:
      for (int64_t e = 0; e < E; ++e) p[e] = S(1) / (S(1) + std::exp(-logits[e]));
      break;
    case ScoringFunc::SqrtSoftplus:
      // softplus(x) = log1p(e^x), computed stably for large x
      for (int64_t e = 0; e < E; ++e) {
        S x = logits[e];
        S sp = x > S(20) ? x : std::log1p(std::exp(x));
        p[e] = std::sqrt(sp);
      }
      break;
  }
}

template <class S>
void moe_scores_backward(const S* logits, int64_t E, ScoringFunc f, const std::type_identity_t<S>* dp,
                         std::type_identity_t<S>* dlogits) {
  std::vector<S> p(E);
  moe_scores(logits, E, f, p.data());
  switch (f) {
    case ScoringFunc::Softmax: {
      S pdp = 0;
      for (int64_t e = 0; e < E; ++e) pdp += p[e] * dp[e];
      for (int64_t e = 0; e < E; ++e) dlogits[e] = p[e] * (dp[e] - pdp);
      break;
    }
    case ScoringFunc::Sigmoid:
      for (int64_t e = 0; e < E; ++e) dlogits[e] = dp[e] * p[e] * (S(1) - p[e]);
      break;
    case ScoringFunc::SqrtSoftplus:
      // d sqrt(sp)/dx = sp'(x) / (2 sqrt(sp)), sp' = sigmoid(x) (1 on the linear branch x > 20)
      for (int64_t e = 0; e < E; ++e) {
        const S x = logits[e];
        const S dsp = x > S(20) ? S(1) : S(1) / (S(1) + std::exp(-x));
        dlogits[e] = p[e] > 0 ? dp[e] * dsp / (S(2) * p[e]) : S(0);
      }
      break;
  }
}

template <class S>
void moe_route(const S* p, const std::type_identity_t<S>* bias, int64_t E, int64_t k, const int64_t* hash_experts,
               ScoringFunc f, float routed_scale, int32_t* experts, std::type_identity_t<S>* weights) {
  if (hash_experts) {
    for (int64_t i = 0; i < k; ++i) experts[i] = static_cast<int32_t>(hash_experts[i]);
  } else {
    std::vector<S> biased(p, p + E);
    if (bias)
      for (int64_t e = 0; e < E; ++e) biased[e] += bias[e];
    std::vector<int32_t> top = topk_lower_index(biased.data(), E, k);
    // keep the order of decreasing biased score (the sum below is order-insensitive up to rounding)
    std::stable_sort(top.begin(), top.end(), [&](int32_t a, int32_t b) { return biased[a] > biased[b]; });
    for (int64_t i = 0; i < k; ++i) experts[i] = top[i];
  }
  S sum = 0;
  for (int64_t i = 0; i < k; ++i) sum += (weights[i] = p[experts[i]]);
  for (int64_t i = 0; i < k; ++i) {
    if (f != ScoringFunc::Softmax) weights[i] /= sum;
    weights[i] *= routed_scale;
  }
}

template <class S>
void moe_route_backward(const S* p, int64_t k, const int32_t* experts, ScoringFunc f, float routed_scale,
                        const std::type_identity_t<S>* dweights, std::type_identity_t<S>* dp) {
  if (f == ScoringFunc::Softmax) {
    for (int64_t i = 0; i < k; ++i) dp[experts[i]] += dweights[i] * routed_scale;
    return;
  }
  // w_i = c · p_i / Σ p:  dp_i = c · (dw_i − Σ_j dw_j p_j / Σ p) / Σ p
  S sum = 0, wdw = 0;
  for (int64_t i = 0; i < k; ++i) sum += p[experts[i]];
  for (int64_t i = 0; i < k; ++i) wdw += dweights[i] * p[experts[i]];
  for (int64_t i = 0; i < k; ++i) dp[experts[i]] += routed_scale * (dweights[i] - wdw / sum) / sum;
}

template <class S>
void swiglu(const S* g, const std::type_identity_t<S>* u, int64_t F, float limit, std::type_identity_t<S>* h) {
  for (int64_t i = 0; i < F; ++i) {
    S gi = g[i], ui = u[i];
    if (limit > 0.0f) {
      ui = std::clamp(ui, S(-limit), S(limit));
      gi = std::min(gi, S(limit));
    }
    h[i] = gi / (S(1) + std::exp(-gi)) * ui;
  }
}

template <class S>
void swiglu_backward(const S* g, const std::type_identity_t<S>* u, int64_t F, float limit,
                     const std::type_identity_t<S>* dh, std::type_identity_t<S>* dg, std::type_identity_t<S>* du) {
  for (int64_t i = 0; i < F; ++i) {
    S gi = g[i], ui = u[i];
    bool g_live = true, u_live = true;
    if (limit > 0.0f) {
      g_live = gi <= S(limit);
      u_live = ui >= S(-limit) && ui <= S(limit);
      ui = std::clamp(ui, S(-limit), S(limit));
      gi = std::min(gi, S(limit));
    }
    const S sig = S(1) / (S(1) + std::exp(-gi));
    const S silu = gi * sig;
    const S dsilu = sig * (S(1) + gi * (S(1) - sig));
    dg[i] = g_live ? dh[i] * ui * dsilu : S(0);
    du[i] = u_live ? dh[i] * silu : S(0);
  }
}

#define DSV4_MOE(S)                                                                                          \
  template void moe_scores<S>(const S*, int64_t, ScoringFunc, S*);                                           \
  template void moe_scores_backward<S>(const S*, int64_t, ScoringFunc, const S*, S*);                        \
  template void moe_route<S>(const S*, const S*, int64_t, int64_t, const int64_t*, ScoringFunc, float,       \
                             int32_t*, S*);                                                                  \
  template void moe_route_backward<S>(const S*, int64_t, const int32_t*, ScoringFunc, float, const S*, S*);  \
  template void swiglu<S>(const S*, const S*, int64_t, float, S*);                                           \
  template void swiglu_backward<S>(const S*, const S*, int64_t, float, const S*, S*, S*);
DSV4_MOE(float)
DSV4_MOE(double)

}  // namespace dsv4::ops
