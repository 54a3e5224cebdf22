#include "ops/moe.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/indexer.h"

namespace dsv4::ops {

void moe_scores(const float* logits, int64_t E, ScoringFunc f, float* p) {
  switch (f) {
    case ScoringFunc::Softmax: {
      float mx = *std::max_element(logits, logits + E), sum = 0.0f;
      for (int64_t e = 0; e < E; ++e) sum += (p[e] = std::exp(logits[e] - mx));
      for (int64_t e = 0; e < E; ++e) p[e] /= sum;
      break;
    }
    case ScoringFunc::Sigmoid:
      for (int64_t e = 0; e < E; ++e) p[e] = 1.0f / (1.0f + std::exp(-logits[e]));
      break;
    case ScoringFunc::SqrtSoftplus:
      // softplus(x) = log1p(e^x), computed stably for large x
      for (int64_t e = 0; e < E; ++e) {
        float x = logits[e];
        float sp = x > 20.0f ? x : std::log1p(std::exp(x));
        p[e] = std::sqrt(sp);
      }
      break;
  }
}

void moe_route(const float* p, const float* bias, int64_t E, int64_t k, const int64_t* hash_experts,
               ScoringFunc f, float routed_scale, int32_t* experts, float* weights) {
  if (hash_experts) {
    for (int64_t i = 0; i < k; ++i) experts[i] = static_cast<int32_t>(hash_experts[i]);
  } else {
    std::vector<float> biased(p, p + E);
    if (bias)
      for (int64_t e = 0; e < E; ++e) biased[e] += bias[e];
    std::vector<int32_t> top = topk_lower_index(biased.data(), E, k);
    // keep the order of decreasing biased score (the sum below is order-insensitive up to rounding)
    std::stable_sort(top.begin(), top.end(), [&](int32_t a, int32_t b) { return biased[a] > biased[b]; });
    for (int64_t i = 0; i < k; ++i) experts[i] = top[i];
  }
  float sum = 0.0f;
  for (int64_t i = 0; i < k; ++i) sum += (weights[i] = p[experts[i]]);
  for (int64_t i = 0; i < k; ++i) {
    if (f != ScoringFunc::Softmax) weights[i] /= sum;
    weights[i] *= routed_scale;
  }
}

void swiglu(const float* g, const float* u, int64_t F, float limit, float* h) {
  for (int64_t i = 0; i < F; ++i) {
    float gi = g[i], ui = u[i];
    if (limit > 0.0f) {
      ui = std::clamp(ui, -limit, limit);
      gi = std::min(gi, limit);
    }
    h[i] = gi / (1.0f + std::exp(-gi)) * ui;
  }
}

}  // namespace dsv4::ops
