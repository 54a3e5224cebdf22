// config.json: the fixtures parse, config_to_json round-trips, and each bad value is an
// error that names its key.
#include <gtest/gtest.h>

#include <functional>
#include <nlohmann/json.hpp>

#include "io/config.h"
#include "io_test_util.h"

using namespace dsv4;
using namespace dsv4::testing_io;
using nlohmann::json;

namespace {

const std::string kFixtures = DSV4_FIXTURES;

json fixture_json(const std::string& name) {
  std::ifstream in(kFixtures + "/" + name + "/config.json");
  return json::parse(in);
}

// Every field compared through the canonical JSON form.
void expect_same(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(config_to_json(a).dump(), config_to_json(b).dump());
}

}  // namespace

TEST(Config, LoadsTheTinyFp32Fixture) {
  ModelConfig c = load_config(kFixtures + "/tiny-fp32/config.json");
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.hidden_size, 128);
  EXPECT_EQ(c.num_hidden_layers, 5);
  EXPECT_EQ(c.num_hash_layers, 1);
  EXPECT_EQ(c.num_nextn_predict_layers, 1);
  EXPECT_EQ(c.scoring_func, ScoringFunc::SqrtSoftplus);
  EXPECT_EQ(c.routed_scaling_factor, 1.5f);
  EXPECT_EQ(c.swiglu_limit, 1.0f);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.nope_dim(), 64);
  EXPECT_EQ(c.compress_ratios, (std::vector<int>{0, 4, 16, 4, 16, 0}));
  EXPECT_EQ(c.ratio(5), 0);
  EXPECT_EQ(c.yarn_factor, 4.0f);
  EXPECT_EQ(c.yarn_original_max_pos, 64);
  EXPECT_EQ(c.rms_norm_eps, 1e-6f);
  EXPECT_EQ(c.hc_mult, 4);
  EXPECT_FALSE(c.fp8_weights);
  EXPECT_FALSE(c.expert_fp4);
}

TEST(Config, LoadsTheTinyFp8Fixture) {
  ModelConfig c = load_config(kFixtures + "/tiny-fp8/config.json");
  EXPECT_EQ(c.head_dim, 192);
  EXPECT_EQ(c.num_hash_layers, 2);
  EXPECT_EQ(c.routed_scaling_factor, 2.5f);
  EXPECT_TRUE(c.fp8_weights);
  EXPECT_TRUE(c.expert_fp4);
  EXPECT_EQ(c.yarn_factor, 8.0f);
}

TEST(Config, ToJsonRoundTripsAndKeepsEveryFixtureKey) {
  for (const char* name : {"tiny-fp32", "tiny-fp8"}) {
    SCOPED_TRACE(name);
    json original = fixture_json(name);
    ModelConfig c = parse_config(original);
    json written = config_to_json(c);
    expect_same(parse_config(written), c);
    for (const auto& [key, value] : original.items()) {
      EXPECT_TRUE(written.contains(key)) << "config_to_json drops '" << key << "'";
    }
    // Numbers come back exactly as the fixture writes them (no float noise like 9.99e-07).
    EXPECT_EQ(written["rms_norm_eps"], original["rms_norm_eps"]);
    EXPECT_EQ(written["routed_scaling_factor"], original["routed_scaling_factor"]);
    EXPECT_EQ(written["compress_ratios"], original["compress_ratios"]);
    EXPECT_EQ(written["rope_scaling"]["original_max_position_embeddings"],
              original["rope_scaling"]["original_max_position_embeddings"]);
  }
}

TEST(Config, OptionalKeysMayBeAbsent) {
  json j = fixture_json("tiny-fp32");
  for (const char* key : {"rope_scaling", "num_key_value_heads", "n_shared_experts",
                          "architectures", "model_type", "torch_dtype", "norm_topk_prob",
                          "topk_method", "tie_word_embeddings", "hidden_act"}) {
    j.erase(key);
  }
  j["some_future_key"] = {1, 2};
  ModelConfig c = parse_config(j);
  EXPECT_EQ(c.yarn_original_max_pos, 0);
  EXPECT_EQ(c.n_shared_experts, 1);
  json written = config_to_json(c);
  EXPECT_TRUE(written["rope_scaling"].is_null());
  expect_same(parse_config(written), c);
}

TEST(Config, RopeScalingWithoutOriginalLengthMeansNoYarn) {
  json j = fixture_json("tiny-fp32");
  j["rope_scaling"].erase("original_max_position_embeddings");
  EXPECT_EQ(parse_config(j).yarn_original_max_pos, 0);
  j["rope_scaling"]["original_max_position_embeddings"] = 0;
  EXPECT_EQ(parse_config(j).yarn_original_max_pos, 0);
  j["rope_scaling"] = nullptr;
  EXPECT_EQ(parse_config(j).yarn_original_max_pos, 0);
}

TEST(Config, IndexerKeysAreFreeWithoutCsaLayers) {
  json j = fixture_json("tiny-fp32");
  j["compress_ratios"] = {0, 16, 16, 0, 128, 0};
  j["index_head_dim"] = 96;  // not a power of two: fine, no layer has an indexer
  EXPECT_NO_THROW(parse_config(j));
}

TEST(Config, TheMessageNamesTheKeyAndTheValues) {
  json j = fixture_json("tiny-fp32");
  j["o_groups"] = 3;
  EXPECT_EQ(error_of([&] { parse_config(j); }),
            "[config.json] key 'o_groups': num_attention_heads (4) must be divisible by o_groups (3)");
}

TEST(Config, EveryRequiredKeyIsNamedWhenMissing) {
  const char* required[] = {
      "vocab_size", "hidden_size", "moe_intermediate_size", "num_hidden_layers",
      "num_hash_layers", "num_nextn_predict_layers", "num_attention_heads", "n_routed_experts",
      "num_experts_per_tok", "scoring_func", "routed_scaling_factor", "swiglu_limit",
      "q_lora_rank", "head_dim", "qk_rope_head_dim", "rms_norm_eps", "o_groups", "o_lora_rank",
      "sliding_window", "compress_ratios", "compress_rope_theta", "rope_theta", "index_n_heads",
      "index_head_dim", "index_topk", "hc_mult", "hc_sinkhorn_iters", "hc_eps",
      "max_position_embeddings", "bos_token_id", "eos_token_id"};
  for (const char* key : required) {
    json j = fixture_json("tiny-fp32");
    j.erase(key);
    EXPECT_ERROR_CONTAINS(parse_config(j, "x/config.json"), "[x/config.json]",
                          std::string("key '") + key + "': missing");
  }
}

TEST(Config, RejectsBadValues) {
  struct Case {
    const char* what;
    std::function<void(json&)> edit;
    std::vector<std::string> message;
  };
  const Case cases[] = {
      {"int as string", [](json& j) { j["hidden_size"] = "128"; },
       {"key 'hidden_size'", "must be an integer", "\"128\""}},
      {"fractional int", [](json& j) { j["head_dim"] = 128.5; },
       {"key 'head_dim'", "must be an integer"}},
      {"bool as int", [](json& j) { j["hc_mult"] = true; }, {"key 'hc_mult'", "integer"}},
      {"float as string", [](json& j) { j["rms_norm_eps"] = "1e-6"; },
       {"key 'rms_norm_eps'", "must be a number"}},
      {"string as number", [](json& j) { j["scoring_func"] = 3; },
       {"key 'scoring_func'", "must be a string"}},
      {"ratios not a list", [](json& j) { j["compress_ratios"] = 4; },
       {"key 'compress_ratios'", "list of integers"}},
      {"int too large", [](json& j) { j["vocab_size"] = 1LL << 40; },
       {"key 'vocab_size'", "too large"}},
      {"scoring_func", [](json& j) { j["scoring_func"] = "relu"; },
       {"key 'scoring_func'", "'relu'", "softmax, sigmoid, sqrtsoftplus"}},
      {"ratios length", [](json& j) { j["compress_ratios"] = {0, 4, 16, 4, 16}; },
       {"key 'compress_ratios'", "has 5 entries", "expected", "6"}},
      {"negative ratio", [](json& j) { j["compress_ratios"][2] = -1; },
       {"key 'compress_ratios'", "entry 2 is -1"}},
      {"odd rope dim", [](json& j) { j["qk_rope_head_dim"] = 63; },
       {"key 'qk_rope_head_dim'", "even"}},
      {"rope dim too big", [](json& j) { j["qk_rope_head_dim"] = 128; },
       {"key 'qk_rope_head_dim'", "< head_dim (128)"}},
      {"nope not /64", [](json& j) { j["head_dim"] = 160; },
       {"key 'head_dim'", "96", "multiple of 64"}},
      {"index dim not pow2", [](json& j) { j["index_head_dim"] = 96; },
       {"key 'index_head_dim'", "power of two", "96"}},
      {"index dim not /32", [](json& j) { j["index_head_dim"] = 16; },
       {"key 'index_head_dim'", "multiple of 32"}},
      {"index heads zero", [](json& j) { j["index_n_heads"] = 0; },
       {"key 'index_n_heads'", "must be > 0"}},
      {"k > E", [](json& j) { j["num_experts_per_tok"] = 9; },
       {"key 'num_experts_per_tok'", "(9)", "n_routed_experts (8)"}},
      {"kv heads", [](json& j) { j["num_key_value_heads"] = 4; },
       {"key 'num_key_value_heads'", "must be 1"}},
      {"shared experts", [](json& j) { j["n_shared_experts"] = 2; },
       {"key 'n_shared_experts'", "must be 1"}},
      {"hc_mult zero", [](json& j) { j["hc_mult"] = 0; }, {"key 'hc_mult'", "must be > 0"}},
      {"negative size", [](json& j) { j["hidden_size"] = -128; },
       {"key 'hidden_size'", "must be > 0", "-128"}},
      {"zero layers", [](json& j) { j["num_hidden_layers"] = 0; },
       {"key 'num_hidden_layers'", "must be > 0"}},
      {"zero window", [](json& j) { j["sliding_window"] = 0; }, {"key 'sliding_window'"}},
      {"hash layers", [](json& j) { j["num_hash_layers"] = 6; },
       {"key 'num_hash_layers'", "num_hidden_layers (5)"}},
      {"negative mtp", [](json& j) { j["num_nextn_predict_layers"] = -1; },
       {"key 'num_nextn_predict_layers'"}},
      {"eps zero", [](json& j) { j["rms_norm_eps"] = 0; }, {"key 'rms_norm_eps'", "> 0"}},
      {"negative limit", [](json& j) { j["swiglu_limit"] = -1; }, {"key 'swiglu_limit'"}},
      {"eos out of vocab", [](json& j) { j["eos_token_id"] = 512; },
       {"key 'eos_token_id'", "vocab_size"}},
      {"rope_scaling type", [](json& j) { j["rope_scaling"] = 4; },
       {"key 'rope_scaling'", "must be an object"}},
      {"rope_scaling kind", [](json& j) { j["rope_scaling"]["type"] = "linear"; },
       {"key 'rope_scaling.type'", "'linear'"}},
      {"yarn factor", [](json& j) { j["rope_scaling"].erase("factor"); },
       {"key 'rope_scaling.factor': missing"}},
      {"yarn factor value", [](json& j) { j["rope_scaling"]["factor"] = 0; },
       {"key 'rope_scaling.factor'", "> 0"}},
      {"quant method", [](json& j) { j["quantization_config"] = {{"quant_method", "int8"}}; },
       {"key 'quantization_config.quant_method'", "'int8'", "'fp8'"}},
      {"quant fmt",
       [](json& j) {
         j["quantization_config"] = {{"quant_method", "fp8"}, {"fmt", "e5m2"},
                                     {"scale_fmt", "ue8m0"}, {"weight_block_size", {128, 128}}};
       },
       {"key 'quantization_config.fmt'", "'e5m2'"}},
      {"quant scale fmt",
       [](json& j) {
         j["quantization_config"] = {{"quant_method", "fp8"}, {"fmt", "e4m3"},
                                     {"scale_fmt", "float"}, {"weight_block_size", {128, 128}}};
       },
       {"key 'quantization_config.scale_fmt'"}},
      {"quant block",
       [](json& j) {
         j["quantization_config"] = {{"quant_method", "fp8"}, {"fmt", "e4m3"},
                                     {"scale_fmt", "ue8m0"}, {"weight_block_size", {64, 64}}};
       },
       {"key 'quantization_config.weight_block_size'", "[128, 128]", "[64,64]"}},
      {"quant missing block",
       [](json& j) {
         j["quantization_config"] = {{"quant_method", "fp8"}, {"fmt", "e4m3"},
                                     {"scale_fmt", "ue8m0"}};
       },
       {"key 'quantization_config.weight_block_size': missing"}},
      {"quant not object", [](json& j) { j["quantization_config"] = "fp8"; },
       {"key 'quantization_config'", "object"}},
      {"expert dtype", [](json& j) { j["expert_dtype"] = "fp8"; },
       {"key 'expert_dtype'", "'fp8'"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    json j = fixture_json("tiny-fp32");
    c.edit(j);
    std::string msg = error_of([&] { parse_config(j); });
    EXPECT_EQ(msg.rfind("[config.json] ", 0), 0u) << msg;
    for (const std::string& part : c.message) {
      EXPECT_NE(msg.find(part), std::string::npos) << "\"" << msg << "\" lacks \"" << part << "\"";
    }
  }
}

TEST(Config, RejectsANonObjectAndBadFiles) {
  EXPECT_ERROR_CONTAINS(parse_config(json::array()), "must be a JSON object");
  EXPECT_ERROR_CONTAINS(load_config("/nonexistent/config.json"), "/nonexistent/config.json",
                        "cannot open");
  std::string dir = fresh_dir("bad");
  write_bytes(dir + "/config.json", "{\"vocab_size\": 12,");
  EXPECT_ERROR_CONTAINS(load_config(dir + "/config.json"), dir + "/config.json", "not valid JSON");
}
