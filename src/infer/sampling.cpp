#include "infer/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.h"

namespace dsv4 {

namespace {

constexpr const char* kWhere = "sampling";

// The ranking of tokens: larger z first, ties to the lower index (a total order on indices).
struct Before {
  const std::vector<double>& z;
  bool operator()(int32_t a, int32_t b) const { return z[a] > z[b] || (z[a] == z[b] && a < b); }
};

// The first m tokens of `ids` in the ranking, in order: a selection, then a sort of only those
// (a whole sort of a 129K-token vocabulary took ~20 ms a token; bench/results/2026-11-30-sampling.md).
std::vector<int32_t> first_ranked(std::vector<int32_t> ids, size_t m, const Before& before) {
  if (m < ids.size()) {
    std::nth_element(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(m), ids.end(), before);
    ids.resize(m);
  }
  std::sort(ids.begin(), ids.end(), before);
  return ids;
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

  // The first of the largest: greedy's token, and the softmax's maximum (a positive temperature
  // keeps the order). Greedy needs no temperature: z / 0 is not defined, the argmax is.
  constexpr float kMasked = -std::numeric_limits<float>::infinity();
  int32_t best = -1;
  for (size_t i = 0; i < V; ++i)
    if (pen[i] != kMasked && (best < 0 || pen[i] > pen[best])) best = static_cast<int32_t>(i);
  DSV4_CHECK(best >= 0, kWhere, "every token is masked (all logits are -inf)");
  std::vector<double> probs(V, 0.0);
  if (params_.temperature == 0) {
    probs[best] = 1.0;
    return probs;
  }
  const double T = params_.temperature;
  std::vector<double> z(V);
  std::vector<int32_t> ids;  // the finite tokens, in index order
  ids.reserve(V);
  for (size_t i = 0; i < V; ++i) {
    z[i] = static_cast<double>(pen[i]) / T;
    if (pen[i] != kMasked) ids.push_back(static_cast<int32_t>(i));
  }
  const Before before{z};
  bool ranked = false;  // ids in ranking order
  if (params_.top_k > 0 && ids.size() > static_cast<size_t>(params_.top_k)) {
    ids = first_ranked(std::move(ids), static_cast<size_t>(params_.top_k), before);
    ranked = true;
  }

  // Softmax over the kept tokens (best holds the maximum): p(i) = exp(z_i − z_best) / sum.
  std::vector<double> e(V);
  double sum = 0;
  for (int32_t id : ids) sum += e[id] = std::exp(z[id] - z[best]);
  auto p = [&](int32_t id) { return e[id] / sum; };

  // top-p and min-p look at the ranking only as far as they keep tokens: rank the first m, and
  // more (4 m) while the cuts have not fallen inside them.
  std::vector<int32_t> order = ranked ? ids : std::vector<int32_t>{};
  size_t keep = ids.size();
  if (params_.top_p < 1 || params_.min_p > 0) {
    for (size_t m = std::min<size_t>(ids.size(), 1024);; m = std::min(ids.size(), 4 * m)) {
      if (!ranked) order = first_ranked(ids, m, before);
      size_t cut = m;  // tokens kept by top-p, if decided within m
      bool decided = m == ids.size();
      if (params_.top_p < 1) {
        double mass = 0;
        for (size_t r = 0; r < m; ++r) {
          mass += p(order[r]);
          if (mass >= params_.top_p) {
            cut = r + 1;
            decided = true;
            break;
          }
        }
      }
      if (params_.min_p > 0 && (decided || params_.top_p >= 1)) {
        const double threshold = params_.min_p * p(order[0]);
        size_t r = 1;
        while (r < cut && p(order[r]) >= threshold) ++r;
        decided = decided || r < cut;
        cut = r;  // p is non-increasing along `order`
      }
      if (decided) {
        keep = cut;
        break;
      }
    }
  }

  // The kept tokens: a prefix of the ranking, or every finite token (then in index order).
  const std::vector<int32_t>& kept_ids = keep < ids.size() || ranked ? order : ids;
  double kept = 0;
  for (size_t r = 0; r < keep; ++r) kept += p(kept_ids[r]);
  for (size_t r = 0; r < keep; ++r) probs[kept_ids[r]] = p(kept_ids[r]) / kept;
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
