// Release-layout checkpoints (checkpoint.md): a folder with config.json and either
// model.safetensors or model.safetensors.index.json + shards. Tensors are read by name
// and dequantized exactly to float32 in their logical shape:
//   F8_E4M3 + `.scale` (E8M0, 128×128 blocks, partial edge blocks),
//   packed FP4 I8 [rows, cols/2] + `.scale` (E8M0 [rows, cols/32]),
//   BF16, F16, F32 (F64 too); integer tensors (tid2eid) as I64 or I32.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/config.h"
#include "io/safetensors.h"

namespace dsv4 {

class Checkpoint {
 public:
  explicit Checkpoint(const std::string& dir);  // reads config.json and maps every shard
  const std::string& dir() const { return dir_; }
  const ModelConfig& config() const { return config_; }

  bool has(const std::string& name) const;
  // The stored tensor (dtype, stored shape, raw bytes in the mapping), or null when absent.
  const TensorInfo* find(const std::string& name) const;
  // Every stored tensor name (`.scale` companions included).
  std::vector<std::string> names() const;
  // The tensor as float32 with `logical_shape`; errors name the tensor and say what
  // was expected (dtype, stored shape, scale shape).
  Tensor load(const std::string& name, const Shape& logical_shape) const;
  std::vector<int64_t> load_int(const std::string& name, const Shape& shape) const;

 private:
  const TensorInfo& info(const std::string& name) const;
  std::string dir_;
  ModelConfig config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsFile*> where_;
};

// Writes a release-layout folder atomically (a temporary sibling folder, fsync,
// rename): config.json and model.safetensors with every tensor F32 (integer tensors
// I64), plus `extra_files` (name → contents, e.g. tokenizer.json) verbatim. An integer
// tensor named `*.tid2eid` is stored [vocab_size, num_experts_per_tok], any other 1-D.
// An existing `dir` is replaced only if it is empty or holds a config.json.
void save_checkpoint(const std::string& dir, const ModelConfig& config,
                     const std::map<std::string, Tensor>& tensors,
                     const std::map<std::string, std::vector<int64_t>>& int_tensors,
                     const std::map<std::string, std::string>& extra_files = {});

}  // namespace dsv4
