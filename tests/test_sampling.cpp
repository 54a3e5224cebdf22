// Sampler: greedy, temperature, top-k, top-p, min-p, repetition penalty, seeded draws.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "core/error.h"
#include "infer/sampling.h"

namespace dsv4 {
namespace {

std::vector<float> random_logits(int V, uint64_t seed, float scale = 2.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> z(V);
  for (float& v : z) v = nd(rng);
  return z;
}

// Logits whose softmax is exactly `probs`.
std::vector<float> logits_of(const std::vector<double>& probs) {
  std::vector<float> z;
  for (double p : probs) z.push_back(static_cast<float>(std::log(p)));
  return z;
}

// softmax(z / T) in double, independent of the sampler's code.
std::vector<double> softmax(const std::vector<float>& z, double T) {
  double m = *std::max_element(z.begin(), z.end()) / T, sum = 0;
  std::vector<double> p(z.size());
  for (size_t i = 0; i < z.size(); ++i) sum += p[i] = std::exp(z[i] / T - m);
  for (double& v : p) v /= sum;
  return p;
}

std::vector<int> kept(const std::vector<double>& dist) {
  std::vector<int> ids;
  for (size_t i = 0; i < dist.size(); ++i)
    if (dist[i] > 0) ids.push_back(static_cast<int>(i));
  return ids;
}

SamplingParams with(float temperature, int top_k = 0, float top_p = 1, float min_p = 0, uint64_t seed = 0) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_k = top_k;
  p.top_p = top_p;
  p.min_p = min_p;
  p.seed = seed;
  return p;
}

TEST(Sampling, GreedyIsArgmaxWithTiesToTheLowerId) {
  Sampler s(with(0));
  for (uint64_t seed = 0; seed < 20; ++seed) {
    std::vector<float> z = random_logits(300, seed);
    EXPECT_EQ(s.sample(z), std::max_element(z.begin(), z.end()) - z.begin());
  }
  EXPECT_EQ(s.sample(std::vector<float>{1, 5, 2, 5}), 1);
  std::vector<double> d = s.distribution(std::vector<float>{1, 5, 2, 5});
  EXPECT_EQ(d, (std::vector<double>{0, 1, 0, 0}));
}

TEST(Sampling, TopKOneIsGreedy) {
  for (uint64_t seed = 0; seed < 20; ++seed) {
    Sampler s(with(1.5f, 1, 1, 0, seed));
    std::vector<float> z = random_logits(100, 100 + seed, 0.1f);  // flat: a real draw would wander
    for (int i = 0; i < 5; ++i) EXPECT_EQ(s.sample(z), std::max_element(z.begin(), z.end()) - z.begin());
  }
}

TEST(Sampling, TopKKeepsTheKLargestWithSoftmaxAmongThem) {
  std::vector<float> z = random_logits(50, 3);
  Sampler s(with(0.8f, 5));
  std::vector<double> d = s.distribution(z);
  std::vector<int> order(z.size());
  for (size_t i = 0; i < z.size(); ++i) order[i] = static_cast<int>(i);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return z[a] > z[b]; });
  std::vector<int> top(order.begin(), order.begin() + 5);
  std::sort(top.begin(), top.end());
  EXPECT_EQ(kept(d), top);
  std::vector<double> full = softmax(z, 0.8f);  // the sampler divides by the float 0.8f
  double mass = 0;
  for (int id : top) mass += full[id];
  for (int id : top) EXPECT_NEAR(d[id], full[id] / mass, 1e-12);
}

TEST(Sampling, TopPKeepsTheSmallestSetReachingP) {
  // probabilities 0.4, 0.3, 0.2, 0.1 (ids shuffled so order is by value, not by id)
  std::vector<float> z = logits_of({0.2, 0.4, 0.1, 0.3});
  EXPECT_EQ(kept(Sampler(with(1, 0, 0.35f)).distribution(z)), (std::vector<int>{1}));
  EXPECT_EQ(kept(Sampler(with(1, 0, 0.45f)).distribution(z)), (std::vector<int>{1, 3}));
  EXPECT_EQ(kept(Sampler(with(1, 0, 0.69f)).distribution(z)), (std::vector<int>{1, 3}));
  EXPECT_EQ(kept(Sampler(with(1, 0, 0.71f)).distribution(z)), (std::vector<int>{0, 1, 3}));
  EXPECT_EQ(kept(Sampler(with(1, 0, 0.95f)).distribution(z)), (std::vector<int>{0, 1, 2, 3}));
  std::vector<double> d = Sampler(with(1, 0, 0.71f)).distribution(z);
  EXPECT_NEAR(d[1], 0.4 / 0.9, 1e-6);
  EXPECT_NEAR(d[3], 0.3 / 0.9, 1e-6);
  EXPECT_NEAR(d[0], 0.2 / 0.9, 1e-6);
}

TEST(Sampling, MinPDropsTokensBelowAFractionOfTheTopProbability) {
  std::vector<float> z = logits_of({0.1, 0.5, 0.15, 0.25});
  // threshold = min_p · 0.5
  EXPECT_EQ(kept(Sampler(with(1, 0, 1, 0.19f)).distribution(z)), (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(kept(Sampler(with(1, 0, 1, 0.21f)).distribution(z)), (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(kept(Sampler(with(1, 0, 1, 0.35f)).distribution(z)), (std::vector<int>{1, 3}));
  EXPECT_EQ(kept(Sampler(with(1, 0, 1, 0.9f)).distribution(z)), (std::vector<int>{1}));
  // Relative to the max after temperature: T = 0.5 squares the ratios (0.25/0.5 → 0.25).
  EXPECT_EQ(kept(Sampler(with(0.5f, 0, 1, 0.3f)).distribution(z)), (std::vector<int>{1}));
}

// The sampler ranks only as many tokens as its cuts keep. Against the definitions applied to a
// whole ranking (a stable sort, written here): the same tokens kept and the same probabilities,
// over a large vocabulary with ties and masked tokens, and cuts that fall past the first ranks.
std::vector<double> by_whole_ranking(const std::vector<float>& logits, const SamplingParams& sp) {
  const double T = sp.temperature;
  std::vector<int> order;
  for (size_t i = 0; i < logits.size(); ++i)
    if (logits[i] != -std::numeric_limits<float>::infinity()) order.push_back(static_cast<int>(i));
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] / T > logits[b] / T; });
  if (sp.top_k > 0 && order.size() > static_cast<size_t>(sp.top_k)) order.resize(sp.top_k);
  std::vector<double> q(order.size());
  double sum = 0;
  for (size_t r = 0; r < order.size(); ++r) sum += q[r] = std::exp(logits[order[r]] / T - logits[order[0]] / T);
  size_t keep = order.size();
  double mass = 0;
  for (size_t r = 0; sp.top_p < 1 && r < order.size(); ++r)
    if ((mass += q[r] / sum) >= sp.top_p) {
      keep = r + 1;
      break;
    }
  size_t r = 1;
  while (sp.min_p > 0 && r < keep && q[r] >= sp.min_p * q[0]) ++r;
  if (sp.min_p > 0) keep = r;
  std::vector<double> probs(logits.size(), 0.0);
  double kept_mass = 0;
  for (size_t i = 0; i < keep; ++i) kept_mass += q[i];
  for (size_t i = 0; i < keep; ++i) probs[order[i]] = q[i] / kept_mass;
  return probs;
}

TEST(Sampling, PartialRankingMatchesTheWholeRanking) {
  const int V = 50000;
  std::vector<float> z = random_logits(V, 11, 3.0f);
  for (int i = 0; i < V; i += 97) z[i] = z[i + 1];  // ties
  for (int i = 5; i < V; i += 101) z[i] = -std::numeric_limits<float>::infinity();
  std::vector<float> flat = random_logits(V, 12, 0.3f);  // top-p cuts past thousands of ranks
  for (const std::vector<float>* logits : {&z, &flat})
    for (float T : {0.5f, 1.0f, 2.0f})
      for (int k : {0, 7, 3000})
        for (float top_p : {1.0f, 0.3f, 0.9f, 0.999f})
          for (float min_p : {0.0f, 0.01f, 0.5f}) {
            const SamplingParams sp = with(T, k, top_p, min_p);
            const std::vector<double> got = Sampler(sp).distribution(*logits), want = by_whole_ranking(*logits, sp);
            const std::string what = "T " + std::to_string(T) + " k " + std::to_string(k) + " top-p " +
                                     std::to_string(top_p) + " min-p " + std::to_string(min_p);
            ASSERT_EQ(kept(got), kept(want)) << what;
            for (int id : kept(want)) ASSERT_NEAR(got[id], want[id], 1e-12 * want[id]) << what;
          }
}

TEST(Sampling, SameSeedSameDrawsOtherSeedOtherDraws) {
  std::vector<float> z = random_logits(64, 9, 0.5f);
  auto draws = [&](uint64_t seed) {
    Sampler s(with(1.0f, 0, 0.95f, 0.01f, seed));
    std::vector<int32_t> out;
    for (int i = 0; i < 200; ++i) out.push_back(s.sample(z));
    return out;
  };
  EXPECT_EQ(draws(42), draws(42));
  EXPECT_NE(draws(42), draws(43));
}

TEST(Sampling, EmpiricalFrequenciesMatchSoftmaxOverTemperature) {
  const int V = 10, N = 40000;
  for (float T : {0.5f, 1.0f, 2.0f}) {
    std::vector<float> z = random_logits(V, 17, 1.0f);
    std::vector<double> p = softmax(z, T);
    Sampler s(with(T, 0, 1, 0, 1234));
    std::vector<int> count(V, 0);
    for (int i = 0; i < N; ++i) ++count[s.sample(z)];
    for (int id = 0; id < V; ++id) {
      // Binomial(N, p): 5 standard deviations (a false failure has probability ~1e-6 per cell).
      const double mean = N * p[id], sd = std::sqrt(N * p[id] * (1 - p[id]));
      EXPECT_NEAR(count[id], mean, 5 * sd + 1) << "T " << T << " token " << id;
    }
  }
}

TEST(Sampling, RepetitionPenaltyLowersSeenTokens) {
  SamplingParams p = with(1.0f);
  p.repeat_penalty = 2.0f;
  Sampler s(p);
  std::vector<float> z = {3.0f, -1.0f, 0.5f, 2.0f};
  const std::vector<int32_t> seen = {0, 1, 1};
  std::vector<float> pen = s.penalized(z, seen);
  EXPECT_FLOAT_EQ(pen[0], 1.5f);   // positive: divided
  EXPECT_FLOAT_EQ(pen[1], -2.0f);  // negative: multiplied, once however often seen
  EXPECT_FLOAT_EQ(pen[2], 0.5f);
  EXPECT_FLOAT_EQ(pen[3], 2.0f);
  std::vector<double> before = softmax(z, 1), after = s.distribution(z, seen);
  EXPECT_LT(after[0], before[0]);
  EXPECT_LT(after[1], before[1]);
  EXPECT_GT(after[3], before[3]);
  // Greedy now prefers the unseen token 3.
  p.temperature = 0;
  EXPECT_EQ(Sampler(p).sample(z, seen), 3);
  // repeat_last_n = 1 looks only at the last seen id (1): token 0 keeps its logit.
  p.repeat_last_n = 1;
  EXPECT_FLOAT_EQ(Sampler(p).penalized(z, seen)[0], 3.0f);
  EXPECT_FLOAT_EQ(Sampler(p).penalized(z, seen)[1], -2.0f);
}

TEST(Sampling, MaskedTokensAreNeverDrawn) {
  const float ninf = -std::numeric_limits<float>::infinity();
  std::vector<float> z = {ninf, 0.0f, ninf, 0.1f};
  Sampler s(with(5.0f, 0, 1, 0, 3));
  for (int i = 0; i < 500; ++i) {
    int32_t id = s.sample(z);
    EXPECT_TRUE(id == 1 || id == 3);
  }
  EXPECT_EQ(Sampler(with(0)).sample(std::vector<float>{ninf, ninf, -5.0f}), 2);
}

TEST(Sampling, BadInputIsAClearError) {
  auto error_of = [](auto f) -> std::string {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "<no error>";
  };
  EXPECT_NE(error_of([] { Sampler(with(-1)); }).find("temperature must be >= 0"), std::string::npos);
  EXPECT_NE(error_of([] { Sampler(with(1, -2)); }).find("top-k"), std::string::npos);
  EXPECT_NE(error_of([] { Sampler(with(1, 0, 0)); }).find("top-p must be in (0, 1]"), std::string::npos);
  EXPECT_NE(error_of([] { Sampler(with(1, 0, 1, 1.5f)); }).find("min-p"), std::string::npos);
  EXPECT_NE(error_of([] {
              SamplingParams p;
              p.repeat_penalty = 0;
              Sampler{p};
            }).find("repeat penalty"),
            std::string::npos);
  const float ninf = -std::numeric_limits<float>::infinity();
  EXPECT_NE(error_of([&] { Sampler(with(1)).sample(std::vector<float>{ninf, ninf}); }).find("every token is masked"),
            std::string::npos);
  EXPECT_NE(error_of([] { Sampler(with(1)).sample(std::vector<float>{0, NAN}); }).find("NaN"), std::string::npos);
  EXPECT_NE(error_of([] { Sampler(with(1)).sample(std::vector<float>{}); }).find("empty"), std::string::npos);
  SamplingParams p;
  p.repeat_penalty = 1.3f;
  EXPECT_NE(error_of([&] { Sampler(p).sample(std::vector<float>{0, 1}, std::vector<int32_t>{5}); })
                .find("outside the vocabulary"),
            std::string::npos);
}

}  // namespace
}  // namespace dsv4
