// ModelConfig: config.json of a DeepSeek-V4 checkpoint (checkpoint.md, "config.json keys
// used"), validated: a missing key, a wrong type, an unknown scoring_func or an
// inconsistent value is an Error that names the key.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace dsv4 {

enum class ScoringFunc { Softmax, Sigmoid, SqrtSoftplus };

struct ModelConfig {
  int vocab_size = 0;            // V
  int hidden_size = 0;           // D
  int moe_intermediate_size = 0; // F
  int num_hidden_layers = 0;     // L
  int num_hash_layers = 0;
  int num_nextn_predict_layers = 0;
  int num_attention_heads = 0;   // H
  int n_routed_experts = 0;      // E
  int n_shared_experts = 1;
  int num_experts_per_tok = 0;   // k
  ScoringFunc scoring_func = ScoringFunc::SqrtSoftplus;
  float routed_scaling_factor = 1.0f;
  float swiglu_limit = 0.0f;     // λ (0: no clamping)
  int q_lora_rank = 0;           // Q
  int head_dim = 0;              // Dh
  int qk_rope_head_dim = 0;      // R
  float rms_norm_eps = 1e-6f;
  int o_groups = 0;              // G
  int o_lora_rank = 0;           // O
  int sliding_window = 0;        // W
  std::vector<int> compress_ratios;  // L + num_nextn_predict_layers entries
  float compress_rope_theta = 0.0f;
  float rope_theta = 0.0f;
  // YaRN (rope_scaling); original_max_position_embeddings == 0 means no YaRN.
  float yarn_factor = 1.0f;
  float yarn_beta_fast = 32.0f;
  float yarn_beta_slow = 1.0f;
  int yarn_original_max_pos = 0;
  int index_n_heads = 0;         // HI
  int index_head_dim = 0;        // DI
  int index_topk = 0;            // K
  int hc_mult = 1;               // n
  int hc_sinkhorn_iters = 1;
  float hc_eps = 1e-6f;
  int max_position_embeddings = 0;
  int bos_token_id = 0;
  int eos_token_id = 1;
  bool expert_fp4 = false;       // expert_dtype == "fp4"
  bool fp8_weights = false;      // quantization_config present (fp8, e4m3, ue8m0, [128, 128])

  int nope_dim() const { return head_dim - qk_rope_head_dim; }  // N
  // Ratio of block l (l == L + i is MTP block i).
  int ratio(int l) const { return compress_ratios.at(l); }
};

// Parses and validates; `where` names the source (a path) in messages.
ModelConfig parse_config(const nlohmann::json& j, const std::string& where = "config.json");
ModelConfig load_config(const std::string& path);
nlohmann::json config_to_json(const ModelConfig& c);

}  // namespace dsv4
