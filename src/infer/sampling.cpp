#include "infer/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.h"

namespace dsv4 {

namespace {

constexpr const char* kWhere = "sampling";

// Indices of the finite entries of z, largest first, ties to the lower index.
std::vector<int32_t> ranked(const std::vector<double>& z) {
  std::vector<int32_t> order;
  order.reserve(z.size());
  for (size_t i = 0; i < z.size(); ++i)
    if (z[i] != -std::numeric_limits<double>::infinity()) order.push_back(static_cast<int32_t>(i));
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return z[a] > z[b]; });
  return order;
}

}  // namespace

void SamplingParams::validate() const {
  DSV4_CHECK(std::isfinite(temperature) && temperature >= 0, kWhere, "temperature must be >= 0 (0: greedy), found ",
             temperature);
  DSV4_CHECK(top_k >= 0, kWhere, "top-k must be >= 0 (0: off), found ", top_k);
  DSV4_CHECK(top_p > 0 && top_p <= 1, kWhere, "top-p must be in (0, 1] (1: off), found ", top_p);
  DSV4_CHECK(min_p >= 0 && min_p <= 1, kWhere, "min-p must be in [0, 1] (0: off), found ", min_p);
  DSV4_CHECK(std::isfinite(repeat_penalty) && repeat_penalty > 0, kWhere,
             "repeat penalty must be > 0 (1: off), found ", repeat_penalty);
  DSV4_CHECK(repeat_last_n >= 0, kWhere, "repeat-last-n must be >= 0 (0: every seen token), found ", repeat_last_n);
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) { params_.validate(); }

std::vector<float> Sampler::penalized(std::span<const float> logits, std::span<const int32_t> seen) const {
  std::vector<float> z(logits.begin(), logits.end());
  if (params_.repeat_penalty == 1.0f) return z;
  const int64_t V = static_cast<int64_t>(z.size());
  size_t first = 0;
  if (params_.repeat_last_n > 0 && seen.size() > static_cast<size_t>(params_.repeat_last_n))
    first = seen.size() - params_.repeat_last_n;
  std::vector<bool> done(z.size(), false);  // a token seen twice is penalized once
  for (size_t i = first; i < seen.size(); ++i) {
    const int32_t id = seen[i];
    DSV4_CHECK(id >= 0 && id < V, kWhere, "seen token id ", id, " is outside the vocabulary [0, ", V, ")");
    if (done[id]) continue;
    done[id] = true;
    z[id] = z[id] > 0 ? z[id] / params_.repeat_penalty : z[id] * params_.repeat_penalty;
  }
  return z;
}

std::vector<double> Sampler::distribution(std::span<const float> logits, std::span<const int32_t> seen) const {
  DSV4_CHECK(!logits.empty(), kWhere, "empty logits row");
  const std::vector<float> pen = penalized(logits, seen);
  const size_t V = pen.size();
  for (size_t i = 0; i < V; ++i)
    DSV4_CHECK(!std::isnan(pen[i]) && pen[i] != std::numeric_limits<float>::infinity(), kWhere, "logit of token ", i,
               " is ", pen[i], ": the model produced NaN or +inf");

  // Greedy needs no temperature: z / 0 is not defined, the argmax is.
  const double T = params_.temperature > 0 ? params_.temperature : 1.0;
  std::vector<double> z(V);
  for (size_t i = 0; i < V; ++i) z[i] = static_cast<double>(pen[i]) / T;
  std::vector<int32_t> order = ranked(z);
  DSV4_CHECK(!order.empty(), kWhere, "every token is masked (all logits are -inf)");

  std::vector<double> probs(V, 0.0);
  if (params_.temperature == 0) {
    probs[order[0]] = 1.0;
    return probs;
  }
  if (params_.top_k > 0 && order.size() > static_cast<size_t>(params_.top_k)) order.resize(params_.top_k);

  // Softmax over the kept tokens (order[0] holds the maximum).
  std::vector<double> p(order.size());
  double sum = 0;
  for (size_t r = 0; r < order.size(); ++r) sum += p[r] = std::exp(z[order[r]] - z[order[0]]);
  for (double& v : p) v /= sum;

  size_t keep = order.size();
  if (params_.top_p < 1) {
    double mass = 0;
    for (size_t r = 0; r < order.size(); ++r) {
      mass += p[r];
      if (mass >= params_.top_p) {
        keep = r + 1;
        break;
      }
    }
  }
  if (params_.min_p > 0) {
    const double threshold = params_.min_p * p[0];
    size_t r = 1;
    while (r < keep && p[r] >= threshold) ++r;
    keep = r;  // p is non-increasing along `order`
  }

  double kept = 0;
  for (size_t r = 0; r < keep; ++r) kept += p[r];
  for (size_t r = 0; r < keep; ++r) probs[order[r]] = p[r] / kept;
  return probs;
}

int32_t Sampler::sample(std::span<const float> logits, std::span<const int32_t> seen) {
  const std::vector<double> probs = distribution(logits, seen);
  if (params_.temperature == 0) return static_cast<int32_t>(std::max_element(probs.begin(), probs.end()) - probs.begin());
  // 53 random bits → u in [0, 1), the same on every standard library (unlike
  // std::uniform_real_distribution, whose algorithm is implementation-defined).
  const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53;
  double cum = 0;
  int32_t last = -1;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] == 0) continue;
    last = static_cast<int32_t>(i);
    cum += probs[i];
    if (u < cum) return last;
  }
  return last;  // u fell past the rounded total: the last kept token
}

}  // namespace dsv4
