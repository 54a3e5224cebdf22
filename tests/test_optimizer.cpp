// Optimizer: parameter groups from the tensor table, routing to Muon/AdamW, global-norm
// clipping, the learning-rate schedule, the aux-loss-free gate bias update, bit-identical
// resume from saved state, and memorization of a tiny problem with Muon and with AdamW.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <random>

#include "io/safetensors.h"
#include "io_test_util.h"
#include "train/optimizer.h"

using namespace dsv4;

namespace {

constexpr double kEps32 = std::numeric_limits<float>::epsilon();

ModelConfig tiny_config() { return load_config(std::string(DSV4_FIXTURES) + "/tiny-fp32/config.json"); }

TensorSpec spec(const std::string& name, Shape shape, ParamGroup g) {
  return {name, std::move(shape), Storage::F32, g, InitKind::Normal};
}

// A small table with every kind of entry, and params / grads for it.
std::vector<TensorSpec> small_table() {
  return {spec("w", {6, 10}, ParamGroup::Muon), spec("tall", {12, 4}, ParamGroup::Muon),
          spec("embed", {5, 3}, ParamGroup::AdamW), spec("norm", {4}, ParamGroup::AdamWNoDecay),
          spec("gate.bias", {3}, ParamGroup::GateBias)};
}

Tensor random_tensor(const Shape& shape, std::mt19937_64& rng, float std = 1.0f) {
  std::normal_distribution<float> nd(0.0f, std);
  Tensor t(shape);
  for (float& v : t.data) v = nd(rng);
  return t;
}

Params random_params(const std::vector<TensorSpec>& table, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Params p;
  for (const TensorSpec& s : table) p.f32[s.name] = random_tensor(s.shape, rng);
  return p;
}

std::map<std::string, Tensor> random_grads(const std::vector<TensorSpec>& table, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::map<std::string, Tensor> g;
  for (const TensorSpec& s : table)
    if (!s.is_int()) g[s.name] = random_tensor(s.shape, rng, 0.1f);
  return g;
}

OptimizerConfig small_config() {
  OptimizerConfig cfg;
  cfg.schedule.peak = 0.02f;
  cfg.schedule.warmup_steps = 2;
  cfg.schedule.constant_steps = 2;
  cfg.schedule.decay_steps = 4;
  return cfg;
}

bool same_bits(const Tensor& a, const Tensor& b) { return a.shape == b.shape && a.data == b.data; }

}  // namespace

TEST(Optimizer, GroupsComeFromTheTensorTable) {
  const ModelConfig c = tiny_config();
  const Optimizer opt(c, OptimizerConfig{});
  const std::pair<const char*, ParamGroup> want[] = {
      {"embed.weight", ParamGroup::AdamW},
      {"head.weight", ParamGroup::AdamW},
      {"norm.weight", ParamGroup::AdamWNoDecay},
      {"layers.0.attn_norm.weight", ParamGroup::AdamWNoDecay},
      {"layers.0.attn.q_norm.weight", ParamGroup::AdamWNoDecay},
      {"layers.0.attn.attn_sink", ParamGroup::AdamWNoDecay},
      {"layers.1.attn.compressor.ape", ParamGroup::AdamWNoDecay},
      {"layers.1.attn.indexer.compressor.ape", ParamGroup::AdamWNoDecay},
      {"hc_head_base", ParamGroup::AdamWNoDecay},
      {"hc_head_scale", ParamGroup::AdamWNoDecay},
      {"layers.2.hc_ffn_base", ParamGroup::AdamWNoDecay},
      {"layers.2.hc_attn_scale", ParamGroup::AdamWNoDecay},
      {"hc_head_fn", ParamGroup::Muon},
      {"layers.0.hc_attn_fn", ParamGroup::Muon},
      {"layers.0.attn.wq_a.weight", ParamGroup::Muon},
      {"layers.1.attn.indexer.wq_b.weight", ParamGroup::Muon},
      {"layers.1.ffn.gate.weight", ParamGroup::Muon},
      {"layers.2.ffn.experts.3.w2.weight", ParamGroup::Muon},
      {"layers.2.ffn.shared_experts.w1.weight", ParamGroup::Muon},
      {"mtp.0.e_proj.weight", ParamGroup::Muon},
      {"layers.1.ffn.gate.bias", ParamGroup::GateBias},
      {"mtp.0.ffn.gate.bias", ParamGroup::GateBias},
      {"layers.0.ffn.gate.tid2eid", ParamGroup::Fixed},
  };
  for (const auto& [name, group] : want) EXPECT_EQ(opt.group(name), group) << name;
  EXPECT_THROW(opt.group("layers.99.attn.wq_a.weight"), Error);

  // The state holds a momentum for every Muon and AdamW parameter, a second moment only for
  // the AdamW groups, nothing for gate.bias and tid2eid.
  const std::map<std::string, Tensor> state = opt.state();
  for (const TensorSpec& s : tensor_table(c)) {
    const bool adam = s.group == ParamGroup::AdamW || s.group == ParamGroup::AdamWNoDecay;
    EXPECT_EQ(state.count("m." + s.name), s.trainable() ? 1u : 0u) << s.name;
    EXPECT_EQ(state.count("v." + s.name), adam ? 1u : 0u) << s.name;
  }
}

// Each group goes to its update: compare two steps (bias correction t = 1, 2; the warm-up's
// two learning rates) with the step functions called by hand.
TEST(Optimizer, RoutesEachGroupToItsUpdate) {
  const std::vector<TensorSpec> table = small_table();
  OptimizerConfig cfg = small_config();
  cfg.clip_norm = 0.0f;
  Optimizer opt(table, cfg);
  Params p = random_params(table, 1);
  Params by_hand = p;
  Tensor m_w({6, 10}), m_tall({12, 4}), m_e({5, 3}), v_e({5, 3}), m_n({4}), v_n({4});
  for (int64_t step = 0; step < 2; ++step) {
    auto grads = random_grads(table, 2 + step);
    opt.step(p, grads);
    const float lr = cfg.schedule.at(step);
    muon_step(by_hand.at("w"), grads.at("w"), m_w, lr, cfg.muon);
    muon_step(by_hand.at("tall"), grads.at("tall"), m_tall, lr, cfg.muon);
    adamw_step(by_hand.at("embed"), grads.at("embed"), m_e, v_e, step + 1, lr, 0.1f, cfg.adamw);
    adamw_step(by_hand.at("norm"), grads.at("norm"), m_n, v_n, step + 1, lr, 0.0f, cfg.adamw);
  }
  for (const char* name : {"w", "tall", "embed", "norm", "gate.bias"})
    EXPECT_TRUE(same_bits(p.at(name), by_hand.at(name))) << name;
  EXPECT_EQ(opt.steps_done(), 2);
}

// One step over the whole tiny model: every trainable tensor moves, gate.bias (even with a
// gradient given) and tid2eid do not.
TEST(Optimizer, StepsTheWholeTinyModel) {
  const ModelConfig c = tiny_config();
  const std::vector<TensorSpec> table = tensor_table(c);
  Params p = init_params(c, 3);
  const Params before = p;
  auto grads = random_grads(table, 4);
  Optimizer opt(c, small_config());
  const double norm = opt.step(p, grads);
  EXPECT_TRUE(std::isfinite(norm));
  for (const TensorSpec& s : table) {
    if (s.is_int()) {
      EXPECT_EQ(p.i64.at(s.name), before.i64.at(s.name)) << s.name;
      continue;
    }
    const bool changed = !same_bits(p.at(s.name), before.at(s.name));
    EXPECT_EQ(changed, s.trainable()) << s.name;
  }
}

TEST(Optimizer, RejectsMissingOrMisshapenGradients) {
  const std::vector<TensorSpec> table = small_table();
  Optimizer opt(table, small_config());
  Params p = random_params(table, 1);
  auto grads = random_grads(table, 2);
  grads.erase("norm");
  EXPECT_THROW(opt.step(p, grads), Error);
  grads = random_grads(table, 2);
  grads["w"] = Tensor({10, 6});
  EXPECT_THROW(opt.step(p, grads), Error);
  grads = random_grads(table, 2);
  grads["not.a.parameter"] = Tensor({1});
  EXPECT_THROW(opt.step(p, grads), Error);
  EXPECT_EQ(opt.steps_done(), 0);
}

// Norm over the trainable gradients only (gate.bias's is ignored): √(3² + 4² + 12²) = 13;
// clipped to exactly max_norm; a norm at or under the limit leaves them bit-identical.
TEST(Optimizer, ClipsToTheGlobalNorm) {
  const std::vector<TensorSpec> table = {spec("a", {2}, ParamGroup::AdamWNoDecay),
                                         spec("b", {1}, ParamGroup::AdamWNoDecay),
                                         spec("gate.bias", {2}, ParamGroup::GateBias)};
  auto make_grads = [] {
    std::map<std::string, Tensor> g;
    g["a"] = Tensor({2});
    g["a"][0] = 3.0f;
    g["a"][1] = 4.0f;
    g["b"] = Tensor({1}, 12.0f);
    g["gate.bias"] = Tensor({2}, 100.0f);
    return g;
  };
  for (float max_norm : {1.0f, 13.0f, 100.0f, 0.0f}) {
    SCOPED_TRACE(max_norm);
    OptimizerConfig cfg = small_config();
    cfg.clip_norm = max_norm;
    Optimizer opt(table, cfg);
    Params p = random_params(table, 1);
    auto grads = make_grads();
    EXPECT_DOUBLE_EQ(opt.step(p, grads), 13.0);
    EXPECT_EQ(grads.at("gate.bias").data, make_grads().at("gate.bias").data);
    grads.erase("gate.bias");
    if (max_norm > 0.0f && max_norm < 13.0f) {
      // one float32 rounding per element of the scaled gradient
      EXPECT_NEAR(grad_global_norm(grads), max_norm, 2 * kEps32 * max_norm);
      EXPECT_NEAR(grads.at("a")[1], 4.0 * max_norm / 13.0, kEps32 * 4.0 * max_norm / 13.0);
    } else {
      auto want = make_grads();
      for (const char* name : {"a", "b"}) EXPECT_EQ(grads.at(name).data, want.at(name).data);
    }
  }
}

// A non-finite gradient norm skips the step: nothing changes, so the caller can react.
TEST(Optimizer, NonFiniteNormSkipsTheStep) {
  const std::vector<TensorSpec> table = small_table();
  Optimizer opt(table, small_config());
  Params p = random_params(table, 1);
  const Params before = p;
  auto grads = random_grads(table, 2);
  grads.at("embed")[4] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(opt.step(p, grads)));
  grads = random_grads(table, 2);
  grads.at("w")[0] = std::numeric_limits<float>::infinity();
  EXPECT_TRUE(std::isinf(opt.step(p, grads)));
  for (const auto& [name, t] : before.f32) EXPECT_TRUE(same_bits(p.at(name), t)) << name;
  EXPECT_EQ(opt.steps_done(), 0);
  for (const auto& [name, t] : opt.state())
    for (float v : t.data) EXPECT_EQ(v, 0.0f) << name;
}

// W = 10 warm-up, C = 5 constant, D = 20 decay steps, peak 1e-3, floor 0.1·peak.
TEST(Optimizer, LearningRateSchedule) {
  LrSchedule s;
  s.peak = 1e-3f;
  s.warmup_steps = 10;
  s.constant_steps = 5;
  s.decay_steps = 20;
  const double peak = 1e-3, tol = kEps32 * peak;
  EXPECT_NEAR(s.at(0), peak / 10, tol);       // warm-up starts at peak/W, not 0
  EXPECT_NEAR(s.at(4), peak * 5 / 10, tol);   // linear
  EXPECT_EQ(s.at(9), s.peak);                 // warm-up ends at the peak
  EXPECT_EQ(s.at(10), s.peak);                // constant
  EXPECT_EQ(s.at(14), s.peak);
  EXPECT_FALSE(s.decaying(14));
  EXPECT_TRUE(s.decaying(15));
  EXPECT_LT(s.at(15), s.peak);                // cosine starts
  EXPECT_NEAR(s.at(24), (peak + 0.1 * peak) / 2, tol);  // halfway: the cosine's midpoint
  // a quarter in: floor + (peak − floor)·½(1 + cos(π/4)), not the linear 0.75 point
  EXPECT_NEAR(s.at(19), 0.1 * peak + 0.9 * peak * 0.5 * (1 + std::cos(std::numbers::pi / 4)), tol);
  EXPECT_NEAR(s.at(34), 0.1 * peak, tol);     // decay ends at one tenth
  EXPECT_NEAR(s.at(100000), 0.1 * peak, tol); // and stays there
  for (int64_t i = 15; i < 40; ++i) EXPECT_LE(s.at(i), s.at(i - 1)) << i;

  LrSchedule flat;
  flat.peak = 0.5f;
  flat.warmup_steps = 0;
  EXPECT_EQ(flat.at(0), 0.5f);
  EXPECT_EQ(flat.at(1000000), 0.5f);  // no decay steps: constant forever
  EXPECT_FALSE(flat.decaying(1000000));

  LrSchedule bad = s;
  bad.floor_ratio = 1.5f;
  EXPECT_THROW(bad.validate(), Error);
  bad = s;
  bad.warmup_steps = -1;
  EXPECT_THROW(bad.validate(), Error);
  bad = s;
  bad.peak = 0.0f;
  EXPECT_THROW(bad.validate(), Error);
}

// bias_e += γ·sign(mean − load_e): underloaded experts gain exactly γ, overloaded lose γ,
// experts at the mean keep their bias.
TEST(GateBias, SignAndMagnitude) {
  Tensor bias({4});
  update_gate_bias(bias, {10, 0, 5, 5}, 0.001f);  // mean 5
  EXPECT_EQ(bias[0], -0.001f);
  EXPECT_EQ(bias[1], 0.001f);
  EXPECT_EQ(bias[2], 0.0f);
  EXPECT_EQ(bias[3], 0.0f);
  Tensor b2({2}, 0.25f);
  update_gate_bias(b2, {1, 2}, 0.5f);  // mean 1.5: no expert sits at it
  EXPECT_EQ(b2[0], 0.75f);
  EXPECT_EQ(b2[1], -0.25f);
  EXPECT_THROW(update_gate_bias(bias, {1, 2, 3}, 0.001f), Error);
  EXPECT_THROW(update_gate_bias(bias, {1, 2, 3, -4}, 0.001f), Error);
}

// The sign drives routing toward balance: top-1 routing on score + bias, with expert 0
// favoured and expert 3 disfavoured by a fixed offset; the update must shrink the imbalance
// (the wrong sign would make it grow).
TEST(GateBias, UpdatesBalanceTheLoad) {
  const int E = 4, T = 400;
  const float offset[E] = {0.1f, 0.03f, 0.0f, -0.1f};
  std::mt19937_64 rng(9);
  std::uniform_real_distribution<float> ud(0.0f, 1.0f);
  std::vector<float> scores(T * E);
  for (float& s : scores) s = ud(rng);
  Tensor bias({E});
  auto loads = [&] {
    std::vector<int64_t> load(E, 0);
    for (int t = 0; t < T; ++t) {
      int best = 0;
      for (int e = 1; e < E; ++e)
        if (scores[t * E + e] + offset[e] + bias[e] > scores[t * E + best] + offset[best] + bias[best]) best = e;
      ++load[best];
    }
    return load;
  };
  auto spread = [](const std::vector<int64_t>& l) { return *std::max_element(l.begin(), l.end()) - *std::min_element(l.begin(), l.end()); };
  const int64_t before = spread(loads());
  for (int step = 0; step < 300; ++step) update_gate_bias(bias, loads(), 0.001f);
  const int64_t after = spread(loads());
  EXPECT_GT(before, 100);  // the offsets make it clearly unbalanced to begin with
  EXPECT_LT(after, 20);    // 5% of T: within a few tokens' flip per γ step of balance
  EXPECT_GT(bias[3], bias[0]);
}

// Through the optimizer: every gate.bias of the tiny model (layers and MTP) with its loads.
TEST(GateBias, OptimizerUpdatesEveryLearnedGate) {
  const ModelConfig c = tiny_config();
  Params p = init_params(c, 5);
  const Params before = p;
  const Optimizer opt(c, OptimizerConfig{});
  std::map<std::string, std::vector<int64_t>> loads;
  for (const TensorSpec& s : tensor_table(c))
    if (s.group == ParamGroup::GateBias) {
      std::vector<int64_t> l(c.n_routed_experts, 4);
      l[0] = 20;  // mean = 4 + 16/E: expert 0 over, the others under
      loads[s.name] = l;
    }
  ASSERT_EQ(loads.size(), static_cast<size_t>(c.num_hidden_layers - c.num_hash_layers + c.num_nextn_predict_layers));
  opt.update_gate_biases(p, loads);
  for (const auto& [name, l] : loads) {
    EXPECT_EQ(p.at(name)[0], before.at(name)[0] - 0.001f) << name;
    for (int e = 1; e < c.n_routed_experts; ++e) EXPECT_EQ(p.at(name)[e], before.at(name)[e] + 0.001f) << name;
  }
  auto missing = loads;
  missing.erase(missing.begin());
  EXPECT_THROW(opt.update_gate_biases(p, missing), Error);
  auto extra = loads;
  extra["layers.0.ffn.gate.tid2eid"] = std::vector<int64_t>(c.n_routed_experts, 1);  // hash layer: no bias
  EXPECT_THROW(opt.update_gate_biases(p, extra), Error);
  auto short_load = loads;
  short_load.rbegin()->second.pop_back();
  EXPECT_THROW(opt.update_gate_biases(p, short_load), Error);
  // the failed calls changed nothing
  for (const auto& [name, l] : loads) EXPECT_EQ(p.at(name)[1], before.at(name)[1] + 0.001f) << name;
}

// Run 5 steps straight; run 3, save the state through a safetensors file, load it into a
// fresh optimizer and run 2 more (steps 3 and 4, in the warm-up, constant and decay phases):
// every parameter is bit-identical.
TEST(Optimizer, ResumeFromSavedStateIsBitIdentical) {
  const std::vector<TensorSpec> table = small_table();
  const OptimizerConfig cfg = small_config();
  Params straight = random_params(table, 1);
  Params resumed = straight;
  Optimizer a(table, cfg);
  for (int s = 0; s < 5; ++s) {
    auto g = random_grads(table, 100 + s);
    a.step(straight, g);
  }

  std::string path;
  {
    Optimizer b(table, cfg);
    for (int s = 0; s < 3; ++s) {
      auto g = random_grads(table, 100 + s);
      b.step(resumed, g);
    }
    std::map<std::string, TensorBlob> blobs;
    for (const auto& [name, t] : b.state()) blobs[name] = blob_f32(t);
    path = testing_io::fresh_dir("state") + "/optimizer.safetensors";
    write_safetensors(path, blobs);
  }
  Optimizer c(table, cfg);
  SafetensorsFile file(path);
  std::map<std::string, Tensor> loaded;
  for (const auto& [name, info] : file.tensors()) loaded[name] = file.read_f32(name);
  c.load_state(loaded);
  EXPECT_EQ(c.steps_done(), 3);
  EXPECT_EQ(c.next_lr(), a.config().schedule.at(3));
  for (int s = 3; s < 5; ++s) {
    auto g = random_grads(table, 100 + s);
    c.step(resumed, g);
  }
  for (const auto& [name, t] : straight.f32) EXPECT_TRUE(same_bits(resumed.at(name), t)) << name;
  const auto sa = a.state(), sc = c.state();
  for (const auto& [name, t] : sa) EXPECT_TRUE(same_bits(sc.at(name), t)) << name;
}

TEST(Optimizer, LoadStateRejectsAnotherModelsState) {
  const std::vector<TensorSpec> table = small_table();
  Optimizer opt(table, small_config());
  const std::map<std::string, Tensor> good = opt.state();
  auto missing = good;
  missing.erase("v.embed");
  EXPECT_THROW(opt.load_state(missing), Error);
  auto misshapen = good;
  misshapen["m.w"] = Tensor({10, 6});
  EXPECT_THROW(opt.load_state(misshapen), Error);
  auto extra = good;
  extra["m.other"] = Tensor({1});
  EXPECT_THROW(opt.load_state(extra), Error);
  auto bad_step = good;
  bad_step["step"] = Tensor({1}, 2.5f);
  EXPECT_THROW(opt.load_state(bad_step), Error);
  // nothing was half-loaded by the failures
  EXPECT_EQ(opt.steps_done(), 0);
  opt.load_state(good);
}

namespace {

// A 2-layer MLP y = W2·tanh(W1·x) + b with the loss ½·mean_n ‖y_n − target_n‖², and its
// gradient by hand: X [N, I], W1 [H, I], W2 [O, H], b [O], targets [N, O].
struct Mlp {
  int64_t N = 16, I = 8, H = 32, O = 4;
  Tensor X, targets;

  double loss_and_grads(const Params& p, std::map<std::string, Tensor>* grads) const {
    const Tensor &W1 = p.at("w1"), &W2 = p.at("w2"), &b = p.at("b");
    Tensor h({N, H}), dy({N, O});
    double loss = 0;
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t j = 0; j < H; ++j) {
        double acc = 0;
        for (int64_t i = 0; i < I; ++i) acc += W1[j * I + i] * X[n * I + i];
        h[n * H + j] = static_cast<float>(std::tanh(acc));
      }
      for (int64_t o = 0; o < O; ++o) {
        double y = b[o];
        for (int64_t j = 0; j < H; ++j) y += W2[o * H + j] * h[n * H + j];
        const double r = y - targets[n * O + o];
        loss += 0.5 * r * r / N;
        dy[n * O + o] = static_cast<float>(r / N);
      }
    }
    Tensor gW1({H, I}), gW2({O, H}), gb({O});
    for (int64_t n = 0; n < N; ++n)
      for (int64_t j = 0; j < H; ++j) {
        double dh = 0;
        for (int64_t o = 0; o < O; ++o) {
          dh += dy[n * O + o] * W2[o * H + j];
          gW2[o * H + j] += dy[n * O + o] * h[n * H + j];
        }
        const double dpre = dh * (1.0 - h[n * H + j] * h[n * H + j]);
        for (int64_t i = 0; i < I; ++i) gW1[j * I + i] += static_cast<float>(dpre * X[n * I + i]);
      }
    for (int64_t n = 0; n < N; ++n)
      for (int64_t o = 0; o < O; ++o) gb[o] += dy[n * O + o];
    (*grads)["w1"] = gW1;
    (*grads)["w2"] = gW2;
    (*grads)["b"] = gb;
    return loss;
  }
};

// Trains the MLP with the matrices in `matrix_group`; returns (first loss, last loss).
std::pair<double, double> memorize(ParamGroup matrix_group, float peak) {
  Mlp mlp;
  std::mt19937_64 rng(21);
  mlp.X = random_tensor({mlp.N, mlp.I}, rng);
  mlp.targets = random_tensor({mlp.N, mlp.O}, rng);
  const std::vector<TensorSpec> table = {spec("w1", {mlp.H, mlp.I}, matrix_group),
                                         spec("w2", {mlp.O, mlp.H}, matrix_group),
                                         spec("b", {mlp.O}, ParamGroup::AdamWNoDecay)};
  Params p;
  p.f32["w1"] = random_tensor({mlp.H, mlp.I}, rng, 1.0f / std::sqrt(static_cast<float>(mlp.I)));
  p.f32["w2"] = random_tensor({mlp.O, mlp.H}, rng, 1.0f / std::sqrt(static_cast<float>(mlp.H)));
  p.f32["b"] = Tensor({mlp.O});
  OptimizerConfig cfg;
  cfg.schedule.peak = peak;
  cfg.schedule.warmup_steps = 20;
  cfg.schedule.constant_steps = 300;
  cfg.schedule.decay_steps = 280;
  Optimizer opt(table, cfg);
  std::map<std::string, Tensor> grads;
  const double first = mlp.loss_and_grads(p, &grads);
  double last = first;
  for (int s = 0; s < 600; ++s) {
    opt.step(p, grads);
    last = mlp.loss_and_grads(p, &grads);
  }
  return {first, last};
}

}  // namespace

// 16 random targets, 32 hidden units: both optimizers drive the loss to near zero
// (1e-4 of where it starts) with the default decay and clipping in place.
TEST(Optimizer, MemorizesWithMuon) {
  const auto [first, last] = memorize(ParamGroup::Muon, 0.02f);
  EXPECT_LT(last, 1e-4 * first) << "first " << first << " last " << last;
}

TEST(Optimizer, MemorizesWithAdamW) {
  const auto [first, last] = memorize(ParamGroup::AdamW, 0.02f);
  EXPECT_LT(last, 1e-4 * first) << "first " << first << " last " << last;
}
