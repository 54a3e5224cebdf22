// AddedVocabulary: the "added_tokens" of a tokenizer.json (special tokens such as
// <｜begin▁of▁sentence｜>, chat markers), cut out of the text before pre-tokenization the
// way Hugging Face does: leftmost-longest matches, scanning on after each raw match;
// single_word drops a match touching a word character (\w) on either side; lstrip / rstrip
// take the whitespace on that side into the token.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "io/tokenizer_bpe.h"
#include "io/tokenizer_regex.h"

namespace dsv4 {

struct AddedToken {
  std::string content;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
};

// A piece of the text on its way to ids: either a matched added token or text to encode.
struct TextSegment {
  std::string_view text;
  int32_t id = -1;  // the added token's id; -1: text
};

class AddedVocabulary {
 public:
  // tokens: the added_tokens array. Ids are given as Hugging Face gives them (the "id"
  // fields are not trusted): the id of an equal vocabulary entry, else the next free one
  // after the model's vocabulary, in file order.
  AddedVocabulary(const nlohmann::json& tokens, const BpeModel& model, const std::string& where);

  // Appends the segments of text: the tokens with "normalized": false (pass 0) or true
  // (pass 1). Special tokens are matched only when parse_special.
  void split(std::string_view text, int pass, bool parse_special, std::vector<TextSegment>& out) const;

  const std::map<int32_t, AddedToken>& by_id() const { return by_id_; }
  const StringIdMap& ids() const { return ids_; }
  bool is_special(std::string_view content) const { return special_.find(content) != special_.end(); }

 private:
  // A byte trie for leftmost-longest matching of many strings.
  struct Trie {
    struct Node {
      std::vector<std::pair<unsigned char, int32_t>> children;  // sorted by byte
      int32_t token = -1;                                        // an id, when a string ends here
    };
    std::vector<Node> nodes{1};
    bool first_byte[256] = {};
    void insert(std::string_view s, int32_t id);
    // The leftmost, then longest, match at or after `from`.
    bool find(std::string_view text, size_t from, size_t& begin, size_t& end, int32_t& id) const;
  };

  bool ends_with_word(std::string_view text) const;
  bool starts_with_word(std::string_view text) const;
  size_t trailing_space_start(std::string_view text) const;
  size_t leading_space_end(std::string_view text) const;

  std::map<int32_t, AddedToken> by_id_;
  StringIdMap ids_;
  std::unordered_set<std::string, StringHash, std::equal_to<>> special_;
  Trie tries_[2];
  std::unique_ptr<TokenizerRegex> word_char_;   // Rust regex's \w
  std::unique_ptr<TokenizerRegex> white_space_;  // Rust regex's \s
};

}  // namespace dsv4
