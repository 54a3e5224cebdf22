// A tokenized corpus: the shards of a folder (docs/data.md), and the function that makes
// them from text (`dsv4 tokenize`).
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "io/token_shard.h"
#include "io/tokenizer.h"

namespace dsv4 {

TokenizerId tokenizer_identity(const std::string& tokenizer_json_text, const Tokenizer& tokenizer);

struct TokenizeOptions {
  std::string bos;              // token text put before every document ("" for none)
  std::string eos;              // token text put after every document ("" for none)
  bool split_paragraphs = false;  // a document per blank-line-separated paragraph, else per file
  uint64_t shard_tokens = 64ull << 20;  // a new shard starts once one holds this many tokens
};

struct TokenizeReport {
  uint64_t files = 0, documents = 0, tokens = 0, bytes = 0;
  std::vector<std::string> shards;
  TokenizerId tokenizer;
};

// Encodes `inputs` (text files, or folders: every regular file under them, sorted by path)
// into out_dir/shard-00000.tok, ... (out_dir is created; shards already there are an Error).
TokenizeReport tokenize_corpus(const std::vector<std::string>& inputs, const std::string& tokenizer_path,
                               const std::string& out_dir, const TokenizeOptions& options);

// The shards of a folder (every *.tok, in name order) or one shard file, checked to share
// one tokenizer. Documents are numbered across shards in that order.
class TokenCorpus {
 public:
  explicit TokenCorpus(const std::string& path);
  const std::string& path() const { return path_; }
  const TokenizerId& tokenizer() const { return tokenizer_; }
  uint64_t doc_count() const { return first_doc_.back(); }
  uint64_t token_count() const { return tokens_; }
  std::span<const uint32_t> doc(uint64_t k) const;
  // Throws, naming the corpus, unless its shards were made with this tokenizer.
  void require_tokenizer(const TokenizerId& id, const std::string& tokenizer_path) const;

 private:
  std::string path_;
  std::vector<std::unique_ptr<TokenShard>> shards_;
  std::vector<uint64_t> first_doc_{0};  // shard s holds documents [first_doc_[s], first_doc_[s + 1])
  uint64_t tokens_ = 0;
  TokenizerId tokenizer_;
};

}  // namespace dsv4
