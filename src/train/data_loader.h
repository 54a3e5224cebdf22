// The training data loader (docs/data.md): documents of a TokenCorpus split into training
// and validation by a seeded draw, the training documents shuffled per epoch by a seed, and
// packed into rows of the current sequence length. Each row records where its documents
// start (segments), so the training graph restarts positions, windows, compressor blocks
// and the indexer there. A document longer than the room left in a row continues in the
// next row as a new segment (it restarts at position 0).
//
// The state (epoch, document cursor, offset into that document) is all the loader needs to
// continue exactly where it stopped, whatever the sequence length of the next rows.
#pragma once
#include <cstdint>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "io/token_corpus.h"

namespace dsv4 {

// Rows [B, T] of packed documents.
struct PackedRows {
  int64_t B = 0, T = 0;
  std::vector<int64_t> ids;                   // [B, T]
  std::vector<std::vector<int64_t>> starts;   // per row: segment starts, ascending, the first 0
  // Per row: the segment lengths (the differences of the starts, the last up to T).
  std::vector<int64_t> lengths(int64_t row) const;
};

struct LoaderState {
  uint64_t epoch = 0;   // passes over the training documents completed
  uint64_t cursor = 0;  // index into this epoch's order of the next document
  uint64_t offset = 0;  // tokens of that document already served
  bool operator==(const LoaderState&) const = default;
};
nlohmann::json loader_state_to_json(const LoaderState& s);
LoaderState loader_state_from_json(const nlohmann::json& j);  // throws naming the bad key

// A permutation of 0..n−1 (Fisher–Yates on splitmix64): the same on every platform.
std::vector<uint64_t> seeded_permutation(uint64_t n, uint64_t seed);

class DataLoader {
 public:
  // val_fraction in [0, 1): that share of the documents (at least one when > 0) is held out,
  // chosen by split_seed; the rest is shuffled by shuffle_seed, a new order every epoch.
  DataLoader(const TokenCorpus& corpus, double val_fraction, uint64_t split_seed, uint64_t shuffle_seed);

  PackedRows next(int64_t B, int64_t T);
  // The first `max_rows` full rows of T tokens packed from the validation documents in
  // corpus order (the same rows on every call); an Error when not even one row fits.
  PackedRows validation(int64_t T, int64_t max_rows) const;

  const LoaderState& state() const { return state_; }
  void restore(const LoaderState& s);  // checked against this corpus and split

  const std::vector<uint64_t>& train_docs() const { return train_docs_; }
  const std::vector<uint64_t>& val_docs() const { return val_docs_; }
  uint64_t train_tokens() const { return train_tokens_; }
  uint64_t val_tokens() const { return val_tokens_; }

 private:
  void set_epoch(uint64_t epoch);
  const TokenCorpus& corpus_;
  uint64_t shuffle_seed_;
  std::vector<uint64_t> train_docs_, val_docs_;
  uint64_t train_tokens_ = 0, val_tokens_ = 0;
  std::vector<uint64_t> order_;  // this epoch's order of train_docs_
  LoaderState state_;
};

}  // namespace dsv4
