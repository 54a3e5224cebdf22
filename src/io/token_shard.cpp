#include "io/token_shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/error.h"
#include "io/durable_file.h"

namespace dsv4 {

static_assert(std::endian::native == std::endian::little, "token shards are read in place: little-endian hosts only");

namespace {

constexpr char kMagic[8] = {'D', 'S', 'V', '4', 'T', 'O', 'K', 'S'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 64;

// The 64 header bytes: magic[8], version u32, vocab u32, tokenizer hash u64, tokens u64,
// docs u64, payload checksum u64, header checksum u64 (FNV-1a 64 of bytes 0..47), 8 zero bytes.
struct RawHeader {
  char magic[8];
  uint32_t version;
  uint32_t vocab_size;
  uint64_t tokenizer_hash;
  uint64_t tokens;
  uint64_t docs;
  uint64_t payload_checksum;
  uint64_t header_checksum;
  uint64_t reserved;
};
static_assert(sizeof(RawHeader) == kHeaderBytes);
constexpr size_t kChecked = offsetof(RawHeader, header_checksum);

}  // namespace

uint64_t fnv1a64(const void* data, size_t n, uint64_t h) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

std::string tokenizer_id_str(const TokenizerId& id) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%016llx (vocab %u)", static_cast<unsigned long long>(id.hash), id.vocab_size);
  return buf;
}

void write_token_shard(const std::string& path, const TokenizerId& tokenizer,
                       const std::vector<uint64_t>& doc_offsets, const std::vector<uint32_t>& tokens) {
  const std::string where = "token shard";
  DSV4_CHECK(!doc_offsets.empty() && doc_offsets.front() == 0 && doc_offsets.back() == tokens.size(), where, path,
             ": document offsets must run from 0 to the token count ", tokens.size());
  for (size_t k = 0; k + 1 < doc_offsets.size(); ++k)
    DSV4_CHECK(doc_offsets[k] < doc_offsets[k + 1], where, path, ": document ", k, " is empty");
  for (size_t i = 0; i < tokens.size(); ++i)
    DSV4_CHECK(tokens[i] < tokenizer.vocab_size, where, path, ": token ", i, " has id ", tokens[i],
               " >= vocab size ", tokenizer.vocab_size);
  RawHeader h{};
  std::memcpy(h.magic, kMagic, sizeof(kMagic));
  h.version = kVersion;
  h.vocab_size = tokenizer.vocab_size;
  h.tokenizer_hash = tokenizer.hash;
  h.tokens = tokens.size();
  h.docs = doc_offsets.size() - 1;
  const size_t offsets_bytes = doc_offsets.size() * sizeof(uint64_t), tokens_bytes = tokens.size() * sizeof(uint32_t);
  h.payload_checksum = fnv1a64(tokens.data(), tokens_bytes, fnv1a64(doc_offsets.data(), offsets_bytes));
  h.header_checksum = fnv1a64(&h, kChecked);
  const std::string tmp = path + ".tmp";
  write_file_synced(tmp, {{&h, sizeof(h)}, {doc_offsets.data(), offsets_bytes}, {tokens.data(), tokens_bytes}});
  rename_path(tmp, path);
}

TokenShard::TokenShard(const std::string& path) : path_(path) {
  const std::string where = "token shard";
  const std::string p = path + ": ";
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  DSV4_CHECK(fd >= 0, where, p, "cannot open: ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(where, p + "not a regular file");
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < kHeaderBytes) {
    ::close(fd);
    throw Error(where, str(p, "file is ", size, " bytes, shorter than the ", kHeaderBytes,
                           "-byte header (truncated, or not a token shard)"));
  }
  void* addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_errno = errno;
  ::close(fd);
  DSV4_CHECK(addr != MAP_FAILED, where, p, "mmap failed: ", std::strerror(map_errno));
  map_ = addr;
  map_size_ = size;
  try {
    RawHeader h;
    std::memcpy(&h, addr, sizeof(h));
    DSV4_CHECK(std::memcmp(h.magic, kMagic, sizeof(kMagic)) == 0, where, p,
               "bad magic: not a dsv4 token shard (make one with `dsv4 tokenize`)");
    DSV4_CHECK(h.version == kVersion, where, p, "format version ", h.version, " is not supported (this build reads ",
               kVersion, ")");
    DSV4_CHECK(fnv1a64(&h, kChecked) == h.header_checksum, where, p, "header checksum mismatch (corrupted header)");
    DSV4_CHECK(h.vocab_size > 0, where, p, "vocab size is 0");
    // Sizes are checked against the file before any multiplication can overflow.
    const uint64_t room = size - kHeaderBytes;
    DSV4_CHECK(h.docs < room / 8 && h.tokens <= room / 4, where, p, "header claims ", h.docs, " documents and ",
               h.tokens, " tokens, more than the file's ", size, " bytes hold (truncated?)");
    const uint64_t want = kHeaderBytes + (h.docs + 1) * 8 + h.tokens * 4;
    DSV4_CHECK(size == want, where, p, "file is ", size, " bytes, the header's ", h.docs, " documents and ", h.tokens,
               " tokens need ", want, size < want ? " (truncated?)" : " (trailing bytes)");
    const auto* base = static_cast<const uint8_t*>(addr);
    offsets_ = reinterpret_cast<const uint64_t*>(base + kHeaderBytes);
    tokens_ = reinterpret_cast<const uint32_t*>(base + kHeaderBytes + (h.docs + 1) * 8);
    const uint64_t sum = fnv1a64(tokens_, h.tokens * 4, fnv1a64(offsets_, (h.docs + 1) * 8));
    DSV4_CHECK(sum == h.payload_checksum, where, p, "payload checksum mismatch (corrupted data)");
    DSV4_CHECK(offsets_[0] == 0 && offsets_[h.docs] == h.tokens, where, p, "document offsets run from ", offsets_[0],
               " to ", offsets_[h.docs], ", expected 0 to the token count ", h.tokens);
    for (uint64_t k = 0; k < h.docs; ++k)
      DSV4_CHECK(offsets_[k] < offsets_[k + 1], where, p, "document ", k, " is empty or its offsets decrease (",
                 offsets_[k], " -> ", offsets_[k + 1], ")");
    for (uint64_t i = 0; i < h.tokens; ++i)
      DSV4_CHECK(tokens_[i] < h.vocab_size, where, p, "token ", i, " has id ", tokens_[i], " >= vocab size ",
                 h.vocab_size);
    header_ = ShardHeader{h.version, TokenizerId{h.tokenizer_hash, h.vocab_size}, h.tokens, h.docs,
                          h.payload_checksum};
  } catch (...) {
    ::munmap(map_, map_size_);
    throw;
  }
}

TokenShard::~TokenShard() {
  if (map_) ::munmap(map_, map_size_);
}

TokenShard::TokenShard(TokenShard&& o) noexcept
    : path_(std::move(o.path_)), map_(o.map_), map_size_(o.map_size_), header_(o.header_), offsets_(o.offsets_),
      tokens_(o.tokens_) {
  o.map_ = nullptr;
  o.map_size_ = 0;
}

std::span<const uint32_t> TokenShard::doc(uint64_t k) const {
  DSV4_CHECK(k < header_.docs, "token shard", path_, ": document ", k, " out of range (", header_.docs,
             " documents)");
  return {tokens_ + offsets_[k], tokens_ + offsets_[k + 1]};
}

}  // namespace dsv4
