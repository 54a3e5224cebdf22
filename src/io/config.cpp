#include "io/config.h"

#include <charconv>
#include <cstdlib>
#include <fstream>
#include <climits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace dsv4 {

namespace {

using nlohmann::json;

// Reads keys of one JSON object; every error names the key (with its parent's prefix).
class Reader {
 public:
  Reader(const json& j, std::string where, std::string prefix = "")
      : j_(j), where_(std::move(where)), prefix_(std::move(prefix)) {}

  [[noreturn]] void fail(const std::string& key, const std::string& msg) const {
    throw Error(where_, str("key '", prefix_, key, "': ", msg));
  }
  bool has(const std::string& key) const { return j_.contains(key) && !j_[key].is_null(); }
  const json& at(const std::string& key) const {
    if (!has(key)) fail(key, "missing");
    return j_[key];
  }

  int get_int(const std::string& key) const { return to_int(key, at(key)); }
  int get_int(const std::string& key, int fallback) const {
    return has(key) ? get_int(key) : fallback;
  }
  float get_float(const std::string& key) const {
    const json& v = at(key);
    if (!v.is_number()) fail(key, str("must be a number, found ", v.dump()));
    return v.get<float>();
  }
  float get_float(const std::string& key, float fallback) const {
    return has(key) ? get_float(key) : fallback;
  }
  std::string get_string(const std::string& key) const {
    const json& v = at(key);
    if (!v.is_string()) fail(key, str("must be a string, found ", v.dump()));
    return v.get<std::string>();
  }
  std::vector<int> get_int_list(const std::string& key) const {
    const json& v = at(key);
    if (!v.is_array()) fail(key, str("must be a list of integers, found ", v.dump()));
    std::vector<int> out;
    for (const json& x : v) out.push_back(to_int(key, x));
    return out;
  }
  Reader sub(const std::string& key) const {
    const json& v = at(key);
    if (!v.is_object()) fail(key, str("must be an object, found ", v.dump()));
    return Reader(v, where_, prefix_ + key + ".");
  }

 private:
  int to_int(const std::string& key, const json& v) const {
    if (!v.is_number_integer()) fail(key, str("must be an integer, found ", v.dump()));
    if (v.is_number_unsigned() ? v.get<uint64_t>() > static_cast<uint64_t>(INT_MAX)
                               : v.get<int64_t>() > INT_MAX) {
      fail(key, str("value ", v.dump(), " is too large"));
    }
    if (!v.is_number_unsigned() && v.get<int64_t>() < INT_MIN) {
      fail(key, str("value ", v.dump(), " is too small"));
    }
    return v.get<int>();
  }

  const json& j_;
  std::string where_;
  std::string prefix_;
};

bool is_pow2(int x) { return x > 0 && (x & (x - 1)) == 0; }

// The shortest decimal that reads back as the same float, as a double: 1e-6f is written
// "1e-06", not "9.999999974752427e-07".
double shortest(float f) {
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), f);
  *res.ptr = '\0';
  return std::strtod(buf, nullptr);
}

const char* scoring_name(ScoringFunc s) {
  switch (s) {
    case ScoringFunc::Softmax: return "softmax";
    case ScoringFunc::Sigmoid: return "sigmoid";
    case ScoringFunc::SqrtSoftplus: return "sqrtsoftplus";
  }
  return "?";
}

void read_rope_scaling(const Reader& r, ModelConfig& c) {
  if (!r.has("rope_scaling")) return;
  Reader rs = r.sub("rope_scaling");
  c.yarn_original_max_pos = rs.get_int("original_max_position_embeddings", 0);
  if (c.yarn_original_max_pos < 0) {
    rs.fail("original_max_position_embeddings", "must be >= 0 (0: no YaRN)");
  }
  if (c.yarn_original_max_pos == 0) return;  // no YaRN
  for (const char* type_key : {"type", "rope_type"}) {
    if (rs.has(type_key) && rs.get_string(type_key) != "yarn") {
      rs.fail(type_key, str("'", rs.get_string(type_key), "' is not supported (only 'yarn')"));
    }
  }
  c.yarn_factor = rs.get_float("factor");
  c.yarn_beta_fast = rs.get_float("beta_fast", c.yarn_beta_fast);
  c.yarn_beta_slow = rs.get_float("beta_slow", c.yarn_beta_slow);
  if (!(c.yarn_factor > 0)) rs.fail("factor", str("must be > 0, found ", c.yarn_factor));
  if (!(c.yarn_beta_fast > 0)) rs.fail("beta_fast", str("must be > 0, found ", c.yarn_beta_fast));
  if (!(c.yarn_beta_slow > 0)) rs.fail("beta_slow", str("must be > 0, found ", c.yarn_beta_slow));
}

void read_quantization(const Reader& r, ModelConfig& c) {
  if (!r.has("quantization_config")) return;
  Reader q = r.sub("quantization_config");
  const std::pair<const char*, const char*> expected[] = {
      {"quant_method", "fp8"}, {"fmt", "e4m3"}, {"scale_fmt", "ue8m0"}};
  for (const auto& [key, want] : expected) {
    std::string v = q.get_string(key);
    if (v != want) q.fail(key, str("'", v, "' is not supported (only '", want, "')"));
  }
  std::vector<int> block = q.get_int_list("weight_block_size");
  if (block != std::vector<int>{128, 128}) {
    q.fail("weight_block_size", str("must be [128, 128], found ",
                                    q.at("weight_block_size").dump()));
  }
  c.fp8_weights = true;
}

void validate(const Reader& r, const ModelConfig& c) {
  auto positive = [&](const char* key, int v) {
    if (v <= 0) r.fail(key, str("must be > 0, found ", v));
  };
  positive("vocab_size", c.vocab_size);
  positive("hidden_size", c.hidden_size);
  positive("moe_intermediate_size", c.moe_intermediate_size);
  positive("num_hidden_layers", c.num_hidden_layers);
  positive("num_attention_heads", c.num_attention_heads);
  positive("n_routed_experts", c.n_routed_experts);
  positive("num_experts_per_tok", c.num_experts_per_tok);
  positive("q_lora_rank", c.q_lora_rank);
  positive("head_dim", c.head_dim);
  positive("qk_rope_head_dim", c.qk_rope_head_dim);
  positive("o_groups", c.o_groups);
  positive("o_lora_rank", c.o_lora_rank);
  positive("sliding_window", c.sliding_window);
  positive("hc_mult", c.hc_mult);
  positive("hc_sinkhorn_iters", c.hc_sinkhorn_iters);
  positive("max_position_embeddings", c.max_position_embeddings);
  if (c.num_nextn_predict_layers < 0) {
    r.fail("num_nextn_predict_layers", str("must be >= 0, found ", c.num_nextn_predict_layers));
  }
  if (c.num_hash_layers < 0 || c.num_hash_layers > c.num_hidden_layers) {
    r.fail("num_hash_layers", str("must be in [0, num_hidden_layers (", c.num_hidden_layers,
                                  ")], found ", c.num_hash_layers));
  }
  if (c.num_experts_per_tok > c.n_routed_experts) {
    r.fail("num_experts_per_tok", str("num_experts_per_tok (", c.num_experts_per_tok,
                                      ") must be <= n_routed_experts (", c.n_routed_experts, ")"));
  }
  if (c.num_attention_heads % c.o_groups != 0) {
    r.fail("o_groups", str("num_attention_heads (", c.num_attention_heads,
                           ") must be divisible by o_groups (", c.o_groups, ")"));
  }
  if (c.qk_rope_head_dim % 2 != 0 || c.qk_rope_head_dim >= c.head_dim) {
    r.fail("qk_rope_head_dim", str("must be even and < head_dim (", c.head_dim, "), found ",
                                   c.qk_rope_head_dim));
  }
  if (c.nope_dim() % 64 != 0) {
    r.fail("head_dim", str("head_dim - qk_rope_head_dim (", c.head_dim, " - ",
                           c.qk_rope_head_dim, " = ", c.nope_dim(),
                           ") must be a multiple of 64 (the FP8 simulation's blocks)"));
  }
  const size_t want_ratios =
      static_cast<size_t>(c.num_hidden_layers) + static_cast<size_t>(c.num_nextn_predict_layers);
  if (c.compress_ratios.size() != want_ratios) {
    r.fail("compress_ratios", str("has ", c.compress_ratios.size(), " entries, expected ",
                                  "num_hidden_layers + num_nextn_predict_layers = ", want_ratios));
  }
  bool any_csa = false;
  for (size_t l = 0; l < c.compress_ratios.size(); ++l) {
    if (c.compress_ratios[l] < 0) {
      r.fail("compress_ratios", str("entry ", l, " is ", c.compress_ratios[l], ", must be >= 0"));
    }
    any_csa = any_csa || c.compress_ratios[l] == 4;
  }
  if (any_csa) {
    // Only CSA layers (ratio 4) have an indexer; otherwise these keys are unused.
    positive("index_n_heads", c.index_n_heads);
    positive("index_topk", c.index_topk);
    if (!is_pow2(c.index_head_dim) || c.index_head_dim % 32 != 0) {
      r.fail("index_head_dim", str("must be a power of two and a multiple of 32 (Hadamard ",
                                   "rotation, FP4 blocks of 32), found ", c.index_head_dim));
    }
    if (c.index_head_dim < c.qk_rope_head_dim) {
      r.fail("index_head_dim", str("must be >= qk_rope_head_dim (", c.qk_rope_head_dim,
                                   "), found ", c.index_head_dim));
    }
  }
  auto positive_f = [&](const char* key, float v) {
    if (!(v > 0)) r.fail(key, str("must be > 0, found ", v));
  };
  positive_f("routed_scaling_factor", c.routed_scaling_factor);
  positive_f("rms_norm_eps", c.rms_norm_eps);
  positive_f("rope_theta", c.rope_theta);
  positive_f("compress_rope_theta", c.compress_rope_theta);
  if (!(c.swiglu_limit >= 0)) r.fail("swiglu_limit", str("must be >= 0, found ", c.swiglu_limit));
  if (!(c.hc_eps >= 0)) r.fail("hc_eps", str("must be >= 0, found ", c.hc_eps));
  if (c.bos_token_id < 0 || c.bos_token_id >= c.vocab_size) {
    r.fail("bos_token_id", str("must be in [0, vocab_size), found ", c.bos_token_id));
  }
  if (c.eos_token_id < 0 || c.eos_token_id >= c.vocab_size) {
    r.fail("eos_token_id", str("must be in [0, vocab_size), found ", c.eos_token_id));
  }
}

}  // namespace

ModelConfig parse_config(const json& j, const std::string& where) {
  DSV4_CHECK(j.is_object(), where, "config must be a JSON object, found ", j.type_name());
  Reader r(j, where);
  ModelConfig c;
  c.vocab_size = r.get_int("vocab_size");
  c.hidden_size = r.get_int("hidden_size");
  c.moe_intermediate_size = r.get_int("moe_intermediate_size");
  c.num_hidden_layers = r.get_int("num_hidden_layers");
  c.num_hash_layers = r.get_int("num_hash_layers");
  c.num_nextn_predict_layers = r.get_int("num_nextn_predict_layers");
  c.num_attention_heads = r.get_int("num_attention_heads");
  if (r.has("num_key_value_heads") && r.get_int("num_key_value_heads") != 1) {
    r.fail("num_key_value_heads", str("must be 1 (one shared KV head), found ",
                                      r.get_int("num_key_value_heads")));
  }
  c.n_routed_experts = r.get_int("n_routed_experts");
  c.n_shared_experts = r.get_int("n_shared_experts", 1);
  if (c.n_shared_experts != 1) {
    r.fail("n_shared_experts", str("must be 1, found ", c.n_shared_experts));
  }
  c.num_experts_per_tok = r.get_int("num_experts_per_tok");
  const std::string scoring = r.get_string("scoring_func");
  if (scoring == "softmax") c.scoring_func = ScoringFunc::Softmax;
  else if (scoring == "sigmoid") c.scoring_func = ScoringFunc::Sigmoid;
  else if (scoring == "sqrtsoftplus") c.scoring_func = ScoringFunc::SqrtSoftplus;
  else r.fail("scoring_func", str("'", scoring, "' is not one of softmax, sigmoid, sqrtsoftplus"));
  c.routed_scaling_factor = r.get_float("routed_scaling_factor");
  c.swiglu_limit = r.get_float("swiglu_limit");
  c.q_lora_rank = r.get_int("q_lora_rank");
  c.head_dim = r.get_int("head_dim");
  c.qk_rope_head_dim = r.get_int("qk_rope_head_dim");
  c.rms_norm_eps = r.get_float("rms_norm_eps");
  c.o_groups = r.get_int("o_groups");
  c.o_lora_rank = r.get_int("o_lora_rank");
  c.sliding_window = r.get_int("sliding_window");
  c.compress_ratios = r.get_int_list("compress_ratios");
  c.compress_rope_theta = r.get_float("compress_rope_theta");
  c.rope_theta = r.get_float("rope_theta");
  read_rope_scaling(r, c);
  c.index_n_heads = r.get_int("index_n_heads");
  c.index_head_dim = r.get_int("index_head_dim");
  c.index_topk = r.get_int("index_topk");
  c.hc_mult = r.get_int("hc_mult");
  c.hc_sinkhorn_iters = r.get_int("hc_sinkhorn_iters");
  c.hc_eps = r.get_float("hc_eps");
  c.max_position_embeddings = r.get_int("max_position_embeddings");
  c.bos_token_id = r.get_int("bos_token_id");
  c.eos_token_id = r.get_int("eos_token_id");
  if (r.has("expert_dtype")) {
    const std::string e = r.get_string("expert_dtype");
    if (e != "fp4") r.fail("expert_dtype", str("'", e, "' is not supported (only 'fp4' or absent)"));
    c.expert_fp4 = true;
  }
  read_quantization(r, c);
  validate(r, c);
  return c;
}

ModelConfig load_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  DSV4_CHECK(in.good(), path, "cannot open the config file");
  std::stringstream ss;
  ss << in.rdbuf();
  json j;
  try {
    j = json::parse(ss.str());
  } catch (const json::exception& e) {
    throw Error(path, str("not valid JSON: ", e.what()));
  }
  return parse_config(j, path);
}

json config_to_json(const ModelConfig& c) {
  json j = json::object();
  j["architectures"] = {"DeepseekV4ForCausalLM"};
  j["model_type"] = "deepseek_v4";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["moe_intermediate_size"] = c.moe_intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_hash_layers"] = c.num_hash_layers;
  j["num_nextn_predict_layers"] = c.num_nextn_predict_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = 1;
  j["n_routed_experts"] = c.n_routed_experts;
  j["n_shared_experts"] = c.n_shared_experts;
  j["num_experts_per_tok"] = c.num_experts_per_tok;
  j["scoring_func"] = scoring_name(c.scoring_func);
  j["routed_scaling_factor"] = shortest(c.routed_scaling_factor);
  j["norm_topk_prob"] = true;  // changes nothing (checkpoint.md); kept for other tools
  j["topk_method"] = "noaux_tc";
  j["swiglu_limit"] = shortest(c.swiglu_limit);
  j["q_lora_rank"] = c.q_lora_rank;
  j["head_dim"] = c.head_dim;
  j["qk_rope_head_dim"] = c.qk_rope_head_dim;
  j["rms_norm_eps"] = shortest(c.rms_norm_eps);
  j["o_groups"] = c.o_groups;
  j["o_lora_rank"] = c.o_lora_rank;
  j["sliding_window"] = c.sliding_window;
  j["compress_ratios"] = c.compress_ratios;
  j["compress_rope_theta"] = shortest(c.compress_rope_theta);
  j["rope_theta"] = shortest(c.rope_theta);
  if (c.yarn_original_max_pos > 0) {
    j["rope_scaling"] = {{"type", "yarn"},
                         {"factor", shortest(c.yarn_factor)},
                         {"beta_fast", shortest(c.yarn_beta_fast)},
                         {"beta_slow", shortest(c.yarn_beta_slow)},
                         {"original_max_position_embeddings", c.yarn_original_max_pos}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["index_n_heads"] = c.index_n_heads;
  j["index_head_dim"] = c.index_head_dim;
  j["index_topk"] = c.index_topk;
  j["hc_mult"] = c.hc_mult;
  j["hc_sinkhorn_iters"] = c.hc_sinkhorn_iters;
  j["hc_eps"] = shortest(c.hc_eps);
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["bos_token_id"] = c.bos_token_id;
  j["eos_token_id"] = c.eos_token_id;
  j["tie_word_embeddings"] = false;
  j["hidden_act"] = "silu";
  j["torch_dtype"] = "float32";  // dsv4 writes every tensor as F32
  if (c.expert_fp4) j["expert_dtype"] = "fp4";
  if (c.fp8_weights) {
    j["quantization_config"] = {{"activation_scheme", "dynamic"},
                                {"fmt", "e4m3"},
                                {"quant_method", "fp8"},
                                {"scale_fmt", "ue8m0"},
                                {"weight_block_size", {128, 128}}};
  }
  return j;
}

}  // namespace dsv4
