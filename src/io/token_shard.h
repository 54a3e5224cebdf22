// Token shards (docs/data.md): a tokenized corpus as binary files of whole documents.
//   header (64 bytes, little-endian)  magic "DSV4TOKS", version, vocab_size, tokenizer hash,
//                                     token count N, document count K, payload checksum,
//                                     header checksum
//   offsets u64 [K + 1]               document k is tokens [offsets[k], offsets[k+1])
//   tokens  u32 [N]
// The reader maps the file and validates all of it (sizes, both checksums, offsets, ids <
// vocab_size) before anyone reads a token; a broken shard is an Error naming the file and
// what is wrong.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace dsv4 {

inline constexpr uint64_t kFnvBasis = 0xcbf29ce484222325ull;
// FNV-1a 64 over bytes, continuing from `h`.
uint64_t fnv1a64(const void* data, size_t n, uint64_t h = kFnvBasis);

// The identity of a tokenizer: FNV-1a 64 of its tokenizer.json bytes, and its vocab size.
struct TokenizerId {
  uint64_t hash = 0;
  uint32_t vocab_size = 0;
  bool operator==(const TokenizerId&) const = default;
};
std::string tokenizer_id_str(const TokenizerId& id);  // "a1b2...(vocab 271)"

struct ShardHeader {
  uint32_t version = 1;
  TokenizerId tokenizer;
  uint64_t tokens = 0;
  uint64_t docs = 0;
  uint64_t payload_checksum = 0;  // FNV-1a 64 over the offsets' and the tokens' bytes
};

// Writes a shard atomically (a ".tmp" sibling, fsync, rename). `doc_offsets` has docs + 1
// entries from 0 to tokens.size(), strictly increasing (no empty documents).
void write_token_shard(const std::string& path, const TokenizerId& tokenizer,
                       const std::vector<uint64_t>& doc_offsets, const std::vector<uint32_t>& tokens);

class TokenShard {
 public:
  explicit TokenShard(const std::string& path);  // maps and validates; throws dsv4::Error
  ~TokenShard();
  TokenShard(const TokenShard&) = delete;
  TokenShard& operator=(const TokenShard&) = delete;
  TokenShard(TokenShard&& o) noexcept;
  TokenShard& operator=(TokenShard&&) = delete;

  const std::string& path() const { return path_; }
  const ShardHeader& header() const { return header_; }
  uint64_t doc_count() const { return header_.docs; }
  uint64_t token_count() const { return header_.tokens; }
  std::span<const uint32_t> doc(uint64_t k) const;

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  ShardHeader header_;
  const uint64_t* offsets_ = nullptr;
  const uint32_t* tokens_ = nullptr;
};

}  // namespace dsv4
