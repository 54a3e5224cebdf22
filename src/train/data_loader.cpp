#include "train/data_loader.h"

#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace dsv4 {

namespace {

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Uniform in [0, n) without modulo bias (rejection).
uint64_t below(uint64_t n, uint64_t& rng) {
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t r;
  do r = splitmix64(rng);
  while (r >= limit);
  return r % n;
}

// Packs documents into rows of T tokens: from `offset` into `doc`, then the documents that
// `advance` names in turn.
struct Packer {
  const TokenCorpus& corpus;
  int64_t T;

  // Fills one row; returns false when the documents ran out before it was full.
  template <class NextDoc>
  bool row(std::vector<int64_t>& ids, std::vector<int64_t>& starts, uint64_t& doc, uint64_t& offset,
           NextDoc&& advance) const {
    int64_t fill = 0;
    while (fill < T) {
      const std::span<const uint32_t> toks = corpus.doc(doc);
      const int64_t take = std::min<int64_t>(static_cast<int64_t>(toks.size() - offset), T - fill);
      starts.push_back(fill);
      ids.insert(ids.end(), toks.begin() + offset, toks.begin() + offset + take);
      fill += take;
      offset += take;
      if (offset == toks.size()) {
        offset = 0;
        if (!advance(doc) && fill < T) return false;
      }
    }
    return true;
  }
};

}  // namespace

std::vector<int64_t> PackedRows::lengths(int64_t row) const {
  const std::vector<int64_t>& s = starts.at(row);
  std::vector<int64_t> len(s.size());
  for (size_t i = 0; i < s.size(); ++i) len[i] = (i + 1 < s.size() ? s[i + 1] : T) - s[i];
  return len;
}

nlohmann::json loader_state_to_json(const LoaderState& s) {
  return {{"epoch", s.epoch}, {"cursor", s.cursor}, {"offset", s.offset}};
}

LoaderState loader_state_from_json(const nlohmann::json& j) {
  LoaderState s;
  for (auto [key, field] : {std::pair{"epoch", &s.epoch}, {"cursor", &s.cursor}, {"offset", &s.offset}}) {
    DSV4_CHECK(j.is_object() && j.contains(key) && j[key].is_number_integer() &&
                   (j[key].is_number_unsigned() || j[key].get<int64_t>() >= 0),
               "loader state", "'", key, "' must be a non-negative integer");
    *field = j[key].get<uint64_t>();
  }
  return s;
}

std::vector<uint64_t> seeded_permutation(uint64_t n, uint64_t seed) {
  std::vector<uint64_t> p(n);
  for (uint64_t i = 0; i < n; ++i) p[i] = i;
  uint64_t rng = seed;
  for (uint64_t i = n; i > 1; --i) std::swap(p[i - 1], p[below(i, rng)]);
  return p;
}

DataLoader::DataLoader(const TokenCorpus& corpus, double val_fraction, uint64_t split_seed, uint64_t shuffle_seed)
    : corpus_(corpus), shuffle_seed_(shuffle_seed) {
  DSV4_CHECK(val_fraction >= 0 && val_fraction < 1, "loader", "validation fraction ", val_fraction,
             " must lie in [0, 1)");
  const uint64_t N = corpus.doc_count();
  uint64_t n_val = static_cast<uint64_t>(std::llround(val_fraction * static_cast<double>(N)));
  if (val_fraction > 0 && n_val == 0) n_val = 1;
  DSV4_CHECK(n_val < N, "loader", "corpus '", corpus.path(), "' has ", N, " documents: too few to hold out ", n_val,
             " for validation and still train");
  const std::vector<uint64_t> perm = seeded_permutation(N, split_seed);
  val_docs_.assign(perm.begin(), perm.begin() + n_val);
  train_docs_.assign(perm.begin() + n_val, perm.end());
  std::sort(val_docs_.begin(), val_docs_.end());
  std::sort(train_docs_.begin(), train_docs_.end());
  for (uint64_t d : train_docs_) train_tokens_ += corpus.doc(d).size();
  for (uint64_t d : val_docs_) val_tokens_ += corpus.doc(d).size();
  set_epoch(0);
}

void DataLoader::set_epoch(uint64_t epoch) {
  // Each epoch's order depends only on (seed, epoch), so a restored state rebuilds it.
  uint64_t mix = shuffle_seed_ ^ (0x5851f42d4c957f2dull * (epoch + 1));
  const std::vector<uint64_t> perm = seeded_permutation(train_docs_.size(), splitmix64(mix));
  order_.resize(perm.size());
  for (size_t i = 0; i < perm.size(); ++i) order_[i] = train_docs_[perm[i]];
  state_ = LoaderState{epoch, 0, 0};
}

void DataLoader::restore(const LoaderState& s) {
  DSV4_CHECK(s.cursor < train_docs_.size(), "loader", "saved cursor ", s.cursor, " is past the ",
             train_docs_.size(), " training documents (was the state saved for another corpus or split?)");
  set_epoch(s.epoch);
  const uint64_t len = corpus_.doc(order_[s.cursor]).size();
  DSV4_CHECK(s.offset < len, "loader", "saved offset ", s.offset, " is past the end of document ",
             order_[s.cursor], " (", len, " tokens; another corpus or split?)");
  state_ = s;
}

PackedRows DataLoader::next(int64_t B, int64_t T) {
  DSV4_CHECK(B > 0 && T > 0, "loader", "rows [", B, ", ", T, "] must be positive");
  PackedRows out;
  out.B = B;
  out.T = T;
  out.ids.reserve(B * T);
  out.starts.resize(B);
  const Packer packer{corpus_, T};
  uint64_t doc = order_[state_.cursor];
  auto advance = [&](uint64_t& d) {
    if (++state_.cursor == order_.size()) set_epoch(state_.epoch + 1);  // an endless stream of epochs
    d = order_[state_.cursor];
    return true;
  };
  for (int64_t b = 0; b < B; ++b) packer.row(out.ids, out.starts[b], doc, state_.offset, advance);
  return out;
}

PackedRows DataLoader::validation(int64_t T, int64_t max_rows) const {
  DSV4_CHECK(T > 0 && max_rows > 0, "loader", "validation rows [", max_rows, ", ", T, "] must be positive");
  DSV4_CHECK(!val_docs_.empty(), "loader", "there is no validation split (validation fraction 0)");
  PackedRows out;
  out.T = T;
  const Packer packer{corpus_, T};
  size_t i = 0;
  uint64_t doc = val_docs_[0], offset = 0;
  auto advance = [&](uint64_t& d) {
    if (++i == val_docs_.size()) return false;
    d = val_docs_[i];
    return true;
  };
  while (out.B < max_rows) {
    std::vector<int64_t> ids, starts;
    if (!packer.row(ids, starts, doc, offset, advance)) break;
    out.ids.insert(out.ids.end(), ids.begin(), ids.end());
    out.starts.push_back(std::move(starts));
    out.B++;
    if (i == val_docs_.size()) break;
  }
  DSV4_CHECK(out.B > 0, "loader", "the validation split holds ", val_tokens_, " tokens, fewer than one row of ", T,
             ": raise the validation fraction");
  return out;
}

}  // namespace dsv4
