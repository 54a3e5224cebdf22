// Every op's backward against float64 central finite differences (tests/grad_check.h has
// the rule). Each check builds a scalar L = <g, op(inputs)> with a random upstream g and
// compares the backward's input gradients with the differences of L.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "grad_check.h"
#include "ops/attention.h"
#include "ops/compressor.h"
#include "ops/indexer.h"
#include "ops/linear.h"
#include "ops/mhc.h"
#include "ops/moe.h"
#include "ops/quant.h"
#include "ops/rmsnorm.h"
#include "ops/rope.h"

using namespace dsv4;
using test::dot;
using test::fd_rel_error;
using test::kFdRelTol;
using test::randn;
using V = std::vector<double>;

TEST(GradOps, Linear) {
  std::mt19937 rng(1);
  const int64_t T = 5, in = 7, out = 4;
  V x = randn(T * in, rng), W = randn(out * in, rng), g = randn(T * out, rng);
  auto loss = [&] {
    V y(T * out);
    ops::linear(x.data(), T, in, W.data(), out, y.data());
    return dot(g, y);
  };
  V dx(T * in, 0.0), dW(out * in, 0.0);
  ops::linear_backward(x.data(), T, in, W.data(), out, g.data(), dx.data(), dW.data());
  EXPECT_LT(fd_rel_error(loss, x, dx), kFdRelTol);
  EXPECT_LT(fd_rel_error(loss, W, dW), kFdRelTol);
}

TEST(GradOps, RmsNormWithAndWithoutWeight) {
  std::mt19937 rng(2);
  const int64_t T = 3, D = 9;
  for (bool weighted : {true, false}) {
    V x = randn(T * D, rng), w = randn(D, rng), g = randn(T * D, rng);
    const double* wp = weighted ? w.data() : nullptr;
    auto loss = [&] {
      V y(T * D);
      ops::rmsnorm(x.data(), T, D, wp, 1e-6f, y.data());
      return dot(g, y);
    };
    V dx(T * D, 0.0), dw(D, 0.0);
    ops::rmsnorm_backward(x.data(), T, D, wp, 1e-6f, g.data(), dx.data(), weighted ? dw.data() : nullptr);
    EXPECT_LT(fd_rel_error(loss, x, dx), kFdRelTol);
    if (weighted) EXPECT_LT(fd_rel_error(loss, w, dw), kFdRelTol);
  }
}

TEST(GradOps, RopeAndItsInverse) {
  std::mt19937 rng(3);
  const int R = 8;
  auto freqs = ops::rope_frequencies(R, 10000.0f, {4.0f, 32.0f, 1.0f, 64});
  for (bool inverse : {false, true}) {
    V x = randn(R, rng), g = randn(R, rng);
    auto loss = [&] {
      V y = x;
      ops::rope_apply(y.data(), R, freqs.data(), 37, inverse);
      return dot(g, y);
    };
    V dx = g;
    ops::rope_backward(dx.data(), R, freqs.data(), 37, inverse);
    EXPECT_LT(fd_rel_error(loss, x, dx), kFdRelTol) << "inverse " << inverse;
  }
}

TEST(GradOps, HadamardIsItsOwnBackward) {
  std::mt19937 rng(4);
  V x = randn(16, rng), g = randn(16, rng);
  auto loss = [&] {
    V y = x;
    ops::hadamard(y.data(), 16);
    return dot(g, y);
  };
  V dx = g;
  ops::hadamard(dx.data(), 16);
  EXPECT_LT(fd_rel_error(loss, x, dx), kFdRelTol);
}

namespace {

// Gradients of hc_pre's three outputs, through the mix norm and all Sinkhorn iterations.
void check_hc_pre(int64_t n, int iters, uint32_t seed) {
  std::mt19937 rng(seed);
  const int64_t T = 3, D = 5, rows = (2 + n) * n;
  const ops::HcShape s{n, D, 1e-6f, 1e-6f, iters};
  V X = randn(T * n * D, rng), fn = randn(rows * n * D, rng, 0.5), base = randn(rows, rng), scale = {0.8, 1.3, 0.9};
  V gy = randn(T * D, rng), gpost = randn(T * n, rng), gcomb = randn(T * n * n, rng);
  auto loss = [&] {
    V y(T * D), pre(T * n), post(T * n), comb(T * n * n);
    ops::hc_pre(X.data(), T, s, fn.data(), base.data(), scale.data(), y.data(), pre.data(), post.data(), comb.data());
    return dot(gy, y) + dot(gpost, post) + dot(gcomb, comb);
  };
  V dX(X.size(), 0.0), dfn(fn.size(), 0.0), dbase(rows, 0.0), dscale(3, 0.0);
  ops::hc_pre_backward(X.data(), T, s, fn.data(), base.data(), scale.data(), gy.data(), gpost.data(), gcomb.data(),
                       dX.data(), dfn.data(), dbase.data(), dscale.data());
  EXPECT_LT(fd_rel_error(loss, X, dX), kFdRelTol) << "n=" << n;
  EXPECT_LT(fd_rel_error(loss, fn, dfn), kFdRelTol) << "n=" << n;
  EXPECT_LT(fd_rel_error(loss, base, dbase), kFdRelTol) << "n=" << n;
  EXPECT_LT(fd_rel_error(loss, scale, dscale), kFdRelTol) << "n=" << n;
}

}  // namespace

TEST(GradOps, HcPreThroughEverySinkhornIteration) {
  check_hc_pre(1, 20, 5);
  check_hc_pre(3, 20, 6);
  check_hc_pre(4, 20, 7);
  check_hc_pre(4, 1, 8);  // a single (column) normalization
}

TEST(GradOps, HcPost) {
  std::mt19937 rng(9);
  for (int64_t n : {1, 3, 4}) {
    const int64_t T = 2, D = 6;
    const ops::HcShape s{n, D, 1e-6f, 1e-6f, 20};
    V X = randn(T * n * D, rng), o = randn(T * D, rng), post = randn(T * n, rng), comb = randn(T * n * n, rng);
    V g = randn(T * n * D, rng);
    auto loss = [&] {
      V Xo(T * n * D);
      ops::hc_post(X.data(), o.data(), post.data(), comb.data(), T, s, Xo.data());
      return dot(g, Xo);
    };
    V dX(X.size(), 0.0), d_o(o.size()), dpost(post.size()), dcomb(comb.size());
    ops::hc_post_backward(X.data(), o.data(), post.data(), comb.data(), T, s, g.data(), dX.data(), d_o.data(),
                          dpost.data(), dcomb.data());
    EXPECT_LT(fd_rel_error(loss, X, dX), kFdRelTol);
    EXPECT_LT(fd_rel_error(loss, o, d_o), kFdRelTol);
    EXPECT_LT(fd_rel_error(loss, post, dpost), kFdRelTol);
    EXPECT_LT(fd_rel_error(loss, comb, dcomb), kFdRelTol);
  }
}

TEST(GradOps, HcHead) {
  std::mt19937 rng(10);
  for (int64_t n : {1, 3, 4}) {
    const int64_t T = 3, D = 5;
    const ops::HcShape s{n, D, 1e-6f, 1e-6f, 20};
    V X = randn(T * n * D, rng), fn = randn(n * n * D, rng, 0.5), base = randn(n, rng), scale = {1.1};
    V g = randn(T * D, rng);
    auto loss = [&] {
      V y(T * D);
      ops::hc_head(X.data(), T, s, fn.data(), base.data(), scale.data(), y.data());
      return dot(g, y);
    };
    V dX(X.size(), 0.0), dfn(fn.size(), 0.0), dbase(n, 0.0), dscale(1, 0.0);
    ops::hc_head_backward(X.data(), T, s, fn.data(), base.data(), scale.data(), g.data(), dX.data(), dfn.data(),
                          dbase.data(), dscale.data());
    EXPECT_LT(fd_rel_error(loss, X, dX), kFdRelTol);
    EXPECT_LT(fd_rel_error(loss, fn, dfn), kFdRelTol);
    EXPECT_LT(fd_rel_error(loss, base, dbase), kFdRelTol);
    EXPECT_LT(fd_rel_error(loss, scale, dscale), kFdRelTol);
  }
}

TEST(GradOps, CompressorPoolBothOverlapModes) {
  std::mt19937 rng(11);
  const int64_t d = 3;
  struct Case { int64_t m; bool overlap, prev; };
  for (Case k : {Case{4, true, true}, Case{4, true, false}, Case{16, false, false}, Case{2, false, false}}) {
    const int64_t width = (k.overlap ? 2 : 1) * d, n = k.m * width;
    V uc = randn(n, rng), zc = randn(n, rng), up = randn(n, rng), zp = randn(n, rng), g = randn(d, rng);
    auto loss = [&] {
      V e(d);
      ops::compress_pool(uc.data(), zc.data(), k.prev ? up.data() : nullptr, k.prev ? zp.data() : nullptr, k.m, d,
                         k.overlap, e.data());
      return dot(g, e);
    };
    V duc(n, 0.0), dzc(n, 0.0), dup(n, 0.0), dzp(n, 0.0);
    ops::compress_pool_backward(uc.data(), zc.data(), k.prev ? up.data() : nullptr, k.prev ? zp.data() : nullptr, k.m,
                                d, k.overlap, g.data(), duc.data(), dzc.data(), dup.data(), dzp.data());
    EXPECT_LT(fd_rel_error(loss, uc, duc), kFdRelTol) << "m=" << k.m;
    EXPECT_LT(fd_rel_error(loss, zc, dzc), kFdRelTol) << "m=" << k.m;
    if (k.prev) {
      EXPECT_LT(fd_rel_error(loss, up, dup), kFdRelTol);
      EXPECT_LT(fd_rel_error(loss, zp, dzp), kFdRelTol);
    } else {
      // the absent block gets nothing
      EXPECT_EQ(dot(dup, dup) + dot(dzp, dzp), 0.0);
    }
  }
}

TEST(GradOps, SinkAttention) {
  std::mt19937 rng(12);
  const int64_t H = 3, Dh = 4, S = 5;
  V q = randn(H * Dh, rng), kv = randn(S * Dh, rng), sink = randn(H, rng), g = randn(H * Dh, rng);
  auto loss = [&] {
    V o(H * Dh);
    ops::sink_attention(q.data(), H, Dh, kv.data(), S, sink.data(), 0.5f, o.data());
    return dot(g, o);
  };
  V dq(q.size(), 0.0), dkv(kv.size(), 0.0), dsink(H, 0.0);
  ops::sink_attention_backward(q.data(), H, Dh, kv.data(), S, sink.data(), 0.5f, g.data(), dq.data(), dkv.data(),
                               dsink.data());
  EXPECT_LT(fd_rel_error(loss, q, dq), kFdRelTol);
  EXPECT_LT(fd_rel_error(loss, kv, dkv), kFdRelTol);
  EXPECT_LT(fd_rel_error(loss, sink, dsink), kFdRelTol);
}

TEST(GradOps, IndexerScores) {
  std::mt19937 rng(13);
  const int64_t HI = 3, DI = 4, C = 6;
  V q = randn(HI * DI, rng), w = randn(HI, rng), k = randn(C * DI, rng), g = randn(C, rng);
  // ReLU's kink must stay farther than the step from every dot product.
  for (int64_t i = 0; i < C; ++i)
    for (int64_t h = 0; h < HI; ++h) {
      double d = 0;
      for (int64_t j = 0; j < DI; ++j) d += q[h * DI + j] * k[i * DI + j];
      ASSERT_GT(std::fabs(d), 1e-3);
    }
  auto loss = [&] {
    V s(C);
    ops::indexer_scores(q.data(), w.data(), HI, DI, k.data(), C, s.data());
    return dot(g, s);
  };
  V dq(q.size(), 0.0), dw(HI, 0.0), dk(k.size(), 0.0);
  ops::indexer_scores_backward(q.data(), w.data(), HI, DI, k.data(), C, g.data(), dq.data(), dw.data(), dk.data());
  EXPECT_LT(fd_rel_error(loss, q, dq), kFdRelTol);
  EXPECT_LT(fd_rel_error(loss, w, dw), kFdRelTol);
  EXPECT_LT(fd_rel_error(loss, k, dk), kFdRelTol);
}

TEST(GradOps, MoeScoresAndRouteWeightsForEveryScoringFunction) {
  std::mt19937 rng(14);
  const int64_t E = 6, k = 3;
  for (ScoringFunc f : {ScoringFunc::Softmax, ScoringFunc::Sigmoid, ScoringFunc::SqrtSoftplus}) {
    V logits = randn(E, rng, 2.0), bias = randn(E, rng, 0.1), g = randn(k, rng);
    if (f == ScoringFunc::SqrtSoftplus) logits[0] = 23.0;  // the linear branch (x > 20)
    // route once to fix the choice (it is not differentiated), then differentiate the weights
    V p(E), w(k);
    std::vector<int32_t> ex(k);
    ops::moe_scores(logits.data(), E, f, p.data());
    ops::moe_route(p.data(), bias.data(), E, k, nullptr, f, 1.5f, ex.data(), w.data());
    auto loss = [&] {
      V pp(E), ww(k);
      std::vector<int32_t> ee(k);
      ops::moe_scores(logits.data(), E, f, pp.data());
      ops::moe_route(pp.data(), bias.data(), E, k, nullptr, f, 1.5f, ee.data(), ww.data());
      EXPECT_EQ(ee, ex);
      return dot(g, ww);
    };
    V dp(E, 0.0), dlogits(E);
    ops::moe_route_backward(p.data(), k, ex.data(), f, 1.5f, g.data(), dp.data());
    ops::moe_scores_backward(logits.data(), E, f, dp.data(), dlogits.data());
    EXPECT_LT(fd_rel_error(loss, logits, dlogits), kFdRelTol) << static_cast<int>(f);
  }
}

TEST(GradOps, SwigluWithClamping) {
  std::mt19937 rng(15);
  const int64_t F = 40;
  for (float limit : {0.0f, 1.0f}) {
    V gate = randn(F, rng, 1.5), up = randn(F, rng, 1.5), g = randn(F, rng);
    // keep the clamp's kinks away from the step
    for (auto* v : {&gate, &up})
      for (double& x : *v)
        if (std::fabs(std::fabs(x) - limit) < 1e-3) x += 0.01;
    auto loss = [&] {
      V h(F);
      ops::swiglu(gate.data(), up.data(), F, limit, h.data());
      return dot(g, h);
    };
    V dg(F), du(F);
    ops::swiglu_backward(gate.data(), up.data(), F, limit, g.data(), dg.data(), du.data());
    EXPECT_LT(fd_rel_error(loss, gate, dg), kFdRelTol) << "limit " << limit;
    EXPECT_LT(fd_rel_error(loss, up, du), kFdRelTol) << "limit " << limit;
    if (limit > 0) {
      int clamped = 0;
      for (int64_t i = 0; i < F; ++i) clamped += gate[i] > limit || std::fabs(up[i]) > limit;
      EXPECT_GT(clamped, 5);  // the clamps are exercised
    }
  }
}
