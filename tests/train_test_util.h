// Helpers for the trainer tests: a micro V4 config (every layer kind, seconds per run), a
// small corpus of byte-tokenized paragraphs, and a recipe over both.
#pragma once
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "io/token_corpus.h"

namespace dsv4::testing_train {

inline const std::string kByteTokenizer = std::string(DSV4_SOURCE_DIR) + "/data/tokenizers/byte/tokenizer.json";

// tests/data/micro-config.json: 2 layers (CSA with the indexer, then HCA) + MTP, hash
// routing in layer 0, mHC n = 2; a training step takes a fraction of a second.
inline const std::string kMicroConfig = std::string(DSV4_SOURCE_DIR) + "/tests/data/micro-config.json";
inline nlohmann::json micro_config() {
  std::ifstream in(kMicroConfig);
  return nlohmann::json::parse(in);
}

// Paragraphs of varied lengths (some longer than a row, some shorter), byte-tokenized.
inline std::string make_corpus(const std::string& dir) {
  const std::string text_dir = dir + "/text";
  std::filesystem::create_directories(text_dir);
  std::ofstream out(text_dir + "/corpus.txt");
  const char* words[] = {"the", "jury", "said", "county", "election", "was", "of", "and", "a", "report"};
  for (int p = 0; p < 60; ++p) {
    const int n = 3 + (p * 7) % 25;
    for (int w = 0; w < n; ++w) out << (w ? " " : "") << words[(p * 3 + w * w) % 10];
    out << ".\n\n";
  }
  out.close();
  TokenizeOptions opt;
  opt.bos = "<｜begin▁of▁sentence｜>";
  opt.eos = "<｜end▁of▁sentence｜>";
  opt.split_paragraphs = true;
  tokenize_corpus({text_dir}, kByteTokenizer, dir + "/shards", opt);
  return dir + "/shards";
}

// 10 steps of 128 tokens: seq 32 then 64, dense → indexer warm-up → sparse, a checkpoint
// every 3 steps, evaluations every 4, monitors every 2.
inline nlohmann::json micro_recipe(const std::string& corpus) {
  return {{"model", micro_config()},
          {"tokenizer", kByteTokenizer},
          {"data", {{"corpus", corpus}, {"val_fraction", 0.1}}},
          {"steps", 10},
          {"tokens_per_step", 128},
          {"seq_len_stages", nlohmann::json::array({{{"seq_len", 32}, {"steps", 5}}, {{"seq_len", 64}}})},
          {"attention_phases", nlohmann::json::array({{{"phase", "dense"}, {"steps", 4}},
                                                      {{"phase", "indexer_warmup"}, {"steps", 2}},
                                                      {{"phase", "sparse"}}})},
          {"lr_schedule", {{"peak", 3e-3}, {"warmup_steps", 2}, {"constant_steps", 2}, {"decay_steps", 6}}},
          {"eval", {{"interval_steps", 4}, {"rows", 2}}},
          {"checkpoint", {{"interval_steps", 3}, {"keep", 2}}},
          {"monitor_interval_steps", 2},
          {"seed", 5},
          {"threads", 1}};
}

}  // namespace dsv4::testing_train
