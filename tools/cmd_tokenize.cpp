// dsv4 encode / dsv4 decode: text <-> token ids with a tokenizer.json.
//   dsv4 encode -t tokenizer.json < text.txt     ids on one line, separated by spaces
//   dsv4 encode -t tokenizer.json a.txt b.txt    one line of ids per file
//   dsv4 decode -t tokenizer.json < ids.txt      the text (the exact bytes, no newline added)
#include <climits>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cli.h"
#include "core/error.h"
#include "io/tokenizer.h"

namespace dsv4::cli {
namespace {

std::string read_stdin() {
  std::ios::sync_with_stdio(false);
  return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
}

std::string read_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  DSV4_CHECK(file.good(), "encode", "cannot open '", path, "'");
  return std::string(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
}

void write_ids(const std::vector<int32_t>& ids) {
  std::string line;
  line.reserve(ids.size() * 7 + 1);
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) line += ' ';
    line += std::to_string(ids[i]);
  }
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stdout);
}

int run_encode(int argc, char** argv) {
  CLI::App app{"Encode UTF-8 text from stdin into token ids (one line, space-separated)", argv[0]};
  std::string tokenizer_path;
  bool no_special = false;
  bool no_post = false;
  app.add_option("-t,--tokenizer", tokenizer_path, "tokenizer.json")->required();
  app.add_flag("--no-special", no_special,
               "treat special-token text (e.g. <｜begin▁of▁sentence｜>) as ordinary text");
  app.add_flag("--no-post-processor", no_post, "do not let the post-processor add tokens (e.g. BOS)");
  std::vector<std::string> files;
  app.add_option("files", files, "encode these files instead of stdin, one line of ids each");
  CLI11_PARSE(app, argc, argv);

  Tokenizer tokenizer = Tokenizer::from_file(tokenizer_path);
  EncodeOptions options;
  options.parse_special = !no_special;
  options.add_special_tokens = !no_post;
  if (files.empty()) write_ids(tokenizer.encode(read_stdin(), options));
  for (const std::string& path : files) write_ids(tokenizer.encode(read_file(path), options));
  return 0;
}

int run_decode(int argc, char** argv) {
  CLI::App app{"Decode whitespace-separated token ids from stdin into text", argv[0]};
  std::string tokenizer_path;
  bool skip_special = false;
  app.add_option("-t,--tokenizer", tokenizer_path, "tokenizer.json")->required();
  app.add_flag("--skip-special", skip_special, "leave special tokens out of the text");
  CLI11_PARSE(app, argc, argv);

  Tokenizer tokenizer = Tokenizer::from_file(tokenizer_path);
  std::string input = read_stdin();
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (true) {
    pos = input.find_first_not_of(" \t\r\n", pos);
    if (pos == std::string::npos) break;
    size_t end = input.find_first_of(" \t\r\n", pos);
    std::string word = input.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
    size_t used = 0;
    long long id = -1;
    try {
      id = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    DSV4_CHECK(used == word.size() && id >= 0 && id <= INT32_MAX, "decode",
               "input id #", ids.size(), " '", word, "' is not a non-negative integer id");
    ids.push_back(static_cast<int32_t>(id));
    pos = end;
  }
  std::string text = tokenizer.decode(ids, skip_special);
  std::fwrite(text.data(), 1, text.size(), stdout);
  return 0;
}

}  // namespace
}  // namespace dsv4::cli

DSV4_COMMAND(encode, "encode", "text on stdin -> token ids (-t tokenizer.json)", dsv4::cli::run_encode);
DSV4_COMMAND(decode, "decode", "token ids on stdin -> text (-t tokenizer.json)", dsv4::cli::run_decode);
