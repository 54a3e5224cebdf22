#include "io/tokenizer_pretok.h"

#include <algorithm>
#include <array>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/tokenizer_utf8.h"

namespace dsv4 {
namespace {

// The pattern Hugging Face's ByteLevel pre-tokenizer splits with when use_regex is true.
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// GPT-2's map: bytes that are printable Latin-1 ('!'..'~', '¡'..'¬', '®'..'ÿ') keep their
// code point; the others, in byte order, take U+0100, U+0101, ...
struct ByteLevelTables {
  std::array<char32_t, 256> char_of_byte{};
  std::array<int, 512> byte_of_char{};  // -1: not in the alphabet
  std::array<std::string, 256> utf8_of_byte;
  ByteLevelTables() {
    byte_of_char.fill(-1);
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      char_of_byte[b] = printable ? static_cast<char32_t>(b) : next++;
      byte_of_char[char_of_byte[b]] = b;
      append_utf8(utf8_of_byte[b], char_of_byte[b]);
    }
  }
};

const ByteLevelTables& byte_level_tables() {
  static const ByteLevelTables tables;
  return tables;
}

bool json_bool(const nlohmann::json& spec, const char* key, bool fallback, const std::string& path,
               const std::string& where) {
  if (!spec.contains(key) || spec[key].is_null()) return fallback;
  DSV4_CHECK(spec[key].is_boolean(), where, path, ".", key, " must be true or false");
  return spec[key].get<bool>();
}

}  // namespace

void byte_level_map(std::string_view raw, std::string& out) {
  const auto& t = byte_level_tables();
  for (unsigned char b : raw) out += t.utf8_of_byte[b];
}

bool byte_level_unmap(std::string_view token, std::string& out) {
  const auto& t = byte_level_tables();
  size_t start = out.size();
  for (size_t pos = 0; pos < token.size();) {
    Utf8Scan c = utf8_scan(token, pos);
    if (c.status != Utf8Status::Complete || c.cp >= t.byte_of_char.size() || t.byte_of_char[c.cp] < 0) {
      out.resize(start);
      return false;
    }
    out += static_cast<char>(t.byte_of_char[c.cp]);
    pos += c.length;
  }
  return true;
}

PreTokenizer::PreTokenizer(const nlohmann::json& spec, const std::string& where) {
  if (!spec.is_null()) add_steps(spec, "pre_tokenizer", where);
}

void PreTokenizer::add_steps(const nlohmann::json& spec, const std::string& path,
                             const std::string& where) {
  DSV4_CHECK(spec.is_object() && spec.contains("type") && spec["type"].is_string(), where, path,
             ": expected an object with a \"type\"");
  const std::string type = spec["type"].get<std::string>();
  DSV4_CHECK(!byte_level_, where, path, ": a ", type,
             " pre-tokenizer after ByteLevel is not supported (ByteLevel must come last)");
  if (type == "Sequence") {
    DSV4_CHECK(spec.contains("pretokenizers") && spec["pretokenizers"].is_array(), where, path,
               ".pretokenizers is missing or is not an array");
    for (size_t i = 0; i < spec["pretokenizers"].size(); ++i) {
      add_steps(spec["pretokenizers"][i], str(path, ".pretokenizers[", i, "]"), where);
    }
  } else if (type == "Split") {
    const auto& pattern = spec.value("pattern", nlohmann::json());
    std::string regex_where = str(where, " ", path, ".pattern");
    Step step;
    if (pattern.is_object() && pattern.contains("Regex") && pattern["Regex"].is_string()) {
      step.regex = std::make_unique<TokenizerRegex>(pattern["Regex"].get<std::string>(),
                                                    TokenizerRegex::Syntax::Oniguruma, regex_where);
    } else if (pattern.is_object() && pattern.contains("String") && pattern["String"].is_string()) {
      step.regex = std::make_unique<TokenizerRegex>(pattern["String"].get<std::string>(),
                                                    TokenizerRegex::Syntax::Literal, regex_where);
    } else {
      throw Error(where, path + ".pattern: expected {\"Regex\": ...} or {\"String\": ...}");
    }
    static const std::pair<const char*, Behavior> kBehaviors[] = {
        {"Removed", Behavior::Removed},
        {"Isolated", Behavior::Isolated},
        {"MergedWithPrevious", Behavior::MergedWithPrevious},
        {"MergedWithNext", Behavior::MergedWithNext},
        {"Contiguous", Behavior::Contiguous}};
    std::string behavior = spec.value("behavior", std::string());
    auto it = std::find_if(std::begin(kBehaviors), std::end(kBehaviors),
                           [&](const auto& b) { return behavior == b.first; });
    DSV4_CHECK(it != std::end(kBehaviors), where, path, ".behavior '", behavior,
               "' is not one of Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous");
    step.behavior = it->second;
    step.invert = json_bool(spec, "invert", false, path, where);
    steps_.push_back(std::move(step));
  } else if (type == "ByteLevel") {
    Step step;
    step.prepend_space = json_bool(spec, "add_prefix_space", true, path, where);
    if (json_bool(spec, "use_regex", true, path, where)) {
      step.regex = std::make_unique<TokenizerRegex>(kGpt2Pattern, TokenizerRegex::Syntax::Oniguruma,
                                                    where + " " + path);
    }
    steps_.push_back(std::move(step));
    byte_level_ = true;
  } else {
    throw Error(where, str(path, ": pre-tokenizer type '", type,
                           "' is not supported (supported: Sequence, Split, ByteLevel)"));
  }
}

void PreTokenizer::split_piece(const Step& step, std::string_view piece,
                               std::vector<std::string_view>& out,
                               std::vector<std::pair<size_t, size_t>>& matches) const {
  if (!step.regex) {
    out.push_back(piece);
    return;
  }
  matches.clear();
  step.regex->find_all(piece, matches);
  if (step.behavior == Behavior::Isolated) {  // the common case, without the bookkeeping
    size_t prev = 0;
    for (auto [begin, end] : matches) {
      if (begin != prev) out.push_back(piece.substr(prev, begin - prev));
      if (end != begin) out.push_back(piece.substr(begin, end - begin));
      prev = end;
    }
    if (prev != piece.size()) out.push_back(piece.substr(prev));
    return;
  }

  // The piece as alternating (range, is_match) segments, as Hugging Face lays them out.
  struct Segment {
    size_t begin, end;
    bool is_match;
  };
  std::vector<Segment> segments;
  segments.reserve(2 * matches.size() + 1);
  size_t prev = 0;
  for (auto [begin, end] : matches) {
    if (begin != prev) segments.push_back({prev, begin, step.invert});
    segments.push_back({begin, end, !step.invert});
    prev = end;
  }
  if (prev != piece.size()) segments.push_back({prev, piece.size(), step.invert});

  std::vector<Segment> kept;
  kept.reserve(segments.size());
  bool previous_match = false;
  switch (step.behavior) {
    case Behavior::Isolated:  // handled above
      break;
    case Behavior::Removed:
      for (const Segment& s : segments) {
        if (!s.is_match) kept.push_back(s);
      }
      break;
    case Behavior::Contiguous:
      for (const Segment& s : segments) {
        if (s.is_match == previous_match && !kept.empty()) {
          kept.back().end = s.end;
        } else {
          kept.push_back(s);
        }
        previous_match = s.is_match;
      }
      break;
    case Behavior::MergedWithPrevious:
      for (const Segment& s : segments) {
        if (s.is_match && !previous_match && !kept.empty()) {
          kept.back().end = s.end;
        } else {
          kept.push_back(s);
        }
        previous_match = s.is_match;
      }
      break;
    case Behavior::MergedWithNext:
      for (auto s = segments.rbegin(); s != segments.rend(); ++s) {
        if (s->is_match && !previous_match && !kept.empty()) {
          kept.back().begin = s->begin;
        } else {
          kept.push_back(*s);
        }
        previous_match = s->is_match;
      }
      std::reverse(kept.begin(), kept.end());
      break;
  }
  for (const Segment& s : kept) {
    if (s.end > s.begin) out.push_back(piece.substr(s.begin, s.end - s.begin));
  }
}

void PreTokenizer::split(std::vector<std::string_view>& pieces, std::deque<std::string>& arena) const {
  std::vector<std::string_view> next;
  std::vector<std::pair<size_t, size_t>> matches;
  for (const Step& step : steps_) {
    next.clear();
    next.reserve(pieces.size());
    for (std::string_view piece : pieces) {
      if (step.prepend_space && piece.front() != ' ') {
        arena.push_back(" ");
        arena.back().append(piece);
        piece = arena.back();
      }
      split_piece(step, piece, next, matches);
    }
    pieces.swap(next);
  }
}

}  // namespace dsv4
