// Per-op tests against the spec's math on hand-checkable inputs (model.md §3–§9).
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>

#include "core/dtype.h"
#include "core/error.h"
#include "ops/attention.h"
#include "ops/compressor.h"
#include "ops/indexer.h"
#include "ops/mhc.h"
#include "ops/moe.h"
#include "ops/quant.h"
#include "ops/rope.h"

using namespace dsv4;

TEST(Mhc, SinkhornYieldsADoublyStochasticMatrix) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int n : {1, 2, 4, 6}) {
    // Enough iterations for Sinkhorn to converge on these inputs; the model's 20 are
    // checked below to leave a smaller row error than 2.
    ops::HcShape s{n, 8, 1e-6f, 1e-6f, 200};
    std::vector<float> mix((2 + n) * n), base((2 + n) * n), scale = {0.7f, 1.3f, 2.0f};
    for (auto& v : mix) v = nd(rng);
    for (auto& v : base) v = nd(rng);
    std::vector<float> pre(n), post(n), comb(n * n);
    ops::hc_split_sinkhorn(mix.data(), base.data(), scale.data(), s, pre.data(), post.data(), comb.data());
    for (int j = 0; j < n; ++j) {
      float row = 0, col = 0;
      for (int k = 0; k < n; ++k) {
        row += comb[j * n + k];
        col += comb[k * n + j];
        EXPECT_GE(comb[j * n + k], 0.0f);
      }
      EXPECT_NEAR(row, 1.0f, 1e-4f) << "n=" << n;
      EXPECT_NEAR(col, 1.0f, 1e-5f) << "n=" << n;  // the last step normalizes columns
      // pre = sigmoid(.) + eps in (0, 1 + eps]; post = 2·sigmoid(.) in (0, 2)
      EXPECT_GT(pre[j], 0.0f);
      EXPECT_LE(pre[j], 1.0f + 2e-6f);
      EXPECT_GT(post[j], 0.0f);
      EXPECT_LE(post[j], 2.0f);  // saturates at exactly 2 in float32
    }
  }
}

TEST(Mhc, SinkhornIterationsShrinkTheRowError) {
  const int n = 4;
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> mix((2 + n) * n), base((2 + n) * n), scale = {1.0f, 1.0f, 1.0f};
  for (auto& v : mix) v = nd(rng);
  auto row_error = [&](int iters) {
    ops::HcShape s{n, 8, 1e-6f, 1e-6f, iters};
    std::vector<float> pre(n), post(n), comb(n * n);
    ops::hc_split_sinkhorn(mix.data(), base.data(), scale.data(), s, pre.data(), post.data(), comb.data());
    double worst = 0;
    for (int j = 0; j < n; ++j) {
      double row = 0;
      for (int k = 0; k < n; ++k) row += comb[j * n + k];
      worst = std::max(worst, std::fabs(row - 1));
    }
    return worst;
  };
  EXPECT_LT(row_error(20), row_error(2));
  EXPECT_LT(row_error(20), 1e-3);
}

TEST(Mhc, PreAndPostFollowTheSplitFormulas) {
  // n = 1: pre = sigmoid(mix0·s0 + b0) + eps, post = 2·sigmoid(mix1·s1 + b1), comb = 1 (softmax of one).
  ops::HcShape s{1, 4, 1e-6f, 1e-6f, 20};
  float mix[3] = {0.5f, -1.0f, 3.0f}, base[3] = {0.1f, 0.2f, 0.3f}, scale[3] = {2.0f, 0.5f, 1.0f};
  float pre, post, comb;
  ops::hc_split_sinkhorn(mix, base, scale, s, &pre, &post, &comb);
  EXPECT_NEAR(pre, 1.0 / (1.0 + std::exp(-(0.5 * 2.0 + 0.1))) + 1e-6, 1e-6);
  EXPECT_NEAR(post, 2.0 / (1.0 + std::exp(-(-1.0 * 0.5 + 0.2))), 1e-6);
  EXPECT_NEAR(comb, 1.0, 1e-5);
}

TEST(Quant, Fp8SimulationRoundsInPowerOfTwoScaledBlocks) {
  // amax 448 → scale 1: values are plain e4m3 roundings, ties to even.
  std::vector<float> x = {448.0f, 1.0625f, 1.1875f, -3.0f, 500.0f / 448.0f};
  ops::fp8_sim(x.data(), x.size(), 64);
  EXPECT_EQ(x[0], 448.0f);
  EXPECT_EQ(x[1], 1.0f);
  EXPECT_EQ(x[2], 1.25f);
  EXPECT_EQ(x[3], -3.0f);
  // amax 896 → scale 2 (896/448 = 2 exactly: no mantissa bits → exponent 1)
  std::vector<float> y = {896.0f, 2.125f, 0.0f};
  ops::fp8_sim(y.data(), y.size(), 64);
  EXPECT_EQ(y[0], 896.0f);
  EXPECT_EQ(y[1], 2.0f);  // 1.0625 at scale 2 → tie → 1.0 → 2.0
  EXPECT_EQ(y[2], 0.0f);
  // A zero block stays zero (amax floor 1e-4 keeps the scale finite).
  std::vector<float> z(64, 0.0f);
  ops::fp8_sim(z.data(), z.size(), 64);
  for (float v : z) EXPECT_EQ(v, 0.0f);
  // Blocks are independent: a large value in block 1 does not change block 0.
  std::vector<float> b(128, 0.01f);
  b[100] = 1000.0f;
  ops::fp8_sim(b.data(), b.size(), 64);
  EXPECT_NEAR(b[0], 0.01f, 0.01f / 16);
  EXPECT_EQ(b[1], b[0]);
  // 0.01 / s(1000) = 0.01 / 4 = 0.0025: a subnormal, 1.28 steps of 2^-9 → one step → 2^-9 · 4
  EXPECT_EQ(b[64], std::ldexp(1.0f, -9) * 4.0f);
  EXPECT_EQ(b[100], 1024.0f);  // 1000/4 = 250 → e4m3 256 (step 16 in [128, 256): 240 | 256) → 256·4
}

TEST(Quant, Fp4SimulationUsesTheE2M1Grid) {
  // amax 6 → scale 1: the grid itself, ties to even.
  std::vector<float> x = {6.0f, 0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f, -5.0f, 0.3f};
  x.resize(32, 0.0f);
  ops::fp4_sim(x.data(), x.size(), 32);
  const float want[] = {6.0f, 0.0f, 1.0f, 1.0f, 2.0f, 2.0f, 4.0f, 4.0f, -4.0f, 0.5f};
  for (size_t i = 0; i < std::size(want); ++i) EXPECT_EQ(x[i], want[i]) << i;
  // amax 7 → 7/6 → scale 2: 7/2 = 3.5 → 4 → 8 (the scale rounds up, values may exceed amax)
  std::vector<float> y(32, 0.0f);
  y[0] = 7.0f;
  ops::fp4_sim(y.data(), y.size(), 32);
  EXPECT_EQ(y[0], 8.0f);
  std::vector<float> z(32, 0.0f);
  ops::fp4_sim(z.data(), z.size(), 32);
  for (float v : z) EXPECT_EQ(v, 0.0f);
}

TEST(Quant, HadamardIsTheScaledSylvesterMatrix) {
  // d = 4: H4 rows (1,1,1,1), (1,-1,1,-1), (1,1,-1,-1), (1,-1,-1,1); x·H4 / 2.
  float x[4] = {1.0f, 2.0f, 3.0f, 4.0f};
  ops::hadamard(x, 4);
  EXPECT_FLOAT_EQ(x[0], 5.0f);
  EXPECT_FLOAT_EQ(x[1], -1.0f);
  EXPECT_FLOAT_EQ(x[2], -2.0f);
  EXPECT_FLOAT_EQ(x[3], 0.0f);
  // Orthonormal: applying it twice is the identity.
  std::vector<float> v(128);
  std::iota(v.begin(), v.end(), -60.0f);
  std::vector<float> w = v;
  ops::hadamard(w.data(), 128);
  ops::hadamard(w.data(), 128);
  for (int i = 0; i < 128; ++i) EXPECT_NEAR(w[i], v[i], 1e-4f);
  EXPECT_THROW(ops::hadamard(w.data(), 96), Error);
}

TEST(Rope, FrequenciesWithoutYarnAreInversePowers) {
  ops::YarnParams none;
  auto f = ops::rope_frequencies(64, 10000.0f, none);
  ASSERT_EQ(f.size(), 32u);
  for (int i = 0; i < 32; ++i) EXPECT_NEAR(f[i], 1.0 / std::pow(10000.0, 2.0 * i / 64), 1e-6 * f[i]);
}

TEST(Rope, YarnKeepsFastDimsAndDividesSlowDims) {
  ops::YarnParams none, yarn{4.0f, 32.0f, 1.0f, 64};
  const int R = 64;
  const double b = 160000.0;
  auto f0 = ops::rope_frequencies(R, b, none), f = ops::rope_frequencies(R, b, yarn);
  auto corr = [&](double r) { return R * std::log(64 / (r * 2 * M_PI)) / (2 * std::log(b)); };
  const int lo = std::max(0, static_cast<int>(std::floor(corr(32))));
  const int hi = std::min(R - 1, static_cast<int>(std::ceil(corr(1))));
  ASSERT_LT(lo, hi);
  for (int i = 0; i < R / 2; ++i) {
    if (i <= lo) EXPECT_FLOAT_EQ(f[i], f0[i]) << i;             // ramp 0: unchanged
    else if (i >= hi) EXPECT_FLOAT_EQ(f[i], f0[i] / 4.0f) << i;  // ramp 1: divided by factor
    else {
      EXPECT_LT(f[i], f0[i]);
      EXPECT_GT(f[i], f0[i] / 4.0f);
    }
  }
}

TEST(Rope, InverseUndoesTheRotationAndAnglesUseOneFloatRounding) {
  auto f = ops::rope_frequencies(8, 10000.0f, {});
  float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, y[8];
  std::copy(x, x + 8, y);
  ops::rope_apply(y, 8, f.data(), 123456);
  ops::rope_apply(y, 8, f.data(), 123456, true);
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(y[i], x[i], 1e-5f);
  // pair 0 at position t: angle fp32(t · f0) with f0 = 1
  std::copy(x, x + 8, y);
  ops::rope_apply(y, 8, f.data(), 3);
  EXPECT_NEAR(y[0], 1 * std::cos(3.0f) - 2 * std::sin(3.0f), 1e-6);
  EXPECT_NEAR(y[1], 1 * std::sin(3.0f) + 2 * std::cos(3.0f), 1e-6);
}

TEST(Compressor, OverlapBlockZeroPoolsOnlyItsOwnTokens) {
  // m = 4, d = 2: rows of 2d = 4 values; block 0 has no previous block.
  const int m = 4, d = 2;
  std::vector<float> u(m * 2 * d), z(m * 2 * d);
  for (int r = 0; r < m; ++r)
    for (int f = 0; f < 2 * d; ++f) {
      u[r * 2 * d + f] = static_cast<float>(10 * r + f);
      z[r * 2 * d + f] = static_cast<float>(r) * (f % 2 ? -0.5f : 0.25f);
    }
  float e[d];
  ops::compress_pool(u.data(), z.data(), nullptr, nullptr, m, d, true, e);
  for (int f = 0; f < d; ++f) {
    // softmax over the 4 tokens of the current-block half (features d + f)
    double num = 0, den = 0;
    for (int r = 0; r < m; ++r) {
      double p = std::exp(z[r * 2 * d + d + f]);
      num += p * u[r * 2 * d + d + f];
      den += p;
    }
    EXPECT_NEAR(e[f], num / den, 1e-4);
  }
  // With a previous block, its first-half features join the softmax (8 slots).
  std::vector<float> up(u), zp(z);
  for (float& v : zp) v += 1.0f;
  ops::compress_pool(u.data(), z.data(), up.data(), zp.data(), m, d, true, e);
  for (int f = 0; f < d; ++f) {
    double num = 0, den = 0;
    for (int r = 0; r < m; ++r) {
      double p = std::exp(zp[r * 2 * d + f]), q = std::exp(z[r * 2 * d + d + f]);
      num += p * up[r * 2 * d + f] + q * u[r * 2 * d + d + f];
      den += p + q;
    }
    EXPECT_NEAR(e[f], num / den, 1e-4);
  }
}

TEST(Compressor, NoOverlapIsASoftmaxPoolPerFeature) {
  const int m = 3, d = 2;
  float u[m * d] = {1, 2, 3, 4, 5, 6}, z[m * d] = {0, 0, 0, 0, 0, 0}, e[d];
  ops::compress_pool(u, z, nullptr, nullptr, m, d, false, e);
  EXPECT_NEAR(e[0], 3.0f, 1e-6);  // equal gates: the mean
  EXPECT_NEAR(e[1], 4.0f, 1e-6);
}

TEST(Indexer, TopKTiesGoToTheLowerIndex) {
  float s[6] = {1.0f, 3.0f, 2.0f, 3.0f, 2.0f, 3.0f};
  EXPECT_EQ(ops::topk_lower_index(s, 6, 2), (std::vector<int32_t>{1, 3}));
  EXPECT_EQ(ops::topk_lower_index(s, 6, 4), (std::vector<int32_t>{1, 2, 3, 5}));
  EXPECT_EQ(ops::topk_lower_index(s, 6, 10).size(), 6u);  // k = min(K, count)
  EXPECT_TRUE(ops::topk_lower_index(s, 0, 4).empty());
}

TEST(Indexer, ScoresAreWeightedReluDots) {
  // HI = 2, DI = 2; q0 = (1, 0), q1 = (0, 1); w = (2, -1); k = (3, -4)
  float q[4] = {1, 0, 0, 1}, w[2] = {2, -1}, k[2] = {3, -4}, s;
  ops::indexer_scores(q, w, 2, 2, k, 1, &s);
  EXPECT_FLOAT_EQ(s, 2 * 3 + (-1) * 0);  // ReLU(-4) = 0
}

TEST(Attention, SinkEntersOnlyTheDenominator) {
  // One head, one key: o = e^s v / (e^s + e^sink)
  float q[2] = {1, 0}, kv[2] = {2, 1}, sink = 0.5f, o[2];
  ops::sink_attention(q, 1, 2, kv, 1, &sink, 1.0f, o);
  double p = std::exp(2.0) / (std::exp(2.0) + std::exp(0.5));
  EXPECT_NEAR(o[0], 2 * p, 1e-6);
  EXPECT_NEAR(o[1], 1 * p, 1e-6);
  // With no keys the output is zero (everything goes to the sink).
  ops::sink_attention(q, 1, 2, kv, 0, &sink, 1.0f, o);
  EXPECT_EQ(o[0], 0.0f);
}

TEST(Moe, ScoringFunctionsAndWeightNormalization) {
  float logits[4] = {0.0f, 1.0f, -1.0f, 2.0f}, p[4];
  ops::moe_scores(logits, 4, ScoringFunc::SqrtSoftplus, p);
  EXPECT_NEAR(p[1], std::sqrt(std::log1p(std::exp(1.0))), 1e-6);
  ops::moe_scores(logits, 4, ScoringFunc::Sigmoid, p);
  EXPECT_NEAR(p[3], 1 / (1 + std::exp(-2.0)), 1e-6);
  int32_t ex[2];
  float w[2];
  // bias steers the choice but not the weights; non-softmax weights are normalized, then scaled
  float bias[4] = {10.0f, 0.0f, 0.0f, 0.0f};
  ops::moe_route(p, bias, 4, 2, nullptr, ScoringFunc::Sigmoid, 1.5f, ex, w);
  EXPECT_EQ(ex[0], 0);
  EXPECT_EQ(ex[1], 3);
  EXPECT_NEAR(w[0], 1.5 * p[0] / (p[0] + p[3]), 1e-6);
  ops::moe_scores(logits, 4, ScoringFunc::Softmax, p);
  ops::moe_route(p, nullptr, 4, 2, nullptr, ScoringFunc::Softmax, 2.0f, ex, w);
  EXPECT_EQ(ex[0], 3);
  EXPECT_NEAR(w[0], 2.0 * p[3], 1e-6);  // softmax weights are not renormalized
  int64_t hash[2] = {2, 1};
  ops::moe_route(p, nullptr, 4, 2, hash, ScoringFunc::Softmax, 1.0f, ex, w);
  EXPECT_EQ(ex[0], 2);
  EXPECT_EQ(ex[1], 1);
}

TEST(Moe, SwigluClampsGateAboveAndUpBothWays) {
  float g[3] = {5.0f, -5.0f, 0.5f}, u[3] = {5.0f, -5.0f, 0.5f}, h[3];
  ops::swiglu(g, u, 3, 1.0f, h);
  EXPECT_NEAR(h[0], 1.0 / (1 + std::exp(-1.0)) * 1.0, 1e-6);      // g → 1, u → 1
  EXPECT_NEAR(h[1], -5.0 / (1 + std::exp(5.0)) * -1.0, 1e-6);     // g stays −5, u → −1
  EXPECT_NEAR(h[2], 0.5 / (1 + std::exp(-0.5)) * 0.5, 1e-6);
  ops::swiglu(g, u, 1, 0.0f, h);  // no clamping
  EXPECT_NEAR(h[0], 5.0 / (1 + std::exp(-5.0)) * 5.0, 1e-5);
}
