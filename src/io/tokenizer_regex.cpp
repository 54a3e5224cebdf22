#define PCRE2_CODE_UNIT_WIDTH 8
#include "io/tokenizer_regex.h"

#include <pcre2.h>

#include <cctype>

#include "core/error.h"
#include "io/tokenizer_utf8.h"

namespace dsv4 {
namespace {

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  int n = pcre2_get_error_message(code, buffer, sizeof buffer);
  return n < 0 ? str("PCRE2 error ", code) : std::string(reinterpret_cast<char*>(buffer), n);
}

// Per-thread match scratch: match data for one pair of offsets and a JIT stack big enough
// for long runs of one character class (a megabyte of digits or spaces).
struct MatchScratch {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  pcre2_jit_stack* jit_stack = pcre2_jit_stack_create(32 * 1024, 256 * 1024 * 1024, nullptr);
  MatchScratch() { pcre2_jit_stack_assign(context, nullptr, jit_stack); }
  ~MatchScratch() {
    pcre2_jit_stack_free(jit_stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
};

MatchScratch& scratch() {
  thread_local MatchScratch s;
  return s;
}

bool is_hex(char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; }

}  // namespace

std::string onig_to_pcre2(std::string_view p, const std::string& where) {
  std::string out;
  out.reserve(p.size() + 32);
  bool in_class = false;
  size_t class_first = 0;  // where a ']' is still a literal (first in the class)
  for (size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      char e = p[++i];
      switch (e) {
        // Oniguruma's \s is the White_Space property; PCRE2's adds U+180E.
        case 's': out += "\\p{White_Space}"; break;
        case 'S': out += "\\P{White_Space}"; break;
        case 'h': out += in_class ? "0-9A-Fa-f" : "[0-9A-Fa-f]"; break;
        case 'H':
          DSV4_CHECK(!in_class, where, "regex: \\H inside a character class is not supported: ", p);
          out += "[^0-9A-Fa-f]";
          break;
        case 'u':
          // \uHHHH: PCRE2 spells it \x{HHHH}.
          if (i + 4 < p.size() && is_hex(p[i + 1]) && is_hex(p[i + 2]) && is_hex(p[i + 3]) &&
              is_hex(p[i + 4])) {
            out += "\\x{" + std::string(p.substr(i + 1, 4)) + "}";
            i += 4;
            break;
          }
          [[fallthrough]];
        default: out += c; out += e; break;
      }
      continue;
    }
    if (in_class) {
      if (c == '[') {
        size_t close = p.find(":]", i + 2);
        DSV4_CHECK(i + 1 < p.size() && p[i + 1] == ':' && close != std::string_view::npos, where,
                   "regex: nested character classes are not supported: ", p);
        out.append(p.substr(i, close + 2 - i));  // a POSIX class such as [:alpha:]
        i = close + 1;
        continue;
      }
      DSV4_CHECK(!(c == '&' && i + 1 < p.size() && p[i + 1] == '&'), where,
                 "regex: class intersection (&&) is not supported: ", p);
      if (c == ']' && i != class_first) in_class = false;
      out += c;
      continue;
    }
    if (c == '[') {
      in_class = true;
      out += c;
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      class_first = i + 1;
      continue;
    }
    if (c == '(' && i + 2 < p.size() && p[i + 1] == '?') {
      // Inline options: Oniguruma's (?m) is dot-all, which PCRE2 spells (?s).
      size_t j = i + 2;
      while (j < p.size() && (std::isalpha(static_cast<unsigned char>(p[j])) || p[j] == '-')) ++j;
      if (j > i + 2 && j < p.size() && (p[j] == ':' || p[j] == ')')) {
        out += "(?";
        for (size_t k = i + 2; k < j; ++k) out += p[k] == 'm' ? 's' : p[k];
        i = j - 1;
        continue;
      }
    }
    out += c;
  }
  return out;
}

TokenizerRegex::TokenizerRegex(std::string_view pattern, Syntax syntax, const std::string& where)
    : where_(where) {
  std::string translated =
      syntax == Syntax::Oniguruma ? onig_to_pcre2(pattern, where) : std::string(pattern);
  uint32_t options = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF;
  if (syntax == Syntax::Literal) {
    options |= PCRE2_LITERAL;
  } else {
    options |= PCRE2_UCP;
    // Oniguruma's ^ and $ match at every line break.
    if (syntax == Syntax::Oniguruma) options |= PCRE2_MULTILINE;
  }
  pcre2_compile_context* context = pcre2_compile_context_create(nullptr);
  pcre2_set_newline(context, PCRE2_NEWLINE_LF);
  int error = 0;
  PCRE2_SIZE offset = 0;
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                        options, &error, &offset, context);
  pcre2_compile_context_free(context);
  DSV4_CHECK(code_ != nullptr, where, "bad regex '", pattern, "': ", pcre2_message(error),
             " at offset ", offset, syntax == Syntax::Oniguruma ? " of '" + translated + "'" : "");
  // Without JIT (an unsupported CPU) pcre2_match interprets: slower, same results.
  pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);
}

TokenizerRegex::~TokenizerRegex() { pcre2_code_free(code_); }

TokenizerRegex::TokenizerRegex(TokenizerRegex&& other) noexcept
    : code_(other.code_), where_(std::move(other.where_)) {
  other.code_ = nullptr;
}

TokenizerRegex& TokenizerRegex::operator=(TokenizerRegex&& other) noexcept {
  if (this != &other) {
    pcre2_code_free(code_);
    code_ = other.code_;
    where_ = std::move(other.where_);
    other.code_ = nullptr;
  }
  return *this;
}

bool TokenizerRegex::search(std::string_view text, size_t from, size_t& begin, size_t& end) const {
  static const char empty[1] = {0};
  auto subject = reinterpret_cast<PCRE2_SPTR>(text.empty() ? empty : text.data());
  MatchScratch& s = scratch();
  int rc = pcre2_match(code_, subject, text.size(), from, 0, s.data, s.context);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  DSV4_CHECK(rc >= 0, where_, "regex search failed: ", pcre2_message(rc));
  const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(s.data);
  begin = ovector[0];
  end = ovector[1];
  return true;
}

void TokenizerRegex::find_all(std::string_view text,
                              std::vector<std::pair<size_t, size_t>>& out) const {
  size_t from = 0;
  bool matched_before = false;
  size_t last_match_end = 0;
  while (from <= text.size()) {
    size_t begin, end;
    if (!search(text, from, begin, end)) break;
    if (begin == end && matched_before && last_match_end == end) {
      // An empty match right where the last one ended: step one character, look again.
      if (begin >= text.size()) break;
      from = begin + utf8_char_length(text, begin);
      continue;
    }
    out.emplace_back(begin, end);
    matched_before = true;
    last_match_end = end;
    from = end;
  }
}

bool TokenizerRegex::matches_whole(std::string_view text) const {
  static const char empty[1] = {0};
  auto subject = reinterpret_cast<PCRE2_SPTR>(text.empty() ? empty : text.data());
  MatchScratch& s = scratch();
  int rc = pcre2_match(code_, subject, text.size(), 0, PCRE2_ANCHORED | PCRE2_ENDANCHORED, s.data,
                       s.context);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  DSV4_CHECK(rc >= 0, where_, "regex match failed: ", pcre2_message(rc));
  return true;
}

}  // namespace dsv4
