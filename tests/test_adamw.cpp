// AdamW: one step against a scalar float64 implementation (moments, bias correction,
// decoupled decay, ε), the first step's sign-descent property, and the no-decay case.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "train/adamw.h"

using namespace dsv4;

namespace {

constexpr double kEps32 = std::numeric_limits<float>::epsilon();

// One AdamW step in plain double loops: the formulas of training.md §3 one by one.
void reference_adamw(std::vector<double>& W, const std::vector<double>& G, std::vector<double>& m,
                     std::vector<double>& v, int64_t t, double lr, double lambda, double b1, double b2,
                     double eps) {
  for (size_t i = 0; i < W.size(); ++i) {
    m[i] = b1 * m[i] + (1 - b1) * G[i];
    v[i] = b2 * v[i] + (1 - b2) * G[i] * G[i];
    const double mhat = m[i] / (1 - std::pow(b1, t)), vhat = v[i] / (1 - std::pow(b2, t));
    W[i] = W[i] * (1 - lr * lambda) - lr * mhat / (std::sqrt(vhat) + eps);
  }
}

std::vector<double> to64(const std::vector<float>& v) { return {v.begin(), v.end()}; }

struct Case {
  int64_t t;
  float lambda, eps;
};

}  // namespace

// Elementwise, each quantity goes through a handful of float32 roundings: the moments
// through 3 (two products, a sum: ≤ 2·eps32 of their terms' magnitudes), the update
// through ~8 (bias corrections, sqrt, division) where no term cancels, so 16·eps32 relative
// to the update's size is a bound with margin; W itself adds one rounding of |W|.
TEST(AdamW, StepMatchesScalarFloat64Reference) {
  const Case cases[] = {{1, 0.1f, 1e-8f}, {7, 0.1f, 1e-8f}, {3, 0.0f, 1e-20f}, {1000, 0.1f, 1e-20f}};
  for (const Case& c : cases) {
    SCOPED_TRACE("t=" + std::to_string(c.t) + " lambda=" + std::to_string(c.lambda));
    std::mt19937_64 rng(c.t);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::uniform_real_distribution<float> ud(0.0f, 1.0f);
    Tensor W({6, 7}), G({6, 7}), m({6, 7}), v({6, 7});
    for (float& x : W.data) x = nd(rng);
    for (float& x : G.data) x = nd(rng);
    for (float& x : m.data) x = 0.3f * nd(rng);
    for (float& x : v.data) x = ud(rng);  // a second moment is non-negative
    AdamWConfig cfg;
    cfg.eps = c.eps;
    const float lr = 0.01f;
    std::vector<double> W64 = to64(W.data), m64 = to64(m.data), v64 = to64(v.data);
    const std::vector<float> w0 = W.data, m0 = m.data, v0 = v.data;
    reference_adamw(W64, to64(G.data), m64, v64, c.t, lr, c.lambda, cfg.beta1, cfg.beta2, cfg.eps);
    adamw_step(W, G, m, v, c.t, lr, c.lambda, cfg);
    for (int64_t i = 0; i < W.numel(); ++i) {
      const double g = std::abs(G[i]);
      EXPECT_NEAR(m[i], m64[i], 2 * kEps32 * (cfg.beta1 * std::abs(m0[i]) + (1 - cfg.beta1) * g)) << i;
      EXPECT_NEAR(v[i], v64[i], 2 * kEps32 * (cfg.beta2 * v0[i] + (1 - cfg.beta2) * g * g)) << i;
      const double update = std::abs(w0[i] * (1.0 - lr * c.lambda) - W64[i]);
      EXPECT_NEAR(W[i], W64[i], 16 * kEps32 * update + kEps32 * std::abs(W64[i])) << i;
    }
  }
}

// With bias correction the first step from zero moments is m̂/sqrt(v̂) = g/|g|: every
// weight moves by lr against its gradient's sign (up to ε), whatever the gradient's scale.
TEST(AdamW, FirstStepIsSignDescent) {
  Tensor W({5}), G({5}), m({5}), v({5});
  const float grads[5] = {3.0f, -1e-3f, 250.0f, -7.5f, 0.02f};
  for (int i = 0; i < 5; ++i) G[i] = grads[i];
  const float lr = 0.01f;
  adamw_step(W, G, m, v, 1, lr, 0.0f, AdamWConfig{});
  for (int i = 0; i < 5; ++i) {
    const double want = grads[i] > 0 ? -lr : lr;
    // ε/|g| ≤ 1e-5 relative from ε = 1e-8, plus a few float32 roundings
    EXPECT_NEAR(W[i], want, lr * (1e-5 + 8 * kEps32)) << i;
  }
}

// A zero gradient from zero moments leaves only the decay: W(1 − ηλ), exactly; with the
// V4 ε = 1e-20 too (0/(0 + ε) = 0, no NaN). Without decay W does not move at all.
TEST(AdamW, ZeroGradientLeavesOnlyTheDecay) {
  for (float lambda : {0.1f, 0.0f}) {
    Tensor W({4}), G({4}), m({4}), v({4});
    for (int i = 0; i < 4; ++i) W[i] = 1.0f + i;
    AdamWConfig cfg;
    cfg.eps = 1e-20f;
    adamw_step(W, G, m, v, 1, 0.5f, lambda, cfg);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(W[i], (1.0f + i) * (1.0f - 0.5f * lambda)) << i;
  }
}

TEST(AdamW, RejectsBadInput) {
  Tensor W({3}), G({4}), m({3}), v({3});
  EXPECT_THROW(adamw_step(W, G, m, v, 1, 0.1f, 0.0f, AdamWConfig{}), Error);
  Tensor G3({3});
  EXPECT_THROW(adamw_step(W, G3, m, v, 0, 0.1f, 0.0f, AdamWConfig{}), Error);  // t starts at 1
}
