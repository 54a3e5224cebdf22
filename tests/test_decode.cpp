// Decode equals prefill (model.md §11): a prefill followed by decode steps, or a
// chunked prefill, gives the logits of one long prefill, by the fixture tolerance rule
// (FP8/FP4 rounding flips make bit equality impossible, §12). Also causality, the
// window, and batches of sequences of different lengths.
#include <gtest/gtest.h>

#include "infer/parity.h"
#include "model/model.h"
#include "model_test_util.h"

using namespace dsv4;
using namespace dsv4::testing_util;

namespace {

// Feeds ids in chunks of the given sizes (the last size repeats) and returns all logits.
Tensor run_chunks(const Model& m, const std::vector<int64_t>& ids, std::vector<int64_t> sizes) {
  const int64_t V = m.config().vocab_size, T = ids.size();
  SequenceState s = m.new_state();
  Tensor out({T, V});
  int64_t p = 0;
  size_t k = 0;
  while (p < T) {
    int64_t n = std::min(sizes[std::min(k++, sizes.size() - 1)], T - p);
    ForwardOut o = m.forward({{&s, std::vector<int64_t>(ids.begin() + p, ids.begin() + p + n)}});
    std::copy(o.logits.data.begin(), o.logits.data.end(), out.ptr() + p * V);
    p += n;
  }
  EXPECT_EQ(s.pos, T);
  return out;
}

void expect_same(const Model& m, const Tensor& a, const Tensor& b, const char* what) {
  LogitStats s = compare_logits(a.ptr(), b.ptr(), a.dim(0), m.config().vocab_size);
  EXPECT_TRUE(s.passes()) << what << ": mean " << s.mean_abs << " max " << s.max_abs << " argmax " << s.argmax_agree;
}

struct Shape_ { const char* name; TinyOptions o; };

}  // namespace

class DecodeShapes : public ::testing::TestWithParam<Shape_> {};

TEST_P(DecodeShapes, DecodeAndChunkedPrefillEqualOnePrefill) {
  ModelConfig c = tiny_config(GetParam().o);
  Model m(c, random_params(c, 7));
  std::vector<int64_t> ids = random_ids(c, 70, 11);
  Tensor full = run_chunks(m, ids, {70});
  expect_same(m, run_chunks(m, ids, {23, 1}), full, "prefill 23 + decode");
  expect_same(m, run_chunks(m, ids, {1}), full, "decode from the first token");
  expect_same(m, run_chunks(m, ids, {5, 13, 7, 2}), full, "uneven chunks");
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, DecodeShapes,
    ::testing::Values(Shape_{"flash_like", {}},
                      Shape_{"hc1_softmax", {1, ScoringFunc::Softmax, {4, 0, 8}, 1, true, 8, 4}},
                      Shape_{"hc3_sigmoid_noyarn", {3, ScoringFunc::Sigmoid, {8, 4, 4}, 2, false, 6, 3}},
                      Shape_{"csa_first_window_large", {2, ScoringFunc::SqrtSoftplus, {4, 16}, 0, true, 32, 8}}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Decode, FixtureModelDecodeEqualsPrefill) {
  Model m = Model::load(std::string(DSV4_FIXTURES) + "/tiny-fp32");
  std::vector<int64_t> ids = random_ids(m.config(), 120, 1);
  expect_same(m, run_chunks(m, ids, {37, 1}), run_chunks(m, ids, {120}), "fixture prefill 37 + decode");
}

TEST(Decode, BatchOfDifferentLengthsEqualsSeparateRuns) {
  ModelConfig c = tiny_config();
  Model m(c, random_params(c, 3));
  const int64_t V = c.vocab_size;
  std::vector<std::vector<int64_t>> seqs = {random_ids(c, 1, 1), random_ids(c, 33, 2), random_ids(c, 17, 3)};
  std::vector<SequenceState> states;
  for (size_t b = 0; b < seqs.size(); ++b) states.push_back(m.new_state());
  // One batched prefill of three different lengths, then 6 batched decode steps.
  std::vector<Chunk> pre;
  for (size_t b = 0; b < seqs.size(); ++b) pre.push_back({&states[b], seqs[b]});
  ForwardOut po = m.forward(pre);
  std::vector<std::vector<int64_t>> more = {random_ids(c, 6, 4), random_ids(c, 6, 5), random_ids(c, 6, 6)};
  std::vector<Tensor> dec;
  for (int step = 0; step < 6; ++step) {
    std::vector<Chunk> batch;
    for (size_t b = 0; b < seqs.size(); ++b) batch.push_back({&states[b], {more[b][step]}});
    dec.push_back(m.forward(batch).logits);
  }
  int64_t row0 = 0;
  for (size_t b = 0; b < seqs.size(); ++b) {
    std::vector<int64_t> all = seqs[b];
    all.insert(all.end(), more[b].begin(), more[b].end());
    Tensor alone = run_chunks(m, all, {static_cast<int64_t>(all.size())});
    const int64_t P = seqs[b].size();
    Tensor got({static_cast<int64_t>(all.size()), V});
    std::copy(po.logits.ptr() + row0 * V, po.logits.ptr() + (row0 + P) * V, got.ptr());
    for (int step = 0; step < 6; ++step)
      std::copy(dec[step].ptr() + b * V, dec[step].ptr() + (b + 1) * V, got.ptr() + (P + step) * V);
    expect_same(m, got, alone, "batched vs alone");
    row0 += P;
  }
}

TEST(Decode, CausalAndWindowed) {
  // One window-only layer: the logits at t depend on tokens max(0, t−W+1)..t only.
  TinyOptions o;
  o.ratios = {0};
  o.window = 4;
  ModelConfig c = tiny_config(o);
  Model m(c, random_params(c, 9));
  const int64_t V = c.vocab_size, T = 12;
  std::vector<int64_t> ids = random_ids(c, T, 2);
  Tensor base = run_chunks(m, ids, {T});
  for (int64_t changed : {0, 5}) {
    std::vector<int64_t> ids2 = ids;
    ids2[changed] = (ids2[changed] + 1) % V;
    Tensor other = run_chunks(m, ids2, {T});
    for (int64_t t = 0; t < T; ++t) {
      const bool sees = t >= changed && t - changed < c.sliding_window;
      double d = compare_logits(other.ptr() + t * V, base.ptr() + t * V, 1, V).max_abs;
      // "not reached" allows float noise only: other rows may share a BLAS call with the changed one
      if (sees) EXPECT_GT(d, 1e-3) << "token " << changed << " should reach position " << t;
      else EXPECT_LT(d, 1e-5) << "token " << changed << " must not reach position " << t;
    }
  }
}

TEST(Decode, CompressedEntriesReachBeyondTheWindow) {
  // An HCA layer (m = 4): a token outside the window still reaches later positions, but only
  // once its block's entry exists ((i+1)·m <= t+1).
  TinyOptions o;
  o.ratios = {4};
  o.window = 2;
  o.hash_layers = 0;
  ModelConfig c = tiny_config(o);
  c.compress_ratios = {8, 0};
  Model m(c, random_params(c, 4));
  const int64_t V = c.vocab_size, T = 20;
  std::vector<int64_t> ids = random_ids(c, T, 8);
  Tensor base = run_chunks(m, ids, {T});
  std::vector<int64_t> ids2 = ids;
  ids2[1] = (ids2[1] + 1) % V;  // block 0 = tokens 0..7: entry 0 exists from t = 7
  Tensor other = run_chunks(m, ids2, {T});
  for (int64_t t = 3; t < T; ++t) {
    double d = compare_logits(other.ptr() + t * V, base.ptr() + t * V, 1, V).max_abs;
    if (t < 7) EXPECT_LT(d, 1e-5) << t;
    else EXPECT_GT(d, 1e-3) << t;
  }
}

TEST(Decode, StateGrowsWithCompressedEntriesOnly) {
  ModelConfig c = tiny_config();
  Model m(c, random_params(c, 1));
  SequenceState s = m.new_state();
  m.forward({{&s, random_ids(c, 64, 1)}});
  const size_t at64 = s.bytes();
  m.forward({{&s, random_ids(c, 64, 2)}});
  const size_t at128 = s.bytes();
  // Growth per 64 tokens: entries of the m = 4 and m = 16 layers (main + indexer), not the window.
  size_t per64 = 0;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    int r = c.ratio(l);
    if (r > 0) per64 += (64 / r) * c.head_dim * sizeof(float);
    if (r == 4) per64 += (64 / r) * c.index_head_dim * sizeof(float);
  }
  EXPECT_EQ(at128 - at64, per64);
  // The footprint accounting is exact at every length (pending rows included).
  SequenceState t = m.new_state();
  for (int64_t n : {1, 3, 4, 5, 17, 33}) {
    m.forward({{&t, random_ids(c, n, n)}});
    EXPECT_EQ(state_footprint(c).total(t.pos), t.bytes() - t.mtp[0].bytes()) << "after " << t.pos << " tokens";
  }
}
