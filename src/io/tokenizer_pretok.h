// PreTokenizer: the "pre_tokenizer" of a tokenizer.json, which cuts text into words that
// the model then encodes one by one. Supported: Sequence, Split (a Regex or String
// pattern; behaviors Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous;
// invert) and ByteLevel (add_prefix_space, use_regex with GPT-2's pattern), which must come
// last. ByteLevel's byte -> character map is applied when words reach the model.
#pragma once
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "io/tokenizer_regex.h"

namespace dsv4 {

class PreTokenizer {
 public:
  // spec: the pre_tokenizer object, or null for none. An unsupported type or a bad regex is
  // an Error naming `where` and the JSON path.
  PreTokenizer(const nlohmann::json& spec, const std::string& where);

  // Splits each piece in turn by every step, as Hugging Face does: `pieces` in, words
  // out (never empty). Text a step rewrites (ByteLevel's prefix space) lives in `arena`.
  void split(std::vector<std::string_view>& pieces, std::deque<std::string>& arena) const;

  // Whether words go to the model through the ByteLevel map (byte_level_map below).
  bool byte_level() const { return byte_level_; }

 private:
  enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };
  struct Step {
    std::unique_ptr<TokenizerRegex> regex;  // null: ByteLevel without its regex
    Behavior behavior = Behavior::Isolated;
    bool invert = false;
    bool prepend_space = false;  // ByteLevel add_prefix_space
  };
  void add_steps(const nlohmann::json& spec, const std::string& path, const std::string& where);
  void split_piece(const Step& step, std::string_view piece, std::vector<std::string_view>& out,
                   std::vector<std::pair<size_t, size_t>>& matches) const;

  std::vector<Step> steps_;
  bool byte_level_ = false;
};

// GPT-2's byte -> character map (printable Latin-1 stays, the rest moves to U+0100...):
// appends the characters for the bytes of raw.
void byte_level_map(std::string_view raw, std::string& out);

// The inverse, for decoding: appends the bytes of token's characters when every one is in
// the ByteLevel alphabet and returns true; otherwise appends nothing and returns false.
bool byte_level_unmap(std::string_view token, std::string& out);

}  // namespace dsv4
