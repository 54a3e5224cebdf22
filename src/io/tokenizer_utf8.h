// UTF-8 scanning for the tokenizer: which bytes form a character, and the lossy decoding
// that Rust's String::from_utf8_lossy and JavaScript's TextDecoder share (each maximal
// invalid subpart becomes one U+FFFD).
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace dsv4 {

enum class Utf8Status {
  Complete,   // a whole, valid character
  Truncated,  // a valid start that the text ends in the middle of
  Invalid,    // `length` bytes (the maximal subpart) that no character starts with
};

struct Utf8Scan {
  Utf8Status status;
  int length;    // bytes taken: the character, the truncated start, or the invalid subpart
  char32_t cp;   // the code point when Complete
};

// The character (or the invalid bytes) at s[pos]; pos < s.size().
inline Utf8Scan utf8_scan(std::string_view s, size_t pos) {
  auto b0 = static_cast<unsigned char>(s[pos]);
  if (b0 < 0x80) return {Utf8Status::Complete, 1, b0};
  int need;
  unsigned char lo = 0x80, hi = 0xBF;  // the range allowed for the first continuation byte
  char32_t cp;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1, cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2, cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;  // no overlong forms
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3, cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return {Utf8Status::Invalid, 1, 0};
  }
  for (int k = 1; k <= need; ++k) {
    if (pos + k >= s.size()) return {Utf8Status::Truncated, k, 0};
    auto b = static_cast<unsigned char>(s[pos + k]);
    if (b < lo || b > hi) return {Utf8Status::Invalid, k, 0};
    lo = 0x80, hi = 0xBF;
    cp = (cp << 6) | (b & 0x3F);
  }
  return {Utf8Status::Complete, need + 1, cp};
}

// Bytes from s[pos] to the next character boundary: a character's length, else 1.
inline size_t utf8_char_length(std::string_view s, size_t pos) {
  Utf8Scan c = utf8_scan(s, pos);
  return c.status == Utf8Status::Complete ? c.length : 1;
}

inline void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Appends bytes to out as valid UTF-8, each invalid subpart replaced by U+FFFD. Unless
// `final`, a character cut off by the end of bytes is held back: the return value is the
// number of bytes consumed (all of them when final).
inline size_t append_utf8_lossy(std::string& out, std::string_view bytes, bool final) {
  size_t pos = 0;
  while (pos < bytes.size()) {
    Utf8Scan c = utf8_scan(bytes, pos);
    if (c.status == Utf8Status::Truncated && !final) break;
    if (c.status == Utf8Status::Complete) {
      out.append(bytes.substr(pos, c.length));
    } else {
      out += "\xEF\xBF\xBD";
    }
    pos += c.length;
  }
  return pos;
}

inline std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  append_utf8_lossy(out, bytes, true);
  return out;
}

}  // namespace dsv4
