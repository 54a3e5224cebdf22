// The whole training graph's gradient against float64 central finite differences of its
// loss (rule in grad_check.h), on tiny random models: every parameter tensor that gets a
// gradient, at sampled elements (a few random ones plus the largest), for hc_mult 1, 3 and 4,
// every scoring function, the sparse and dense phases, the MTP, balance and indexer losses.
// Quantization simulations are off here: straight-through is not the derivative of a step.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "grad_check.h"
#include "model_test_util.h"
#include "train/train_graph.h"

using namespace dsv4;
using namespace dsv4::testing_util;

namespace {

// Small enough that the finite differences of every tensor take a few seconds in all.
ModelConfig grad_config(int n, ScoringFunc f, std::vector<int> ratios, int mtp_ratio, int topk = 2) {
  TinyOptions o;
  o.hc_mult = n;
  o.scoring = f;
  o.ratios = std::move(ratios);
  o.window = 4;
  o.index_topk = topk;
  ModelConfig c = tiny_config(o);
  c.compress_ratios.back() = mtp_ratio;
  c.vocab_size = 23;
  c.hidden_size = 16;
  c.moe_intermediate_size = 8;
  c.num_attention_heads = 2;
  c.n_routed_experts = 4;
  c.q_lora_rank = 8;
  c.head_dim = 16;
  c.qk_rope_head_dim = 8;
  c.o_groups = 2;
  c.o_lora_rank = 4;
  c.index_n_heads = 2;
  c.index_head_dim = 16;
  c.yarn_original_max_pos = 8;  // YaRN's ramp falls inside the 4 frequencies
  return c;
}

struct F64Params {
  std::map<std::string, std::vector<double>> f;
  Params src;
  ParamView<double> view() const {
    ParamView<double> v;
    for (const auto& [name, x] : f) v.f[name] = x.data();
    v.i64 = &src.i64;
    return v;
  }
};

F64Params to_f64(Params p) {
  F64Params out;
  for (const auto& [name, t] : p.f32) out.f[name].assign(t.data.begin(), t.data.end());
  out.src = std::move(p);
  return out;
}

TrainBatch random_batch(const ModelConfig& c, int64_t B, int64_t T, uint64_t seed) {
  TrainBatch b{B, T, random_ids(c, B * T, seed)};
  return b;
}

// Compares the analytic gradient of every tensor whose name passes `want` with central
// differences of the loss at a few elements; returns the worst relative error seen.
double check_model_gradients(const ModelConfig& c, const TrainOptions& opt, uint64_t seed,
                             bool (*want)(const std::string&)) {
  // Thousands of tiny forwards: threads only cost here (threaded runs are compared with this
  // single-threaded one in GradModel.ThreadsGiveTheSameGradients).
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  F64Params P = to_f64(random_params(c, seed));
  const TrainBatch batch = random_batch(c, 2, 12, seed + 7);
  TrainResult<double> r = train_step(c, P.view(), batch, opt, /*backward=*/true);
  EXPECT_EQ(r.grads.size(), grad_names(c, opt).size());
  auto loss = [&] { return train_step(c, P.view(), batch, opt, /*backward=*/false).loss.total; };
  const double L0 = std::fabs(r.loss.total);
  std::mt19937 rng(static_cast<uint32_t>(seed));
  double worst = 0;
  int checked = 0;
  for (auto& [name, g] : r.grads) {
    if (!want(name)) continue;
    std::vector<double>& x = P.f.at(name);
    std::vector<int64_t> idx;
    std::uniform_int_distribution<int64_t> pick(0, static_cast<int64_t>(x.size()) - 1);
    for (int i = 0; i < 3; ++i) idx.push_back(pick(rng));
    idx.push_back(std::max_element(g.begin(), g.end(), [](double a, double b) { return std::fabs(a) < std::fabs(b); }) -
                  g.begin());
    // error and scale over the sampled elements
    double num = 0, den = 0;
    for (int64_t i : idx) {
      const double x0 = x[i];
      x[i] = x0 + test::kFdStep;
      const double lp = loss();
      x[i] = x0 - test::kFdStep;
      const double lm = loss();
      x[i] = x0;
      const double fd = (lp - lm) / (2 * test::kFdStep);
      num += (g[i] - fd) * (g[i] - fd);
      den += fd * fd;
    }
    // rounding of the two losses: a few ulps of |L| each, divided by 2h
    const double roundoff = 16 * 2.2e-16 * std::max(L0, 1.0) / test::kFdStep * std::sqrt(double(idx.size()));
    const double err = std::sqrt(num), scale = std::sqrt(den);
    EXPECT_LE(err, test::kFdRelTol * scale + roundoff) << name << ": |g - fd| " << err << " |fd| " << scale;
    if (scale > 0) worst = std::max(worst, err / scale);
    ++checked;
  }
  EXPECT_GT(checked, 0);
  omp_set_num_threads(threads);
  return worst;
}

bool all_tensors(const std::string&) { return true; }
bool indexer_tensors(const std::string& n) { return n.find(".attn.indexer.") != std::string::npos; }

TrainOptions fd_options(AttnPhase phase) {
  TrainOptions o;
  o.phase = phase;
  o.quant_sim = false;
  o.recompute = true;
  return o;
}

}  // namespace

// Sparse phase (the inference semantics): window, CSA with top-2 of up to 3 entries, HCA;
// the MTP block is a CSA layer too. Balance loss on.
TEST(GradModel, SparsePhaseHc4SqrtSoftplus) {
  const ModelConfig c = grad_config(4, ScoringFunc::SqrtSoftplus, {0, 4, 8}, 4);
  TrainOptions o = fd_options(AttnPhase::Sparse);
  o.balance_weight = 0.1f;
  const double worst = check_model_gradients(c, o, 11, all_tensors);
  std::printf("worst relative error %.2e\n", worst);
}

TEST(GradModel, DensePhaseHc1Softmax) {
  const ModelConfig c = grad_config(1, ScoringFunc::Softmax, {4, 8, 0}, 0);
  TrainOptions o = fd_options(AttnPhase::Dense);
  o.balance_weight = 0.1f;
  const double worst = check_model_gradients(c, o, 12, all_tensors);
  std::printf("worst relative error %.2e\n", worst);
}

TEST(GradModel, SparsePhaseHc3Sigmoid) {
  const ModelConfig c = grad_config(3, ScoringFunc::Sigmoid, {8, 4}, 8);
  TrainOptions o = fd_options(AttnPhase::Sparse);
  o.mtp_weight = 0.5f;
  const double worst = check_model_gradients(c, o, 13, all_tensors);
  std::printf("worst relative error %.2e\n", worst);
}

// The indexer KL loss: its gradient reaches only the indexer (the target and the indexer's
// inputs are detached), so the finite differences of the whole loss with respect to the
// indexer's tensors are its gradient; sparse (selected set) and warm-up (dense target).
TEST(GradModel, IndexerKlSparseAndWarmup) {
  const ModelConfig c = grad_config(2, ScoringFunc::SqrtSoftplus, {4, 0}, 4);
  for (AttnPhase phase : {AttnPhase::Sparse, AttnPhase::IndexerWarmup}) {
    TrainOptions o = fd_options(phase);
    o.indexer_weight = 0.5f;
    const double worst = check_model_gradients(c, o, 14, indexer_tensors);
    std::printf("worst relative error %.2e\n", worst);
  }
}
