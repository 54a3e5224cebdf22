// dsv4 init --config CONFIG_JSON --tokenizer TOKENIZER_JSON -o DIR [--seed N]: a new random
// model in the release layout (config.json, model.safetensors, tokenizer files).
#include <CLI/CLI.hpp>
#include <cstdint>
#include <cstdio>

#include "cli.h"
#include "model/init_dir.h"

namespace {

int run(int argc, char** argv) {
  CLI::App app{"Write a randomly initialized DeepSeek-V4 model (release layout) for a config and a tokenizer"};
  app.name(argv[0]);
  std::string config_path, tokenizer_path, out_dir;
  uint64_t seed = 0;
  app.add_option("--config", config_path, "config.json of the model (e.g. configs/tiny.json)")->required();
  app.add_option("--tokenizer", tokenizer_path, "tokenizer.json (e.g. data/tokenizers/byte/tokenizer.json)")
      ->required();
  app.add_option("-o,--output", out_dir, "folder to write (replaced if it holds a model already)")->required();
  app.add_option("--seed", seed, "seed of the initialization")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  dsv4::InitDirReport r = dsv4::init_model_dir(config_path, tokenizer_path, out_dir, seed);
  std::printf("wrote %s: %lld parameters (%d layers, hidden %d, vocab %d; tokenizer uses %d ids), seed %llu\n",
              out_dir.c_str(), static_cast<long long>(r.parameters), r.config.num_hidden_layers,
              r.config.hidden_size, r.config.vocab_size, r.tokenizer_vocab, static_cast<unsigned long long>(seed));
  return 0;
}

}  // namespace

DSV4_COMMAND(init, "init", "write a randomly initialized model (release layout) from a config and a tokenizer", run);
