// BpeModel: the "BPE" model of a tokenizer.json. A word (one pre-token, in the model's
// alphabet) starts as one symbol per character; merges then join neighbouring pairs, the
// pair of lowest rank first and the leftmost among equal ranks, exactly as Hugging Face
// tokenizers does (a min-heap of (rank, position) over a linked list of symbols).
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace dsv4 {

// Hashes std::string and std::string_view alike, so maps of strings take views as keys.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringIdMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// A BPE model's vocab and merges as the file has them (see tokenizer_json.h); checked by
// BpeModel.
struct BpeData {
  bool has_vocab = false;   // model.vocab was an object
  bool has_merges = false;  // model.merges was an array
  struct Entry {
    std::string token;
    int64_t id;  // -1: the value was not an integer in [0, 2^31)
  };
  std::vector<Entry> vocab;
  struct Merge {
    enum Kind { Line, Pair, Malformed } kind;
    std::string first;   // Line: the whole "a b" string
    std::string second;
  };
  std::vector<Merge> merges;
};

class BpeModel {
 public:
  // model: the "model" object of a tokenizer.json, of type "BPE" (its options); data: its
  // vocab and merges, both required; merges are "a b" strings or ["a", "b"] pairs. A merge
  // naming a token that is not in the vocabulary, or whose result is not, is an Error
  // naming the merge.
  BpeModel(const nlohmann::json& model, const BpeData& data, const std::string& where);

  // Appends the ids of one word (in the model's alphabet) to out. Characters with no token
  // become the unk token when there is one (or bytes <0xXX> with byte_fallback), else are
  // dropped, as Hugging Face does.
  void tokenize(std::string_view word, std::vector<int32_t>& out) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  const StringIdMap& vocab() const { return vocab_; }

 private:
  struct Merge {
    uint32_t rank;
    int32_t new_id;
  };
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  const Merge* find_merge(int32_t a, int32_t b) const {
    auto it = merges_.find(pair_key(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  }
  void initial_symbols(std::string_view word, std::vector<int32_t>& symbols) const;

  StringIdMap vocab_;
  std::unordered_map<uint64_t, Merge> merges_;
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;
};

}  // namespace dsv4
