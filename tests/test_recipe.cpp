// Recipes (docs/train.md): a good one parses into the curriculum; every kind of mistake is
// an Error that names the key.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "io_test_util.h"
#include "train/recipe.h"

namespace dsv4 {
namespace {

using nlohmann::json;
using testing_io::fresh_dir;

struct RecipeTest : ::testing::Test {
  std::string dir;
  json good;
  void SetUp() override {
    dir = fresh_dir("r");
    std::filesystem::create_directories(dir + "/shards");
    good = {
        {"model", std::string(DSV4_SOURCE_DIR) + "/configs/tiny.json"},
        {"tokenizer", std::string(DSV4_SOURCE_DIR) + "/data/tokenizers/byte/tokenizer.json"},
        {"data", {{"corpus", "shards"}, {"val_fraction", 0.1}}},
        {"steps", 100},
        {"tokens_per_step", 512},
        {"seq_len_stages", json::array({{{"seq_len", 64}, {"steps", 40}}, {{"seq_len", 128}}})},
        {"attention_phases", json::array({{{"phase", "dense"}, {"tokens", 512 * 50}},
                                          {{"phase", "indexer_warmup"}, {"steps", 10}},
                                          {{"phase", "sparse"}}})},
        {"lr_schedule", {{"peak", 3e-3}, {"warmup_steps", 10}, {"decay_steps", 50}}},
        {"optimizer", {{"matrices", "adamw"}, {"adamw", {{"eps", 1e-8}}}}},
        {"eval", {{"interval_steps", 25}, {"rows", 4}}},
        {"checkpoint", {{"interval_steps", 50}, {"keep", 1}}},
        {"seed", 7},
        {"threads", 2}};
  }
  Recipe parse(const json& j) { return parse_recipe(j, "r.json", dir); }
  // The error of `good` changed by `edit`.
  template <class F>
  std::string error_with(F&& edit) {
    json j = good;
    edit(j);
    return testing_io::error_of([&] { parse(j); });
  }
};

TEST_F(RecipeTest, AGoodRecipeGivesTheCurriculum) {
  const Recipe r = parse(good);
  EXPECT_EQ(r.steps, 100);
  EXPECT_EQ(r.model.hidden_size, 64);
  EXPECT_EQ(r.corpus_path, std::filesystem::path(dir + "/shards").lexically_normal().string());  // relative to the recipe
  EXPECT_EQ(r.seq_len_at(0), 64);
  EXPECT_EQ(r.seq_len_at(39), 64);
  EXPECT_EQ(r.seq_len_at(40), 128);
  EXPECT_EQ(r.rows_at(0), 8);
  EXPECT_EQ(r.rows_at(99), 4);
  EXPECT_EQ(r.phase_at(49), AttnPhase::Dense);
  EXPECT_EQ(r.phase_at(50), AttnPhase::IndexerWarmup);
  EXPECT_EQ(r.phase_at(59), AttnPhase::IndexerWarmup);
  EXPECT_EQ(r.phase_at(60), AttnPhase::Sparse);
  EXPECT_EQ(r.phase_at(99), AttnPhase::Sparse);
  EXPECT_FALSE(r.muon);
  EXPECT_FLOAT_EQ(r.optimizer.adamw.eps, 1e-8f);
  EXPECT_FLOAT_EQ(r.optimizer.schedule.peak, 3e-3f);
  EXPECT_EQ(r.optimizer.schedule.decay_steps, 50);
  EXPECT_EQ(r.eval_interval, 25);
  EXPECT_EQ(r.keep_checkpoints, 1);
  EXPECT_EQ(r.threads, 2);
  // the resolved form parses to the same recipe from anywhere
  const Recipe again = parse_recipe(r.resolved, "elsewhere.json", "/");
  EXPECT_EQ(again.corpus_path, r.corpus_path);
  EXPECT_EQ(again.resolved, r.resolved);

  json inline_model = good;
  std::ifstream in(std::string(DSV4_SOURCE_DIR) + "/configs/tiny.json");
  inline_model["model"] = json::parse(in);
  inline_model["model"]["hidden_size"] = 32;
  EXPECT_EQ(parse(inline_model).model.hidden_size, 32);
}

TEST_F(RecipeTest, MistakesNameTheKey) {
  auto expect = [&](auto edit, std::initializer_list<std::string> parts) {
    const std::string msg = error_with(edit);
    for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << msg << "\nlacks: " << p;
  };
  expect([](json& j) { j.erase("steps"); }, {"r.json", "'steps' is missing"});
  expect([](json& j) { j["stpes"] = 3; }, {"'stpes' is not a recipe key"});
  expect([](json& j) { j["tokens_per_step"] = "512"; }, {"'tokens_per_step' must be an integer"});
  expect([](json& j) { j["steps"] = 0; }, {"'steps' must lie in [1, "});
  expect([](json& j) { j["model"] = 3; }, {"'model' must be a config.json path"});
  expect([](json& j) { j["model"] = "nope.json"; }, {"'model' names", "nope.json", "cannot be read"});
  expect([](json& j) { j["model"] = json{{"vocab_size", 10}}; }, {"'model'"});
  expect([](json& j) { j["tokenizer"] = "missing/tokenizer.json"; }, {"'tokenizer' names", "does not exist"});
  expect([](json& j) { j["data"]["corpus"] = "nowhere"; }, {"'data.corpus' names", "dsv4 tokenize"});
  expect([](json& j) { j["data"]["val_fraction"] = 0.9; }, {"'data.val_fraction' must lie in [0, 0.5]"});
  expect([](json& j) { j["data"]["shuffle"] = true; }, {"'data.shuffle' is not a recipe key"});
  expect([](json& j) { j["seq_len_stages"] = json::array(); }, {"'seq_len_stages' must be a non-empty list"});
  expect([](json& j) { j["seq_len_stages"][0]["seq_len"] = 48; }, {"'seq_len_stages[0].seq_len'", "does not divide"});
  expect([](json& j) { j["seq_len_stages"][1]["seq_len"] = 2048; }, {"'seq_len_stages[1].seq_len' must lie in [2, 1024]"});
  expect([](json& j) { j["seq_len_stages"][0].erase("steps"); }, {"'seq_len_stages[0]' needs 'steps' or 'tokens'"});
  expect([](json& j) { j["seq_len_stages"][0]["steps"] = 200; }, {"'seq_len_stages[0]' ends at step 200", "100 steps"});
  expect([](json& j) { j["seq_len_stages"][0]["tokens"] = 100; }, {"gives both 'steps' and 'tokens'"});
  expect([](json& j) { j["attention_phases"][0]["tokens"] = 1000; }, {"'attention_phases[0].tokens' 1000 is not a multiple"});
  expect([](json& j) { j["attention_phases"][1]["phase"] = "sparse"; j["attention_phases"][2]["phase"] = "dense"; },
         {"'attention_phases[2].phase'", "phases go dense -> indexer_warmup -> sparse"});
  expect([](json& j) { j["attention_phases"][0]["phase"] = "topk"; }, {"'attention_phases[0].phase' is 'topk'"});
  expect([](json& j) { j["attention_phases"][1]["steps"] = 60; }, {"'attention_phases[1]' ends at step 110"});
  expect([](json& j) { j["lr_schedule"]["peak"] = 0; }, {"'lr_schedule.peak' must lie in (0, 10]"});
  expect([](json& j) { j["lr_schedule"].erase("peak"); }, {"'lr_schedule.peak' is missing"});
  expect([](json& j) { j["optimizer"]["matrices"] = "sgd"; }, {"'optimizer.matrices' is 'sgd'"});
  expect([](json& j) { j["optimizer"]["adamw"]["beta3"] = 0.9; }, {"'optimizer.adamw.beta3' is not a recipe key"});
  expect([](json& j) { j["eval"]["rows"] = 0; }, {"'eval.rows' must lie in [1, "});
  expect([](json& j) { j["data"]["val_fraction"] = 0; }, {"'eval' needs a validation split"});
  expect([](json& j) { j["checkpoint"]["interval"] = 5; }, {"'checkpoint.interval' is not a recipe key"});
  expect([](json& j) { j["seed"] = -1; }, {"'seed' must lie in [0, "});
  expect([](json& j) { j = json::array(); }, {"'(top level)' must be an object"});

  // indexer warm-up needs CSA layers
  json no_csa = good;
  std::ifstream in(std::string(DSV4_SOURCE_DIR) + "/configs/tiny.json");
  no_csa["model"] = json::parse(in);
  no_csa["model"]["compress_ratios"] = {0, 0, 128, 0, 0};
  EXPECT_ERROR_CONTAINS(parse(no_csa), "'attention_phases[1].phase' indexer_warmup needs a model with CSA layers");
}

TEST(Recipe, LoadNamesTheFile) {
  const std::string dir = fresh_dir("load");
  testing_io::write_bytes(dir + "/bad.json", "{ not json");
  EXPECT_ERROR_CONTAINS(load_recipe(dir + "/bad.json"), "bad.json", "not valid JSON");
  EXPECT_ERROR_CONTAINS(load_recipe(dir + "/none.json"), "cannot open");
}

}  // namespace
}  // namespace dsv4
