// A new, randomly initialized model written in the release layout (checkpoint.md):
// config.json, model.safetensors (init_params), the tokenizer.json it was given, and a
// tokenizer_config.json and generation_config.json that name its BOS/EOS tokens.
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "io/config.h"
#include "io/tokenizer.h"

namespace dsv4 {

struct InitDirReport {
  ModelConfig config;
  int64_t parameters = 0;  // float parameters (hash tables excluded)
  int32_t tokenizer_vocab = 0;
};

// The tokenizer must fit the config: every id it has below vocab_size, and tokens for
// bos_token_id and eos_token_id; otherwise an Error that says what to change.
void check_tokenizer_fits(const ModelConfig& config, const Tokenizer& tokenizer, const std::string& where);

// Hugging Face-style companions of a checkpoint.
nlohmann::ordered_json make_tokenizer_config(const ModelConfig& config, const Tokenizer& tokenizer);
nlohmann::ordered_json make_generation_config(const ModelConfig& config);

// Reads config_path and tokenizer_path, checks them, writes out_dir (atomically, as
// save_checkpoint does).
InitDirReport init_model_dir(const std::string& config_path, const std::string& tokenizer_path,
                             const std::string& out_dir, uint64_t seed);

}  // namespace dsv4
