// The data loader (docs/data.md): the split, the seeded shuffle, packing with segment starts,
// and a restored state continuing exactly.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include <nlohmann/json.hpp>

#include "io_test_util.h"
#include "train/data_loader.h"

namespace dsv4 {
namespace {

using testing_io::fresh_dir;

// 40 documents; document d is 1 + (d·7 mod 23) tokens, every token = 1000·d + i (unique).
std::string make_corpus(const std::string& dir) {
  std::vector<uint64_t> offsets{0};
  std::vector<uint32_t> tokens;
  for (uint32_t d = 0; d < 40; ++d) {
    const uint32_t len = 1 + (d * 7) % 23;
    for (uint32_t i = 0; i < len; ++i) tokens.push_back(1000 * d + i);
    offsets.push_back(tokens.size());
    if (d == 19) {  // two shards
      write_token_shard(dir + "/s0.tok", {7, 50000}, offsets, tokens);
      offsets.assign(1, 0);
      tokens.clear();
    }
  }
  write_token_shard(dir + "/s1.tok", {7, 50000}, offsets, tokens);
  return dir;
}

uint32_t doc_of(int64_t id) { return static_cast<uint32_t>(id / 1000); }

TEST(DataLoader, SplitIsDisjointCoversEverythingAndDependsOnlyOnTheSplitSeed) {
  const TokenCorpus c(make_corpus(fresh_dir("c")));
  DataLoader a(c, 0.1, 3, 0), b(c, 0.1, 3, 99), other(c, 0.1, 4, 0);
  EXPECT_EQ(a.val_docs().size(), 4u);
  EXPECT_EQ(a.train_docs().size(), 36u);
  std::set<uint64_t> all(a.val_docs().begin(), a.val_docs().end());
  all.insert(a.train_docs().begin(), a.train_docs().end());
  EXPECT_EQ(all.size(), 40u);
  EXPECT_EQ(a.val_docs(), b.val_docs());  // the shuffle seed does not move the split
  EXPECT_NE(a.val_docs(), other.val_docs());
  EXPECT_EQ(DataLoader(c, 0.001, 3, 0).val_docs().size(), 1u);  // at least one when > 0
  EXPECT_TRUE(DataLoader(c, 0.0, 3, 0).val_docs().empty());
  EXPECT_ERROR_CONTAINS(DataLoader(c, 1.0, 3, 0), "must lie in [0, 1)");
}

TEST(DataLoader, PacksWholeEpochsInTheSeededOrderWithSegmentStarts) {
  const TokenCorpus c(make_corpus(fresh_dir("c")));
  DataLoader l(c, 0.1, 3, 5);
  // Enough rows for two epochs: the stream of ids is each epoch's documents in full, in order.
  const int64_t T = 16;
  std::vector<int64_t> stream;
  std::vector<std::pair<int64_t, int64_t>> segs;  // (position in stream, length)
  while (l.state().epoch < 2) {
    const PackedRows r = l.next(3, T);
    ASSERT_EQ(r.ids.size(), 3u * T);
    for (int64_t b = 0; b < 3; ++b) {
      const std::vector<int64_t> lens = r.lengths(b);
      ASSERT_EQ(r.starts[b][0], 0);
      int64_t at = 0;
      for (size_t s = 0; s < lens.size(); ++s) {
        ASSERT_EQ(r.starts[b][s], at);
        // inside a segment: one document, consecutive tokens
        for (int64_t t = 1; t < lens[s]; ++t) ASSERT_EQ(r.ids[b * T + at + t], r.ids[b * T + at + t - 1] + 1);
        // a new segment starts a document, or continues one cut at the previous row's end
        if (s > 0) ASSERT_EQ(r.ids[b * T + at] % 1000, 0) << "segment " << s << " of row " << b;
        segs.push_back({static_cast<int64_t>(stream.size()) + at, lens[s]});
        at += lens[s];
      }
      stream.insert(stream.end(), r.ids.begin() + b * T, r.ids.begin() + (b + 1) * T);
    }
  }
  // Reassemble the documents of the first two epochs from the stream.
  std::vector<uint32_t> order;
  for (size_t i = 0; i < stream.size(); ++i)
    if (stream[i] % 1000 == 0) order.push_back(doc_of(stream[i]));
  ASSERT_GE(order.size(), 72u);
  const std::vector<uint32_t> e0(order.begin(), order.begin() + 36), e1(order.begin() + 36, order.begin() + 72);
  std::vector<uint32_t> s0 = e0, s1 = e1;
  std::sort(s0.begin(), s0.end());
  std::sort(s1.begin(), s1.end());
  EXPECT_EQ(s0, std::vector<uint32_t>(l.train_docs().begin(), l.train_docs().end()));  // each epoch: every training doc once
  EXPECT_EQ(s0, s1);
  EXPECT_NE(e0, e1);  // and a different order each epoch
  std::vector<uint32_t> sorted_train(l.train_docs().begin(), l.train_docs().end());
  EXPECT_NE(e0, sorted_train);  // shuffled
  for (uint64_t v : l.val_docs()) EXPECT_EQ(std::count(order.begin(), order.end(), v), 0);

  // The same seed gives the same rows; another seed other rows.
  DataLoader same(c, 0.1, 3, 5), other(c, 0.1, 3, 6);
  const PackedRows first_same = same.next(3, T), first_other = other.next(3, T);
  DataLoader again(c, 0.1, 3, 5);
  EXPECT_EQ(again.next(3, T).ids, first_same.ids);
  EXPECT_NE(first_other.ids, first_same.ids);
}

TEST(DataLoader, ARestoredStateContinuesExactlyWhateverTheSequenceLength) {
  const TokenCorpus c(make_corpus(fresh_dir("c")));
  DataLoader a(c, 0.1, 3, 11);
  for (int i = 0; i < 7; ++i) a.next(2, 16);
  const nlohmann::json saved = loader_state_to_json(a.state());
  std::vector<PackedRows> want;
  for (int64_t T : {16, 32, 8, 64, 64, 64, 64}) want.push_back(a.next(2, T));  // crosses an epoch

  DataLoader b(c, 0.1, 3, 11);
  b.restore(loader_state_from_json(nlohmann::json::parse(saved.dump())));
  size_t i = 0;
  for (int64_t T : {16, 32, 8, 64, 64, 64, 64}) {
    const PackedRows r = b.next(2, T);
    EXPECT_EQ(r.ids, want[i].ids) << "batch " << i;
    EXPECT_EQ(r.starts, want[i].starts) << "batch " << i;
    ++i;
  }
  EXPECT_EQ(b.state(), a.state());
  EXPECT_GE(a.state().epoch, 1u);

  LoaderState bad = a.state();
  bad.cursor = 36;
  EXPECT_ERROR_CONTAINS(b.restore(bad), "cursor 36 is past the 36 training documents");
  bad.cursor = 0;
  bad.offset = 1000;
  EXPECT_ERROR_CONTAINS(b.restore(bad), "offset 1000 is past the end");
  EXPECT_ERROR_CONTAINS(loader_state_from_json(nlohmann::json{{"epoch", 1}, {"cursor", -1}, {"offset", 0}}),
                        "'cursor' must be a non-negative integer");
}

TEST(DataLoader, ValidationRowsAreFixedFullRowsOfTheHeldOutDocuments) {
  const TokenCorpus c(make_corpus(fresh_dir("c")));
  DataLoader l(c, 0.25, 3, 0);
  const PackedRows v1 = l.validation(8, 100);
  l.next(4, 8);
  const PackedRows v2 = l.validation(8, 100);
  EXPECT_EQ(v1.ids, v2.ids);
  EXPECT_EQ(v1.B, static_cast<int64_t>(l.val_tokens() / 8));  // every full row, the partial last one dropped
  std::set<uint64_t> val(l.val_docs().begin(), l.val_docs().end());
  for (int64_t id : v1.ids) EXPECT_TRUE(val.count(doc_of(id))) << id;
  EXPECT_EQ(l.validation(8, 2).B, 2);
  EXPECT_ERROR_CONTAINS(l.validation(100000, 1), "fewer than one row of 100000");
}

TEST(DataLoader, SeededPermutationIsAFixedFunctionOfTheSeed) {
  const std::vector<uint64_t> p = seeded_permutation(10, 42);
  std::vector<uint64_t> s = p;
  std::sort(s.begin(), s.end());
  for (uint64_t i = 0; i < 10; ++i) EXPECT_EQ(s[i], i);
  EXPECT_EQ(seeded_permutation(10, 42), p);
  EXPECT_NE(seeded_permutation(10, 43), p);
}

}  // namespace
}  // namespace dsv4
