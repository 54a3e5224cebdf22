// Model parameters: float32 tensors by name (the tensor table's names), plus the
// integer hash tables, and per-block views that the forward code reads.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/config.h"

namespace dsv4 {

struct Params {
  std::map<std::string, Tensor> f32;                 // every float parameter
  std::map<std::string, std::vector<int64_t>> i64;   // gate.tid2eid [V, k]

  const Tensor& at(const std::string& name) const;
  Tensor& at(const std::string& name);
};

// Loads every tensor of the table from a release-layout folder (dequantized).
Params load_params(const std::string& dir, ModelConfig* config);
// Random initialization by the table's InitKind (training.md §5 for mHC), seeded.
Params init_params(const ModelConfig& c, uint64_t seed);
void save_params(const std::string& dir, const ModelConfig& c, const Params& p,
                 const std::map<std::string, std::string>& extra_files = {});

struct HcWeights { const Tensor *fn, *base, *scale; };

struct CompressorWeights { const Tensor *wkv = nullptr, *wgate = nullptr, *ape = nullptr, *norm = nullptr; };

struct AttnWeights {
  const Tensor *wq_a, *q_norm, *wq_b, *wkv, *kv_norm, *wo_a, *wo_b, *sink;
  CompressorWeights compressor;                          // m > 0
  const Tensor *idx_wq_b = nullptr, *idx_weights_proj = nullptr;  // m == 4
  CompressorWeights idx_compressor;
};

struct ExpertWeights { const Tensor *w1, *w2, *w3; };

struct MoeWeights {
  const Tensor* gate;
  const Tensor* bias = nullptr;               // learned routing
  const std::vector<int64_t>* tid2eid = nullptr;  // hash routing
  std::vector<ExpertWeights> experts;
  ExpertWeights shared;
};

struct BlockWeights {
  std::string prefix;  // "layers.3." or "mtp.0."
  int ratio = 0;       // m
  const Tensor *attn_norm, *ffn_norm;
  HcWeights hc_attn, hc_ffn;
  AttnWeights attn;
  MoeWeights moe;
};

struct MtpWeights {
  BlockWeights block;
  const Tensor *e_proj, *h_proj, *enorm, *hnorm, *norm;
  HcWeights hc_head;
};

struct ModelWeights {
  const Tensor *embed, *head, *norm;
  HcWeights hc_head;
  std::vector<BlockWeights> layers;
  std::vector<MtpWeights> mtp;
};

ModelWeights bind_weights(const ModelConfig& c, const Params& p);

}  // namespace dsv4
