// Token shards (docs/data.md): the round trip, every way a shard can be broken, corpora of
// several shards, and `tokenize_corpus` against the tokenizer itself.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "io/token_corpus.h"
#include "io/token_shard.h"
#include "io_test_util.h"

namespace dsv4 {
namespace {

using testing_io::fresh_dir;
using testing_io::write_bytes;

const std::string kByteTokenizer = std::string(DSV4_SOURCE_DIR) + "/data/tokenizers/byte/tokenizer.json";

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

template <class T>
void put(std::string& bytes, size_t at, T v) {
  std::memcpy(bytes.data() + at, &v, sizeof(T));
}

// Recomputes both checksums of a shard's bytes (to make a shard broken in one way only).
void reseal(std::string& b) {
  put(b, 40, fnv1a64(b.data() + 64, b.size() - 64));
  put(b, 48, fnv1a64(b.data(), 48));
}

const TokenizerId kId{0x1234abcd5678ef00ull, 300};

// 3 documents: [5, 6, 7], [299], [1, 2].
std::string good_shard(const std::string& dir) {
  const std::string path = dir + "/a.tok";
  write_token_shard(path, kId, {0, 3, 4, 6}, {5, 6, 7, 299, 1, 2});
  return path;
}

TEST(TokenShard, RoundTripsDocumentsAndHeader) {
  const std::string dir = fresh_dir("rt");
  TokenShard s(good_shard(dir));
  EXPECT_EQ(s.header().version, 1u);
  EXPECT_EQ(s.header().tokenizer, kId);
  EXPECT_EQ(s.doc_count(), 3u);
  EXPECT_EQ(s.token_count(), 6u);
  auto d0 = s.doc(0), d1 = s.doc(1), d2 = s.doc(2);
  EXPECT_EQ(std::vector<uint32_t>(d0.begin(), d0.end()), (std::vector<uint32_t>{5, 6, 7}));
  EXPECT_EQ(std::vector<uint32_t>(d1.begin(), d1.end()), (std::vector<uint32_t>{299}));
  EXPECT_EQ(std::vector<uint32_t>(d2.begin(), d2.end()), (std::vector<uint32_t>{1, 2}));
  EXPECT_ERROR_CONTAINS(s.doc(3), "document 3 out of range");
  // the file is exactly header + offsets + tokens; no temporary file is left behind
  EXPECT_EQ(std::filesystem::file_size(dir + "/a.tok"), 64u + 4 * 8 + 6 * 4);
  EXPECT_FALSE(std::filesystem::exists(dir + "/a.tok.tmp"));
}

TEST(TokenShard, WriterRejectsBadInput) {
  const std::string dir = fresh_dir("w");
  EXPECT_ERROR_CONTAINS(write_token_shard(dir + "/x.tok", kId, {0, 2, 2, 3}, {1, 2, 3}), "document 1 is empty");
  EXPECT_ERROR_CONTAINS(write_token_shard(dir + "/x.tok", kId, {0, 2}, {1, 2, 3}), "offsets must run from 0");
  EXPECT_ERROR_CONTAINS(write_token_shard(dir + "/x.tok", kId, {0, 1}, {300}), "id 300 >= vocab size 300");
  EXPECT_FALSE(std::filesystem::exists(dir + "/x.tok"));
}

TEST(TokenShard, BrokenShardsGiveClearErrors) {
  const std::string dir = fresh_dir("broken");
  const std::string good = read_bytes(good_shard(dir));
  const std::string p = dir + "/b.tok";
  auto expect = [&](std::string bytes, const char* what) {
    write_bytes(p, bytes);
    EXPECT_ERROR_CONTAINS(TokenShard{p}, p, what);
  };
  expect(good.substr(0, 40), "shorter than the 64-byte header");
  expect(good.substr(0, good.size() - 4), "truncated");
  expect(good + "xx", "trailing bytes");
  {
    std::string b = good;
    b[0] = 'X';
    expect(b, "bad magic");
  }
  {
    std::string b = good;
    put<uint32_t>(b, 8, 2);
    put(b, 48, fnv1a64(b.data(), 48));
    expect(b, "format version 2 is not supported");
  }
  {
    std::string b = good;
    put<uint64_t>(b, 24, 7);  // token count, checksum left stale
    expect(b, "header checksum mismatch");
  }
  {
    std::string b = good;
    b[b.size() - 1] ^= 1;  // one bit of the last token
    expect(b, "payload checksum mismatch");
  }
  {
    std::string b = good;
    put<uint64_t>(b, 32, 1000000);  // documents beyond what the file could hold
    put(b, 48, fnv1a64(b.data(), 48));
    expect(b, "more than the file");
  }
  {
    std::string b = good;
    put<uint64_t>(b, 64 + 8, 5);  // offsets 0, 5, 4, 6: document 1 runs backwards
    reseal(b);
    expect(b, "document 1 is empty or its offsets decrease");
  }
  {
    std::string b = good;
    put<uint64_t>(b, 64, 1);  // the first offset must be 0
    reseal(b);
    expect(b, "offsets run from 1");
  }
  {
    std::string b = good;
    put<uint32_t>(b, 64 + 32 + 4 * 3, 300);  // token 3 = the vocab size
    reseal(b);
    expect(b, "token 3 has id 300 >= vocab size 300");
  }
  EXPECT_ERROR_CONTAINS(TokenShard{dir + "/missing.tok"}, "cannot open");
}

TEST(TokenCorpus, NumbersDocumentsAcrossShardsAndChecksTheTokenizer) {
  const std::string dir = fresh_dir("corpus");
  write_token_shard(dir + "/s0.tok", kId, {0, 2, 3}, {1, 2, 3});
  write_token_shard(dir + "/s1.tok", kId, {0, 4}, {4, 5, 6, 7});
  write_bytes(dir + "/notes.txt", "ignored: not a shard");
  TokenCorpus c(dir);
  EXPECT_EQ(c.doc_count(), 3u);
  EXPECT_EQ(c.token_count(), 7u);
  EXPECT_EQ(c.doc(2).size(), 4u);
  EXPECT_EQ(c.doc(2)[0], 4u);
  EXPECT_EQ(c.doc(1)[0], 3u);
  EXPECT_NO_THROW(c.require_tokenizer(kId, "t.json"));
  EXPECT_ERROR_CONTAINS(c.require_tokenizer(TokenizerId{1, 300}, "other.json"), "other.json", "re-run `dsv4 tokenize`");

  write_token_shard(dir + "/s2.tok", TokenizerId{99, 300}, {0, 1}, {1});
  EXPECT_ERROR_CONTAINS(TokenCorpus{dir}, "s2.tok", "one corpus, one tokenizer");
  EXPECT_ERROR_CONTAINS(TokenCorpus{fresh_dir("empty")}, "holds no *.tok shards");
}

TEST(Tokenize, ParagraphsBecomeDocumentsWithBosAndEos) {
  const std::string dir = fresh_dir("tok");
  std::filesystem::create_directories(dir + "/text/sub");
  write_bytes(dir + "/text/b.txt", "Second file.\n");
  write_bytes(dir + "/text/a.txt", "First paragraph,\ntwo lines.\n\n  \nSecond <｜end▁of▁sentence｜> one.\n");
  write_bytes(dir + "/text/sub/c.txt", "");
  TokenizeOptions opt;
  opt.bos = "<｜begin▁of▁sentence｜>";
  opt.eos = "<｜end▁of▁sentence｜>";
  opt.split_paragraphs = true;
  opt.shard_tokens = 30;  // forces a second shard
  const TokenizeReport r = tokenize_corpus({dir + "/text"}, kByteTokenizer, dir + "/out", opt);
  EXPECT_EQ(r.files, 3u);
  EXPECT_EQ(r.documents, 3u);
  EXPECT_EQ(r.shards.size(), 2u);

  const Tokenizer tok = Tokenizer::from_file(kByteTokenizer);
  const EncodeOptions plain{false, false};
  // files in path order (a.txt, b.txt, sub/c.txt); special-token text inside the text stays text
  const std::vector<std::string> texts = {"First paragraph,\ntwo lines.", "Second <｜end▁of▁sentence｜> one.",
                                          "Second file."};
  TokenCorpus c(dir + "/out");
  ASSERT_EQ(c.doc_count(), 3u);
  EXPECT_EQ(c.tokenizer(), r.tokenizer);
  for (size_t d = 0; d < texts.size(); ++d) {
    std::vector<uint32_t> want{0};  // BOS
    for (int32_t id : tok.encode(texts[d], plain)) want.push_back(static_cast<uint32_t>(id));
    want.push_back(1);  // EOS
    auto got = c.doc(d);
    EXPECT_EQ(std::vector<uint32_t>(got.begin(), got.end()), want) << "document " << d;
  }
  // the identity is the hash of the tokenizer file's bytes and its vocab size
  const std::string text = read_bytes(kByteTokenizer);
  EXPECT_EQ(r.tokenizer.hash, fnv1a64(text.data(), text.size()));
  EXPECT_EQ(r.tokenizer.vocab_size, static_cast<uint32_t>(tok.vocab_size()));

  EXPECT_ERROR_CONTAINS(tokenize_corpus({dir + "/text"}, kByteTokenizer, dir + "/out", opt), "already holds shards");
  EXPECT_ERROR_CONTAINS(tokenize_corpus({dir + "/nope"}, kByteTokenizer, dir + "/o2", opt), "does not exist");
  opt.bos = "<no such token>";
  EXPECT_ERROR_CONTAINS(tokenize_corpus({dir + "/text"}, kByteTokenizer, dir + "/o3", opt), "no such token");
}

}  // namespace
}  // namespace dsv4
