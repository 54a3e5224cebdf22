// Tokenizer: a byte-level BPE tokenizer read from a Hugging Face tokenizer.json (the kind
// DeepSeek ships), giving the same ids as Hugging Face tokenizers.
//
// encode(text): added tokens are cut out first (leftmost-longest; those with
// "normalized": false from the raw text, then the others from what remains, honoring
// single_word / lstrip / rstrip), the rest goes through the normalizer, the pre-tokenizer
// (Split regexes, then ByteLevel), and the BPE model word by word; then the post-processor.
// decode(ids): each token's text through the decoder (ByteLevel: characters back to
// bytes; a token with characters outside the byte alphabet, such as a special token, as
// its own UTF-8), concatenated.
//
// Bytes, not characters: text need not be valid UTF-8. An invalid byte never matches a
// regex, so it reaches the model on its own and comes back from decode unchanged:
// decode(encode(x)) == x for any bytes x. Hugging Face only takes valid UTF-8; on valid
// UTF-8 the ids agree, and its decode is utf8_lossy(decode(ids)).
//
// Supported tokenizer.json parts: model BPE (vocab, merges as "a b" or ["a", "b"],
// unk_token, fuse_unk, byte_fallback, ignore_merges, continuing_subword_prefix,
// end_of_word_suffix); normalizer null or an empty Sequence; pre_tokenizer Sequence / Split
// / ByteLevel; decoder null or ByteLevel; post_processor null, ByteLevel,
// TemplateProcessing or a Sequence of them. Anything else is an Error that names it.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace dsv4 {

struct EncodeOptions {
  // Match special tokens ("special": true added tokens) in the text. false: their text is
  // encoded as ordinary text (Hugging Face's encode_special_tokens); the non-special added
  // tokens are matched either way.
  bool parse_special = true;
  // Apply the post-processor (Hugging Face's add_special_tokens): a TemplateProcessing
  // adds its tokens, ByteLevel adds none.
  bool add_special_tokens = true;
};

class Tokenizer {
 public:
  // A missing or unreadable file, text that is not JSON, a missing or unsupported model,
  // merges naming unknown tokens or a bad regex is an Error naming the file and the part.
  static Tokenizer from_file(const std::string& path);
  // `where` names the source in messages.
  static Tokenizer from_json(std::string_view json_text, const std::string& where = "tokenizer");

  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  // Thread-safe (the word cache is shared under a lock).
  std::vector<int32_t> encode(std::string_view text, const EncodeOptions& options = {}) const;

  // The bytes the ids stand for (see the header comment). skip_special leaves out special
  // tokens. An id with no token is an Error naming it.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;

  // A token's id by its text: an added token's content or a vocabulary entry
  // (token_to_id("<｜begin▁of▁sentence｜>")).
  std::optional<int32_t> token_to_id(std::string_view token) const;
  // The same, an Error when there is no such token.
  int32_t require_id(std::string_view token) const;
  // A token's text (as stored: ByteLevel tokens in the byte alphabet); nullopt for none.
  std::optional<std::string> id_to_token(int32_t id) const;
  bool is_special(int32_t id) const;
  // One more than the largest id: the number of embedding rows the tokenizer needs.
  int32_t vocab_size() const;

  // What decode gives for one id, and the separator decode puts between tokens ("" with
  // a ByteLevel decoder, " " with none). An id with no token is an Error.
  std::string_view token_bytes(int32_t id) const;
  std::string_view separator() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Decodes ids one at a time for streaming output: what push returns is always valid UTF-8
// and never splits a character; bytes that cannot start or continue a character become
// U+FFFD, and a character that is not complete yet is held back until it is. The
// concatenation of all pushes and finish() equals utf8_lossy(decode(all ids)).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special = false);
  std::string push(int32_t id);
  // The held-back bytes of an unfinished character, as U+FFFD; the decoder starts over.
  std::string finish();

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_;
  bool first_ = true;
  std::string pending_;
};

}  // namespace dsv4
