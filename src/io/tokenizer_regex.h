// TokenizerRegex: the regexes of a tokenizer.json (Split pre-tokenizers, ByteLevel's
// GPT-2 pattern), run by PCRE2 with Oniguruma's meaning, which is what Hugging Face
// tokenizers uses: UTF-8 + Unicode properties (UCP), ^/$ at line breaks, \s = the Unicode
// White_Space property (PCRE2's \s also takes U+180E), \h = a hex digit, (?m) = dot-all.
// \w, \d and \b keep PCRE2's Unicode meanings, which agree with Oniguruma's but for rare
// characters (no tokenizer.json we know uses them). Text that is not valid UTF-8 is
// searched too: an invalid byte never matches anything.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

struct pcre2_real_code_8;

namespace dsv4 {

class TokenizerRegex {
 public:
  enum class Syntax {
    Oniguruma,  // a tokenizer.json "Regex" pattern: translated to PCRE2 (see above)
    Pcre2,      // a PCRE2 pattern, used as is (still UTF + UCP)
    Literal,    // a tokenizer.json "String" pattern: matched verbatim
  };
  // A pattern that does not compile is an Error naming `where`, the offset and the reason.
  TokenizerRegex(std::string_view pattern, Syntax syntax, const std::string& where);
  ~TokenizerRegex();
  TokenizerRegex(TokenizerRegex&& other) noexcept;
  TokenizerRegex& operator=(TokenizerRegex&& other) noexcept;
  TokenizerRegex(const TokenizerRegex&) = delete;
  TokenizerRegex& operator=(const TokenizerRegex&) = delete;

  // Byte ranges [begin, end) of the successive non-overlapping matches in text, left to
  // right, as Oniguruma's find_iter gives them (an empty match just after the previous
  // match is skipped). Appends to `out`.
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const;

  // Whether the whole of text matches (anchored at both ends).
  bool matches_whole(std::string_view text) const;

 private:
  // The first match at or after `from`: false when there is none.
  bool search(std::string_view text, size_t from, size_t& begin, size_t& end) const;

  pcre2_real_code_8* code_ = nullptr;
  std::string where_;
};

// The PCRE2 pattern that means what the Oniguruma pattern means (see the header comment).
// A construct PCRE2 cannot express (a nested class, &&, \H in a class) is an Error.
std::string onig_to_pcre2(std::string_view pattern, const std::string& where);

}  // namespace dsv4
