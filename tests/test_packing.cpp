// Packing equals separate sequences (docs/data.md): documents packed into one row, with their
// boundaries given to the training graph, give the logits, losses and gradients of the same
// documents run as rows of their own, in every attention phase.
#include <gtest/gtest.h>

#include <cmath>

#include "model/weights.h"
#include "train/graph_adapter.h"
#include "train_test_util.h"

namespace dsv4 {
namespace {

// Document d: `len` ids from a fixed pseudo-random sequence (byte tokens 2..257).
std::vector<int64_t> doc(int d, int64_t len) {
  std::vector<int64_t> ids(len);
  uint64_t x = 0x9e3779b97f4a7c15ull * (d + 1);
  for (int64_t i = 0; i < len; ++i) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    ids[i] = 2 + static_cast<int64_t>(x % 256);
  }
  return ids;
}

// Rows of the given documents, each row's segments in order.
PackedRows pack(const std::vector<std::vector<int>>& rows, const std::vector<int64_t>& lens) {
  PackedRows p;
  p.B = static_cast<int64_t>(rows.size());
  for (const auto& row : rows) {
    int64_t at = 0;
    p.starts.emplace_back();
    for (int d : row) {
      p.starts.back().push_back(at);
      const std::vector<int64_t> ids = doc(d, lens[d]);
      p.ids.insert(p.ids.end(), ids.begin(), ids.end());
      at += lens[d];
    }
    p.T = at;
  }
  return p;
}

TrainOptions options(AttnPhase phase) {
  TrainOptions o;
  o.phase = phase;
  o.recompute = false;
  o.balance_weight = 0.01f;
  o.indexer_weight = phase == AttnPhase::Dense ? 0.0f : 0.5f;
  return o;
}

const AttnPhase kPhases[] = {AttnPhase::Dense, AttnPhase::IndexerWarmup, AttnPhase::Sparse};

struct PackingTest : ::testing::Test {
  ModelConfig c = parse_config(testing_train::micro_config());
  Params params = init_params(c, 17);
};

// Six documents of 20 tokens: two rows of three documents against six rows of one. Every
// count a mean divides by is the same, so everything must agree to the bit.
TEST_F(PackingTest, EqualLengthDocumentsGiveIdenticalLossesAndGradients) {
  const std::vector<int64_t> lens(6, 20);
  const PackedRows packed = pack({{0, 1, 2}, {3, 4, 5}}, lens);
  const PackedRows separate = pack({{0}, {1}, {2}, {3}, {4}, {5}}, lens);
  ASSERT_EQ(packed.ids, separate.ids);  // the same ids in the same order, only the boundaries differ
  for (AttnPhase phase : kPhases) {
    SCOPED_TRACE(static_cast<int>(phase));
    const GraphResult a = run_graph(c, params, packed, options(phase), true);
    const GraphResult b = run_graph(c, params, separate, options(phase), true);
    EXPECT_EQ(a.loss.main, b.loss.main);
    EXPECT_EQ(a.loss.mtp, b.loss.mtp);
    EXPECT_EQ(a.loss.balance, b.loss.balance);
    EXPECT_EQ(a.loss.indexer, b.loss.indexer);
    EXPECT_EQ(a.loss.total, b.loss.total);
    EXPECT_EQ(a.expert_loads, b.expert_loads);
    ASSERT_EQ(a.grads.size(), b.grads.size());
    for (const auto& [name, g] : a.grads) EXPECT_EQ(g.data, b.grads.at(name).data) << name;
    if (phase != AttnPhase::IndexerWarmup) EXPECT_GT(a.loss.main, 0.0);
    if (phase != AttnPhase::Dense) EXPECT_GT(a.loss.indexer, 0.0);
  }
  // Without the boundaries the same ids are one sequence per row: a different computation.
  PackedRows unmarked = packed;
  unmarked.starts = {{0}, {0}};
  EXPECT_NE(run_graph(c, params, unmarked, options(AttnPhase::Sparse), false).loss.main,
            run_graph(c, params, packed, options(AttnPhase::Sparse), false).loss.main);
}

// Documents of different lengths (one of a single token) in one row: each document's logits
// are those of the document alone, and the loss is the token-weighted mean of theirs.
TEST_F(PackingTest, MixedLengthDocumentsGiveTheLogitsOfEachDocumentAlone) {
  const std::vector<int64_t> lens = {9, 23, 1, 15};
  const PackedRows packed = pack({{0, 1, 2, 3}}, lens);
  const int64_t V = c.vocab_size;
  for (AttnPhase phase : {AttnPhase::Dense, AttnPhase::Sparse}) {
    SCOPED_TRACE(static_cast<int>(phase));
    TrainBatch pb{packed.B, packed.T, packed.ids, {packed.lengths(0)}};
    const TrainResult<float> whole = train_step(c, view_of(params), pb, options(phase), false, true);
    double weighted = 0;
    int64_t count = 0, row0 = 0;
    for (int d = 0; d < 4; ++d) {
      if (lens[d] >= 2) {
        const TrainBatch alone{1, lens[d], doc(d, lens[d]), {}};
        const TrainResult<float> r = train_step(c, view_of(params), alone, options(phase), false, true);
        // Alone, the BLAS products run over fewer rows: allow float32 rounding of the
        // accumulation order, 1e-5 of the logits' scale (they are O(1) here).
        float worst = 0;
        for (int64_t i = 0; i < lens[d] * V; ++i)
          worst = std::max(worst, std::abs(r.logits[i] - whole.logits[row0 * V + i]));
        EXPECT_LE(worst, 1e-5f) << "document " << d;
        weighted += r.loss.main * static_cast<double>(lens[d] - 1);
        count += lens[d] - 1;
      }
      row0 += lens[d];
    }
    EXPECT_NEAR(whole.loss.main, weighted / count, 1e-6);
  }
}

TEST_F(PackingTest, BadBoundariesAreErrors) {
  TrainBatch b{1, 10, doc(0, 10), {{4, 5}}};
  EXPECT_THROW(train_step(c, view_of(params), b, options(AttnPhase::Dense), false), Error);
  b.seq_lens = {{4, 0, 6}};
  EXPECT_THROW(train_step(c, view_of(params), b, options(AttnPhase::Dense), false), Error);
  b.seq_lens = {{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}};  // nothing to predict
  EXPECT_THROW(train_step(c, view_of(params), b, options(AttnPhase::Dense), false), Error);
}

}  // namespace
}  // namespace dsv4
