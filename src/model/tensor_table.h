// The one tensor table: every parameter of a DeepSeek-V4 model with its name, logical
// shape, release storage and optimizer group, derived from the config (checkpoint.md,
// "Tensor names and shapes"; training.md §3). The loader, the saver, `dsv4 init`, the
// optimizer's parameter groups and the tests all read this table.
#pragma once
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/config.h"

namespace dsv4 {

enum class Storage { F32, BF16, Fp8Block, Fp4Packed, I64 };

enum class ParamGroup {
  Muon,           // 2-D weight matrices (each expert matrix separately)
  AdamW,          // embed, head: AdamW with weight decay
  AdamWNoDecay,   // RMSNorm weights, hc_*_base / hc_*_scale, attn_sink, compressor ape
  GateBias,       // gate.bias: aux-loss-free update, no gradient
  Fixed,          // tid2eid: fixed at initialization
};

enum class InitKind { Normal, Ones, Zeros, HcScale, Sink, Hash };

struct TensorSpec {
  std::string name;
  Shape shape;
  Storage storage;
  ParamGroup group;
  InitKind init;
  bool is_int() const { return storage == Storage::I64; }
  bool trainable() const { return group != ParamGroup::GateBias && group != ParamGroup::Fixed; }
};

std::vector<TensorSpec> tensor_table(const ModelConfig& c);

const char* param_group_name(ParamGroup g);

}  // namespace dsv4
