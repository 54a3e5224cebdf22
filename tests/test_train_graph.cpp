// Properties of the training graph beyond finite differences: its forward is the inference
// forward, the memory policies give the same gradients, threads do not change them beyond
// rounding, the dense phase equals the sparse one when top-K keeps every entry, and the
// memory accounting is exact.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>

#include "infer/parity.h"
#include "model/model.h"
#include "model_test_util.h"
#include "train/train_graph.h"

using namespace dsv4;
using namespace dsv4::testing_util;

namespace {

double rel_error(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// tiny_config with narrower tensors: these tests run several steps each.
ModelConfig small_config(TinyOptions o = {}) {
  ModelConfig c = tiny_config(o);
  c.hidden_size = 32;
  c.moe_intermediate_size = 16;
  c.num_attention_heads = 2;
  c.head_dim = 32;
  c.qk_rope_head_dim = 16;
  c.q_lora_rank = 16;
  c.o_lora_rank = 8;
  c.index_head_dim = 32;
  return c;
}

}  // namespace

// The training forward (sparse phase, quantization on) computes the logits of a prefill.
TEST(TrainGraph, ForwardIsTheInferenceForward) {
  const Model m = Model::load(std::string(DSV4_FIXTURES) + "/tiny-fp32");
  const ModelConfig& c = m.config();
  const int64_t B = 2, T = 96;
  TrainBatch batch{B, T, random_ids(c, B * T, 5)};
  TrainResult<float> r = train_step(c, view_of(m.params()), batch, TrainOptions{}, /*backward=*/false,
                                    /*keep_logits=*/true);
  std::vector<SequenceState> states;
  for (int64_t b = 0; b < B; ++b) states.push_back(m.new_state());
  std::vector<Chunk> chunks;
  for (int64_t b = 0; b < B; ++b)
    chunks.push_back({&states[b], std::vector<int64_t>(batch.ids.begin() + b * T, batch.ids.begin() + (b + 1) * T)});
  const ForwardOut ref = m.forward(chunks);
  ASSERT_EQ(r.logits.size(), ref.logits.data.size());
  const LogitStats s = compare_logits(r.logits.data(), ref.logits.ptr(), B * T, c.vocab_size);
  std::printf("train vs inference logits: mean|d| %.2e max|d| %.2e argmax %.4f\n", s.mean_abs, s.max_abs,
              s.argmax_agree);
  EXPECT_TRUE(s.passes());
  EXPECT_LT(s.mean_abs, 1e-5);  // the same float32 ops in the same order but for the MoE sums
}

// Recomputing a block before its backward reproduces its tape bit for bit, so the two
// memory policies give identical gradients; kept memory is exactly the block inputs.
TEST(TrainGraph, RecomputeGivesTheGradientsOfKeptTapes) {
  const ModelConfig c = small_config();
  const Params p = random_params(c, 21);
  TrainBatch batch{2, 40, random_ids(c, 80, 22)};
  TrainOptions keep, again;
  keep.recompute = false;
  again.recompute = true;
  keep.indexer_weight = again.indexer_weight = 0.3f;
  keep.balance_weight = again.balance_weight = 0.01f;
  const Gradients a = compute_gradients(c, p, batch, keep), b = compute_gradients(c, p, batch, again);
  EXPECT_EQ(a.loss.total, b.loss.total);
  ASSERT_EQ(a.grads.size(), b.grads.size());
  for (const auto& [name, g] : a.grads) EXPECT_EQ(g.data, b.grads.at(name).data) << name;
  // recompute keeps the streams entering each block and the final ones: (L + 1)·B·T·n·D floats
  const size_t streams = size_t(c.num_hidden_layers + 1) * 80 * c.hc_mult * c.hidden_size * sizeof(float);
  EXPECT_EQ(b.memory.kept_bytes, streams);
  EXPECT_GT(a.memory.kept_bytes, streams);  // and every tape besides
}

// Threads only reorder sums: against the float64 gradient, a threaded float run is as close
// as a single-threaded one (STYLE.md: within k times a same-precision reference's error).
TEST(TrainGraph, ThreadsChangeGradientsOnlyByRounding) {
  const ModelConfig c = small_config();
  const Params p = random_params(c, 31);
  TrainBatch batch{2, 48, random_ids(c, 96, 32)};
  TrainOptions o;
  o.quant_sim = false;  // a rounding flip would be a legitimate difference, not a threading one
  const Gradients exact = compute_gradients_f64(c, p, batch, o);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const Gradients one = compute_gradients(c, p, batch, o);
  omp_set_num_threads(std::max(threads, 4));
  const Gradients many = compute_gradients(c, p, batch, o);
  omp_set_num_threads(threads);
  double err_one = 0, err_many = 0;
  for (const auto& [name, g] : exact.grads) {
    err_one = std::max(err_one, rel_error(one.grads.at(name).data, g.data));
    err_many = std::max(err_many, rel_error(many.grads.at(name).data, g.data));
  }
  std::printf("float vs float64 gradients: 1 thread %.2e, %d threads %.2e\n", err_one, std::max(threads, 4), err_many);
  EXPECT_LT(err_one, 1e-4);
  EXPECT_LE(err_many, 4 * err_one);
}

// With K at least the number of entries, top-K selects every entry: the sparse phase is the
// dense phase, so losses and gradients agree (to rounding: the entries are summed in the same order).
TEST(TrainGraph, DensePhaseIsSparseWithEveryEntrySelected) {
  TinyOptions o;
  o.index_topk = 64;
  const ModelConfig c = small_config(o);
  const Params p = random_params(c, 41);
  TrainBatch batch{1, 64, random_ids(c, 64, 42)};
  TrainOptions sparse, dense;
  sparse.phase = AttnPhase::Sparse;
  dense.phase = AttnPhase::Dense;
  const Gradients a = compute_gradients(c, p, batch, sparse), b = compute_gradients(c, p, batch, dense);
  EXPECT_EQ(a.loss.main, b.loss.main);
  EXPECT_EQ(a.loss.mtp, b.loss.mtp);
  ASSERT_EQ(a.grads.size(), b.grads.size());
  for (const auto& [name, g] : a.grads) EXPECT_EQ(g.data, b.grads.at(name).data) << name;
}

TEST(TrainGraph, GradNamesFollowThePhase) {
  const ModelConfig c = tiny_config();
  auto count = [&](AttnPhase phase, float kl, bool indexer) {
    TrainOptions o;
    o.phase = phase;
    o.indexer_weight = kl;
    int n = 0;
    for (const std::string& name : grad_names(c, o)) {
      EXPECT_EQ(name.find("gate.bias"), std::string::npos);
      EXPECT_EQ(name.find("tid2eid"), std::string::npos);
      n += (name.find(".attn.indexer.") != std::string::npos) == indexer;
    }
    return n;
  };
  // 2 CSA layers × (wq_b, weights_proj, compressor wkv, wgate, ape, norm)
  EXPECT_EQ(count(AttnPhase::Sparse, 0.0f, true), 0);
  EXPECT_EQ(count(AttnPhase::Sparse, 0.5f, true), 12);
  EXPECT_EQ(count(AttnPhase::Dense, 0.5f, true), 0);
  EXPECT_EQ(count(AttnPhase::IndexerWarmup, 1.0f, true), 12);
  EXPECT_EQ(count(AttnPhase::IndexerWarmup, 1.0f, false), 0);
}

TEST(TrainGraph, RejectsBadBatches) {
  const ModelConfig c = tiny_config();
  const Params p = random_params(c, 51);
  EXPECT_THROW(compute_gradients(c, p, TrainBatch{1, 1, {3}}, {}), Error);
  EXPECT_THROW(compute_gradients(c, p, TrainBatch{1, 4, {3, 4, 5}}, {}), Error);
  EXPECT_THROW(compute_gradients(c, p, TrainBatch{1, 3, {3, 4, c.vocab_size}}, {}), Error);
}

// The footprint formula (for docs/training.md) is the tapes' own size, in every policy and phase.
TEST(TrainGraph, FootprintIsWhatTheTapesHold) {
  const ModelConfig c = small_config();
  const Params p = random_params(c, 61);
  TrainBatch batch{2, 21, random_ids(c, 42, 62)};
  for (bool recompute : {true, false})
    for (AttnPhase phase : {AttnPhase::Sparse, AttnPhase::Dense, AttnPhase::IndexerWarmup}) {
      TrainOptions o;
      o.recompute = recompute;
      o.phase = phase;
      o.indexer_weight = 0.1f;
      const TrainMemory got = compute_gradients(c, p, batch, o).memory, want = activation_footprint(c, o, 2, 21);
      EXPECT_EQ(got.kept_bytes, want.kept_bytes) << recompute << " " << static_cast<int>(phase);
      EXPECT_EQ(got.transient_bytes, want.transient_bytes) << recompute << " " << static_cast<int>(phase);
    }
}

// A packed row of two documents is the two documents as rows of their own: the same
// layout of sequences, so the same losses and gradients, bit for bit.
TEST(TrainGraph, PackedDocumentsAreSequencesOfTheirOwn) {
  const ModelConfig c = small_config();
  const Params p = random_params(c, 71);
  const std::vector<int64_t> ids = random_ids(c, 40, 72);
  TrainBatch packed{1, 40, ids, {{20, 20}}}, rows{2, 20, ids, {}};
  TrainOptions o;
  o.balance_weight = 0.01f;
  const Gradients a = compute_gradients(c, p, packed, o), b = compute_gradients(c, p, rows, o);
  EXPECT_EQ(a.loss.total, b.loss.total);
  EXPECT_EQ(a.loss.balance, b.loss.balance);
  for (const auto& [name, g] : a.grads) EXPECT_EQ(g.data, b.grads.at(name).data) << name;
  // and a boundary matters: the same ids as one document train differently
  const Gradients whole = compute_gradients(c, p, TrainBatch{1, 40, ids, {}}, o);
  EXPECT_NE(whole.loss.main, a.loss.main);
}
