// Training checkpoints in a run folder (training.md §7, docs/train.md):
//   RUN_DIR/ckpt-<step>/   the release layout (config.json, model.safetensors with every
//                          parameter in F32 — gate biases included — tokenizer files), so it
//                          loads in `dsv4 generate` and `dsv4 parity`-style tools as it is;
//                          plus optimizer.safetensors (moments by name) and
//                          trainer_state.json (step, tokens, loader position, RNG).
//   RUN_DIR/latest         a symlink to the newest ckpt-<step>.
// A checkpoint is assembled in a hidden staging folder and renamed into place only once
// every file is written and synced; `latest` is replaced by an atomic rename too. So a kill
// at any moment leaves every ckpt-<step> complete, and `latest` naming one of them.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "core/tensor.h"
#include "io/config.h"
#include "model/weights.h"

namespace dsv4 {

struct RunSnapshot {
  const ModelConfig* config = nullptr;
  const Params* params = nullptr;
  std::map<std::string, std::string> model_files;  // tokenizer.json, tokenizer_config.json, ...
  std::map<std::string, Tensor> optimizer_state;   // by name
  nlohmann::json trainer_state;
};

// Writes RUN_DIR/ckpt-<step>, points `latest` at it, then removes all but the newest `keep`
// checkpoints (keep 0: none removed). Returns the checkpoint's path.
std::string save_run_checkpoint(const std::string& run_dir, int64_t step, const RunSnapshot& snap, int64_t keep);

// Points RUN_DIR/latest at ckpt-<step> (a new symlink renamed over the old one).
void set_latest(const std::string& run_dir, int64_t step);

// The step of the newest complete checkpoint of a run folder, if any.
std::optional<int64_t> newest_checkpoint(const std::string& run_dir);
std::string checkpoint_dir(const std::string& run_dir, int64_t step);

struct LoadedCheckpoint {
  std::string dir;
  ModelConfig config;
  Params params;
  std::map<std::string, Tensor> optimizer_state;
  nlohmann::json trainer_state;
};
LoadedCheckpoint load_run_checkpoint(const std::string& dir);

// An exclusive lock on a run folder (flock on RUN_DIR/.lock, created with the folder), held
// while it lives; the kernel drops it when the process dies, SIGKILL included. A second
// trainer on the same folder is an Error.
class RunLock {
 public:
  explicit RunLock(const std::string& run_dir);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  int fd_ = -1;
};

// Removes what an interrupted save left behind (staging and trash folders).
void clean_run_dir(const std::string& run_dir);

// Test hook: DSV4_TRAIN_FAULT=<point> makes the process SIGKILL itself at that point of a
// save ("model", "optimizer", "state", "rename", "latest"), to prove saves are atomic.
void fault_point(const char* point);

}  // namespace dsv4
