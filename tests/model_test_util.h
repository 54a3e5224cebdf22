// Small random DeepSeek-V4 models for tests: a config builder and parameters that
// exercise every path (non-trivial mHC gates, sinks, biases, norms).
#pragma once
#include <random>
#include <string>
#include <vector>

#include "io/config.h"
#include "model/weights.h"

namespace dsv4::testing_util {

struct TinyOptions {
  int hc_mult = 4;
  ScoringFunc scoring = ScoringFunc::SqrtSoftplus;
  std::vector<int> ratios = {0, 4, 16, 4};  // per layer; an MTP block with ratio 0 is appended
  int hash_layers = 1;
  bool yarn = true;
  int window = 8;
  int index_topk = 4;
};

inline ModelConfig tiny_config(const TinyOptions& o = {}) {
  ModelConfig c;
  c.vocab_size = 97;
  c.hidden_size = 64;
  c.moe_intermediate_size = 32;
  c.num_hidden_layers = static_cast<int>(o.ratios.size());
  c.num_hash_layers = o.hash_layers;
  c.num_nextn_predict_layers = 1;
  c.num_attention_heads = 4;
  c.n_routed_experts = 6;
  c.num_experts_per_tok = 2;
  c.scoring_func = o.scoring;
  c.routed_scaling_factor = 1.5f;
  c.swiglu_limit = 2.0f;
  c.q_lora_rank = 32;
  c.head_dim = 96;
  c.qk_rope_head_dim = 32;
  c.o_groups = 2;
  c.o_lora_rank = 16;
  c.sliding_window = o.window;
  c.compress_ratios = o.ratios;
  c.compress_ratios.push_back(0);
  c.compress_rope_theta = 160000.0f;
  c.rope_theta = 10000.0f;
  if (o.yarn) {
    c.yarn_factor = 4.0f;
    c.yarn_original_max_pos = 32;
  }
  c.index_n_heads = 2;
  c.index_head_dim = 64;
  c.index_topk = o.index_topk;
  c.hc_mult = o.hc_mult;
  c.hc_sinkhorn_iters = 20;
  c.max_position_embeddings = 4096;
  return c;
}

inline Params random_params(const ModelConfig& c, uint64_t seed) {
  Params p = init_params(c, seed);
  std::mt19937_64 rng(seed + 1);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& [name, t] : p.f32) {
    auto has = [&](const char* s) { return name.find(s) != std::string::npos; };
    if (has("norm.weight"))
      for (float& v : t.data) v = 1.0f + 0.2f * nd(rng);
    else if (has("_base") || has("attn_sink") || has("gate.bias") || has("ape"))
      for (float& v : t.data) v = 0.5f * nd(rng);
    else if (has("_scale"))
      for (float& v : t.data) v = 0.5f + 0.1f * nd(rng);
    else if (has("hc_") && has("_fn"))
      for (float& v : t.data) v = 0.05f * nd(rng);
  }
  return p;
}

inline std::vector<int64_t> random_ids(const ModelConfig& c, size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int64_t> ids(n);
  for (auto& v : ids) v = static_cast<int64_t>(rng() % c.vocab_size);
  return ids;
}

}  // namespace dsv4::testing_util
