// A training recipe (docs/train.md): everything `dsv4 train` needs, read from one JSON file
// and validated so that a mistake is an Error naming the key ("seq_len_stages[1].seq_len").
// Relative paths are resolved against the recipe's folder.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/config.h"
#include "train/optimizer.h"
#include "train/train_graph.h"

namespace dsv4 {

struct SeqStage {
  int64_t seq_len = 0;
  int64_t first_step = 0, end_step = 0;  // steps [first_step, end_step)
};

struct PhaseSpan {
  AttnPhase phase = AttnPhase::Dense;
  int64_t first_step = 0, end_step = 0;
};

struct Recipe {
  std::string path;                 // where it was read from ("" for inline text)
  nlohmann::json model_json;        // the model config as given (inline) or read (path)
  ModelConfig model;
  std::string tokenizer_path;
  std::string corpus_path;
  double val_fraction = 0.02;
  uint64_t split_seed = 0;

  int64_t steps = 0;
  int64_t tokens_per_step = 0;
  std::vector<SeqStage> stages;     // cover [0, steps)
  std::vector<PhaseSpan> phases;    // cover [0, steps), in the order dense, indexer_warmup, sparse

  OptimizerConfig optimizer;        // for everything but the indexer
  bool muon = true;                 // false: AdamW for the matrices too (ablations)
  float indexer_lr = 1e-3f;         // the indexer's own constant learning rate (V3.2 warm-up)
  float indexer_kl_weight = 1.0f;   // weight of the indexer KL in the sparse phase (0: frozen)
  float mtp_weight = 0.3f, mtp_weight_decay = 0.1f, balance_weight = 1e-4f;

  int64_t eval_interval = 0;        // steps; 0: only at the end
  int64_t eval_rows = 8;
  int64_t checkpoint_interval = 0;  // steps; 0: only at the end
  int64_t keep_checkpoints = 2;     // newest kept (0: all)
  int64_t monitor_interval = 10;    // steps between health-monitor passes; 0: never
  uint64_t seed = 0;                // initialization and shuffling
  int threads = 0;                  // 0: OpenMP's default

  int64_t seq_len_at(int64_t step) const;
  AttnPhase phase_at(int64_t step) const;
  int64_t rows_at(int64_t step) const { return tokens_per_step / seq_len_at(step); }
  // The recipe as given with every path made absolute (RUN_DIR/recipe.json): parsing it
  // again from anywhere gives the same recipe.
  nlohmann::json resolved;
};

// `where` names the source in messages; `base_dir` resolves relative paths.
Recipe parse_recipe(const nlohmann::json& j, const std::string& where, const std::string& base_dir);
Recipe load_recipe(const std::string& path);

const char* phase_name(AttnPhase p);  // "dense", "indexer_warmup", "sparse"

}  // namespace dsv4
