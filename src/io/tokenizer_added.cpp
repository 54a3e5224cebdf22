#include "io/tokenizer_added.h"

#include <algorithm>
#include <cstring>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/tokenizer_utf8.h"

namespace dsv4 {
namespace {

bool json_flag(const nlohmann::json& token, const char* key, bool fallback, size_t i,
               const std::string& where) {
  if (!token.contains(key) || token[key].is_null()) return fallback;
  DSV4_CHECK(token[key].is_boolean(), where, "added_tokens[", i, "].", key, " must be true or false");
  return token[key].get<bool>();
}

bool same_token(const AddedToken& a, const AddedToken& b) {
  return a.content == b.content && a.special == b.special && a.single_word == b.single_word &&
         a.lstrip == b.lstrip && a.rstrip == b.rstrip && a.normalized == b.normalized;
}

}  // namespace

void AddedVocabulary::Trie::insert(std::string_view s, int32_t id) {
  int32_t node = 0;
  for (unsigned char byte : s) {
    auto& children = nodes[node].children;
    auto it = std::lower_bound(children.begin(), children.end(), byte,
                               [](const auto& child, unsigned char b) { return child.first < b; });
    int32_t child;
    if (it == children.end() || it->first != byte) {
      child = static_cast<int32_t>(nodes.size());
      children.insert(it, {byte, child});
      nodes.emplace_back();  // invalidates `children` and `it`
    } else {
      child = it->second;
    }
    node = child;
  }
  nodes[node].token = id;
  first_byte[static_cast<unsigned char>(s[0])] = true;
}

bool AddedVocabulary::Trie::find(std::string_view text, size_t from, size_t& begin, size_t& end,
                                 int32_t& id) const {
  if (nodes[0].children.empty()) return false;
  // With one possible first byte (every DeepSeek token starts with '<'), memchr skips ahead.
  const bool single_first = nodes[0].children.size() == 1;
  const char first = static_cast<char>(nodes[0].children[0].first);
  for (size_t pos = from; pos < text.size(); ++pos) {
    if (single_first) {
      const void* hit = std::memchr(text.data() + pos, first, text.size() - pos);
      if (!hit) return false;
      pos = static_cast<const char*>(hit) - text.data();
    } else if (!first_byte[static_cast<unsigned char>(text[pos])]) {
      continue;
    }
    int32_t node = 0;
    size_t best_end = 0;
    int32_t best = -1;
    for (size_t k = pos; k < text.size(); ++k) {
      const auto& children = nodes[node].children;
      auto byte = static_cast<unsigned char>(text[k]);
      auto it = std::lower_bound(children.begin(), children.end(), byte,
                                 [](const auto& child, unsigned char b) { return child.first < b; });
      if (it == children.end() || it->first != byte) break;
      node = it->second;
      if (nodes[node].token >= 0) best = nodes[node].token, best_end = k + 1;
    }
    if (best >= 0) {
      begin = pos, end = best_end, id = best;
      return true;
    }
  }
  return false;
}

AddedVocabulary::AddedVocabulary(const nlohmann::json& tokens, const BpeModel& model,
                                 const std::string& where) {
  word_char_ = std::make_unique<TokenizerRegex>(
      R"([\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}])", TokenizerRegex::Syntax::Pcre2, where);
  white_space_ = std::make_unique<TokenizerRegex>(R"(\p{White_Space})", TokenizerRegex::Syntax::Pcre2, where);
  if (tokens.is_null()) return;
  DSV4_CHECK(tokens.is_array(), where, "added_tokens must be an array");

  // Hugging Face numbers new tokens from the model's vocabulary size (its entry count).
  auto next_id = static_cast<int32_t>(model.vocab().size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    const auto& t = tokens[i];
    DSV4_CHECK(t.is_object() && t.contains("content") && t["content"].is_string(), where,
               "added_tokens[", i, "]: expected an object with a string \"content\"");
    AddedToken token;
    token.content = t["content"].get<std::string>();
    token.special = json_flag(t, "special", false, i, where);
    token.single_word = json_flag(t, "single_word", false, i, where);
    token.lstrip = json_flag(t, "lstrip", false, i, where);
    token.rstrip = json_flag(t, "rstrip", false, i, where);
    token.normalized = json_flag(t, "normalized", !token.special, i, where);
    if (token.content.empty()) continue;

    int32_t id;
    if (auto known = ids_.find(token.content); known != ids_.end()) {
      id = known->second;
      if (same_token(by_id_.at(id), token)) continue;
    } else if (auto in_model = model.token_to_id(token.content)) {
      id = *in_model;
    } else {
      id = next_id++;
    }
    ids_[token.content] = id;
    if (token.special) special_.insert(token.content);
    by_id_[id] = std::move(token);
  }
  for (const auto& [id, token] : by_id_) tries_[token.normalized ? 1 : 0].insert(token.content, id);
}

bool AddedVocabulary::ends_with_word(std::string_view text) const {
  if (text.empty()) return false;
  size_t start = text.size() - 1;  // back to the start of the last character
  while (start > 0 && text.size() - start < 4 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  return word_char_->matches_whole(text.substr(start));
}

bool AddedVocabulary::starts_with_word(std::string_view text) const {
  return !text.empty() && word_char_->matches_whole(text.substr(0, utf8_char_length(text, 0)));
}

size_t AddedVocabulary::trailing_space_start(std::string_view text) const {
  size_t start = text.size();
  while (start > 0) {
    size_t c = start - 1;
    while (c > 0 && start - c < 4 && (static_cast<unsigned char>(text[c]) & 0xC0) == 0x80) --c;
    if (!white_space_->matches_whole(text.substr(c, start - c))) break;
    start = c;
  }
  return start;
}

size_t AddedVocabulary::leading_space_end(std::string_view text) const {
  size_t end = 0;
  while (end < text.size()) {
    size_t len = utf8_char_length(text, end);
    if (!white_space_->matches_whole(text.substr(end, len))) break;
    end += len;
  }
  return end;
}

void AddedVocabulary::split(std::string_view text, int pass, bool parse_special,
                            std::vector<TextSegment>& out) const {
  const Trie& trie = tries_[pass];
  size_t start_offset = 0;  // the end of the last token taken
  size_t from = 0;          // where the scan goes on: after the last raw match
  size_t begin, end;
  int32_t id;
  while (trie.find(text, from, begin, end, id)) {
    from = end;
    const AddedToken& token = by_id_.at(id);
    if (!parse_special && is_special(token.content)) continue;
    if (token.single_word &&
        ((begin > 0 && ends_with_word(text.substr(0, begin))) ||
         (end < text.size() && starts_with_word(text.substr(end))))) {
      continue;
    }
    size_t start = begin, stop = end;
    // lstrip takes the spaces before, but not those an earlier token already took.
    if (token.lstrip) start = std::max(trailing_space_start(text.substr(0, begin)), start_offset);
    if (token.rstrip) stop += leading_space_end(text.substr(end));
    if (start_offset < start) out.push_back({text.substr(start_offset, start - start_offset), -1});
    out.push_back({text.substr(start, stop - start), id});
    start_offset = stop;
  }
  if (start_offset < text.size()) out.push_back({text.substr(start_offset), -1});
}

}  // namespace dsv4
