#include "io/token_corpus.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

#include "core/error.h"

namespace dsv4 {

namespace fs = std::filesystem;

TokenizerId tokenizer_identity(const std::string& tokenizer_json_text, const Tokenizer& tokenizer) {
  return TokenizerId{fnv1a64(tokenizer_json_text.data(), tokenizer_json_text.size()),
                     static_cast<uint32_t>(tokenizer.vocab_size())};
}

namespace {

std::string read_all(const std::string& path, const char* where) {
  std::ifstream in(path, std::ios::binary);
  DSV4_CHECK(in.good(), where, "cannot open '", path, "'");
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Regular files of the inputs: files as given, folders walked recursively, sorted by path.
std::vector<std::string> input_files(const std::vector<std::string>& inputs) {
  std::vector<std::string> files;
  for (const std::string& in : inputs) {
    std::error_code ec;
    const fs::file_status st = fs::status(in, ec);
    DSV4_CHECK(!ec && fs::exists(st), "tokenize", "input '", in, "' does not exist");
    if (fs::is_directory(st)) {
      std::vector<std::string> found;
      for (const auto& e : fs::recursive_directory_iterator(in))
        if (e.is_regular_file()) found.push_back(e.path().string());
      DSV4_CHECK(!found.empty(), "tokenize", "folder '", in, "' holds no files");
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else {
      files.push_back(in);
    }
  }
  return files;
}

// Paragraphs: runs of lines separated by lines that are empty or only whitespace.
std::vector<std::string> paragraphs(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) {
      if (!cur.empty()) out.push_back(std::move(cur));
      cur.clear();
      continue;
    }
    if (!cur.empty()) cur += '\n';
    cur += line;
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

}  // namespace

TokenizeReport tokenize_corpus(const std::vector<std::string>& inputs, const std::string& tokenizer_path,
                               const std::string& out_dir, const TokenizeOptions& options) {
  DSV4_CHECK(!inputs.empty(), "tokenize", "no input files or folders given");
  DSV4_CHECK(options.shard_tokens > 0, "tokenize", "shard size must be > 0 tokens");
  const std::string tokenizer_text = read_all(tokenizer_path, "tokenize");
  const Tokenizer tokenizer = Tokenizer::from_json(tokenizer_text, tokenizer_path);
  TokenizeReport report;
  report.tokenizer = tokenizer_identity(tokenizer_text, tokenizer);
  std::vector<uint32_t> prefix, suffix;
  if (!options.bos.empty()) prefix.push_back(static_cast<uint32_t>(tokenizer.require_id(options.bos)));
  if (!options.eos.empty()) suffix.push_back(static_cast<uint32_t>(tokenizer.require_id(options.eos)));

  const std::vector<std::string> files = input_files(inputs);
  fs::create_directories(out_dir);
  for (const auto& e : fs::directory_iterator(out_dir))
    DSV4_CHECK(e.path().extension() != ".tok", "tokenize", "'", out_dir, "' already holds shards (",
               e.path().filename().string(), "): choose an empty folder");

  std::vector<uint64_t> offsets{0};
  std::vector<uint32_t> tokens;
  auto flush = [&]() {
    if (tokens.empty()) return;
    char name[32];
    std::snprintf(name, sizeof(name), "shard-%05zu.tok", report.shards.size());
    const std::string path = (fs::path(out_dir) / name).string();
    write_token_shard(path, report.tokenizer, offsets, tokens);
    report.shards.push_back(path);
    offsets.assign(1, 0);
    tokens.clear();
  };
  // Plain text: special-token text in it stays text, and no post-processor adds tokens.
  const EncodeOptions plain{/*parse_special=*/false, /*add_special_tokens=*/false};
  for (const std::string& file : files) {
    const std::string text = read_all(file, "tokenize");
    report.files++;
    report.bytes += text.size();
    std::vector<std::string> docs;
    if (options.split_paragraphs) docs = paragraphs(text);
    else if (!text.empty()) docs.push_back(text);
    std::vector<std::vector<int32_t>> encoded(docs.size());
#pragma omp parallel for schedule(dynamic, 16)
    for (size_t d = 0; d < docs.size(); ++d) encoded[d] = tokenizer.encode(docs[d], plain);
    for (const std::vector<int32_t>& ids : encoded) {
      if (ids.empty()) continue;
      tokens.insert(tokens.end(), prefix.begin(), prefix.end());
      tokens.insert(tokens.end(), ids.begin(), ids.end());
      tokens.insert(tokens.end(), suffix.begin(), suffix.end());
      offsets.push_back(tokens.size());
      report.documents++;
      report.tokens += ids.size() + prefix.size() + suffix.size();
      if (tokens.size() >= options.shard_tokens) flush();
    }
  }
  flush();
  DSV4_CHECK(report.documents > 0, "tokenize", "the inputs hold no text");
  return report;
}

TokenCorpus::TokenCorpus(const std::string& path) : path_(path) {
  std::error_code ec;
  std::vector<std::string> files;
  if (fs::is_directory(path, ec)) {
    for (const auto& e : fs::directory_iterator(path))
      if (e.is_regular_file() && e.path().extension() == ".tok") files.push_back(e.path().string());
    std::sort(files.begin(), files.end());
    DSV4_CHECK(!files.empty(), "corpus", "'", path, "' holds no *.tok shards: make them with `dsv4 tokenize`");
  } else {
    DSV4_CHECK(fs::exists(path, ec), "corpus", "'", path, "' does not exist: make shards with `dsv4 tokenize`");
    files.push_back(path);
  }
  for (const std::string& f : files) {
    auto shard = std::make_unique<TokenShard>(f);
    if (shards_.empty()) tokenizer_ = shard->header().tokenizer;
    DSV4_CHECK(shard->header().tokenizer == tokenizer_, "corpus", "'", f, "' was made with tokenizer ",
               tokenizer_id_str(shard->header().tokenizer), ", '", files.front(), "' with ",
               tokenizer_id_str(tokenizer_), ": one corpus, one tokenizer");
    first_doc_.push_back(first_doc_.back() + shard->doc_count());
    tokens_ += shard->token_count();
    shards_.push_back(std::move(shard));
  }
}

std::span<const uint32_t> TokenCorpus::doc(uint64_t k) const {
  DSV4_CHECK(k < doc_count(), "corpus", path_, ": document ", k, " out of range (", doc_count(), " documents)");
  const size_t s = std::upper_bound(first_doc_.begin(), first_doc_.end(), k) - first_doc_.begin() - 1;
  return shards_[s]->doc(k - first_doc_[s]);
}

void TokenCorpus::require_tokenizer(const TokenizerId& id, const std::string& tokenizer_path) const {
  DSV4_CHECK(id == tokenizer_, "corpus", "'", path_, "' was tokenized with tokenizer ", tokenizer_id_str(tokenizer_),
             " but '", tokenizer_path, "' is ", tokenizer_id_str(id),
             ": re-run `dsv4 tokenize` with this tokenizer, or name the one the shards were made with");
}

}  // namespace dsv4
