// dsv4 tokenize -t TOKENIZER_JSON -o OUT_DIR INPUT... : text files or folders -> token shards
// (docs/data.md). One document per file, or per paragraph with --paragraphs; each document
// gets the BOS and EOS tokens unless told otherwise.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "cli.h"
#include "io/token_corpus.h"

namespace {

int run(int argc, char** argv) {
  CLI::App app{"Tokenize text files or corpus folders into token shards for `dsv4 train`"};
  app.name(argv[0]);
  std::string tokenizer, out;
  std::vector<std::string> inputs;
  dsv4::TokenizeOptions opt;
  opt.bos = "<｜begin▁of▁sentence｜>";
  opt.eos = "<｜end▁of▁sentence｜>";
  app.add_option("-t,--tokenizer", tokenizer, "tokenizer.json")->required();
  app.add_option("-o,--output", out, "folder for shard-NNNNN.tok (must hold no shards yet)")->required();
  app.add_option("inputs", inputs, "text files, or folders (every file under them, in path order)")->required();
  app.add_flag("--paragraphs", opt.split_paragraphs, "one document per blank-line-separated paragraph (default: per file)");
  app.add_option("--bos", opt.bos, "token put before each document (\"\" for none)")->capture_default_str();
  app.add_option("--eos", opt.eos, "token put after each document (\"\" for none)")->capture_default_str();
  app.add_option("--shard-tokens", opt.shard_tokens, "start a new shard after this many tokens")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  const dsv4::TokenizeReport r = dsv4::tokenize_corpus(inputs, tokenizer, out, opt);
  std::printf("%llu files, %llu bytes -> %llu documents, %llu tokens in %zu shard(s) under %s (tokenizer %s)\n",
              static_cast<unsigned long long>(r.files), static_cast<unsigned long long>(r.bytes),
              static_cast<unsigned long long>(r.documents), static_cast<unsigned long long>(r.tokens), r.shards.size(),
              out.c_str(), dsv4::tokenizer_id_str(r.tokenizer).c_str());
  return 0;
}

}  // namespace

DSV4_COMMAND(tokenize, "tokenize", "text files or folders -> token shards for training (-t tokenizer.json -o DIR)", run);
