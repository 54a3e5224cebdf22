// The trainer (docs/train.md) on a micro model: a stopped and resumed run repeats the
// uninterrupted one bit for bit, checkpoints are release-layout models, and a run folder
// is protected against mix-ups.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "io_test_util.h"
#include "model/model.h"
#include "train/run_checkpoint.h"
#include "train/trainer.h"
#include "train_test_util.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing_io::fresh_dir;

std::vector<json> metrics(const std::string& run) {
  std::ifstream in(run + "/metrics.jsonl");
  std::vector<json> out;
  std::string line;
  while (std::getline(in, line)) {
    json j = json::parse(line);
    j.erase("elapsed_s");  // wall time is the one thing allowed to differ
    out.push_back(j);
  }
  return out;
}

TrainRunOptions run_opts(const std::string& dir, bool resume = false, int64_t stop_after = -1) {
  TrainRunOptions o;
  o.run_dir = dir;
  o.resume = resume;
  o.stop_after = stop_after;
  o.progress = false;
  return o;
}

struct TrainerTest : ::testing::Test {
  std::string dir, corpus;
  void SetUp() override {
    dir = fresh_dir("t");
    corpus = testing_train::make_corpus(dir);
  }
  Recipe recipe() { return parse_recipe(testing_train::micro_recipe(corpus), "micro.json", dir); }
};

TEST_F(TrainerTest, ResumedRunsRepeatTheUninterruptedRunBitForBit) {
  const Recipe r = recipe();
  ASSERT_EQ(train(r, run_opts(dir + "/full")), TrainOutcome::Finished);
  const std::vector<json> want = metrics(dir + "/full");
  // every step, 3 evaluations (4, 8, 10) and 5 monitor records (2, 4, ..., 10)
  int steps = 0, evals = 0, monitors = 0;
  for (const json& j : want) {
    steps += j.contains("loss");
    evals += j.contains("val_loss");
    monitors += j.contains("mhc_gain_fwd");
  }
  EXPECT_EQ(steps, 10);
  EXPECT_EQ(evals, 3);
  EXPECT_EQ(monitors, 5);
  EXPECT_EQ(want.front().at("phase"), "dense");
  EXPECT_EQ(want.back().at("step"), 10);

  // Stopped in each phase and stage (after steps 2, 5 and 7), resumed each time.
  const std::string split = dir + "/split";
  EXPECT_EQ(train(r, run_opts(split, false, 2)), TrainOutcome::Interrupted);
  EXPECT_EQ(train(r, run_opts(split, true, 5)), TrainOutcome::Interrupted);
  EXPECT_EQ(train(r, run_opts(split, true, 7)), TrainOutcome::Interrupted);
  EXPECT_EQ(train(r, run_opts(split, true)), TrainOutcome::Finished);
  const std::vector<json> got = metrics(split);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(got[i], want[i]) << "record " << i;

  // The final model is the same to the bit.
  ModelConfig c1, c2;
  const Params a = load_params(dir + "/full/latest", &c1), b = load_params(split + "/latest", &c2);
  for (const auto& [name, t] : a.f32) EXPECT_EQ(t.data, b.at(name).data) << name;

  // A resumed finished run has nothing to do and changes nothing.
  EXPECT_EQ(train(r, run_opts(split, true)), TrainOutcome::Finished);
  EXPECT_EQ(metrics(split), want);
}

TEST_F(TrainerTest, ResumingFromAnOlderCheckpointDropsTheLaterMetrics) {
  const Recipe r = recipe();
  const std::string run = dir + "/run";
  ASSERT_EQ(train(r, run_opts(run, false, 5)), TrainOutcome::Interrupted);  // checkpoints 3 and 5
  // as if killed right after step 5 was logged but before its checkpoint was complete
  fs::remove_all(run + "/ckpt-5");
  fs::create_directories(run + "/.staging-ckpt-5");
  { std::ofstream(run + "/metrics.jsonl", std::ios::app) << "{\"step\": 6, \"tok"; }  // a torn line
  ASSERT_EQ(train(r, run_opts(run, true)), TrainOutcome::Finished);
  EXPECT_FALSE(fs::exists(run + "/.staging-ckpt-5"));
  ASSERT_EQ(train(r, run_opts(dir + "/full")), TrainOutcome::Finished);
  EXPECT_EQ(metrics(run), metrics(dir + "/full"));
}

TEST_F(TrainerTest, CheckpointsAreReleaseLayoutModelsPlusTrainingState) {
  const Recipe r = recipe();
  const std::string run = dir + "/run";
  ASSERT_EQ(train(r, run_opts(run)), TrainOutcome::Finished);
  // keep = 2: ckpt-9 and ckpt-10 remain; latest is a symlink to the newest
  EXPECT_FALSE(fs::exists(run + "/ckpt-3"));
  EXPECT_FALSE(fs::exists(run + "/ckpt-6"));
  EXPECT_TRUE(fs::exists(run + "/ckpt-9/trainer_state.json"));
  ASSERT_TRUE(fs::is_symlink(run + "/latest"));
  EXPECT_EQ(fs::read_symlink(run + "/latest").string(), "ckpt-10");
  EXPECT_EQ(newest_checkpoint(run), 10);

  // the model loads as any model folder does, and runs
  const Model m = Model::load(run + "/latest");
  EXPECT_EQ(m.config().hidden_size, 32);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "generation_config.json", "config.json"})
    EXPECT_TRUE(fs::exists(run + "/latest/" + f)) << f;
  SequenceState st = m.new_state();
  const ForwardOut out = m.forward({Chunk{&st, {0, 70, 80}}});
  EXPECT_EQ(out.logits.shape, (Shape{3, 272}));

  // the training state: step, tokens, loader position, and the moments of both optimizers
  const LoadedCheckpoint ck = load_run_checkpoint(run + "/latest");
  EXPECT_EQ(ck.trainer_state.at("step"), 10);
  EXPECT_EQ(ck.trainer_state.at("tokens"), 1280);
  EXPECT_TRUE(ck.trainer_state.at("loader").contains("cursor"));
  EXPECT_TRUE(ck.optimizer_state.count("main.m.layers.1.attn.wq_a.weight"));
  EXPECT_TRUE(ck.optimizer_state.count("main.v.embed.weight"));
  EXPECT_TRUE(ck.optimizer_state.count("indexer.m.layers.0.attn.indexer.wq_b.weight"));
  EXPECT_EQ(ck.optimizer_state.at("main.step")[0], 8.0f);     // 10 steps less the 2 of indexer warm-up
  EXPECT_EQ(ck.optimizer_state.at("indexer.step")[0], 6.0f);  // warm-up and sparse steps
  // gate biases moved (aux-loss-free balancing) and are part of the model
  const Params init = init_params(r.model, r.seed);
  EXPECT_NE(ck.params.at("layers.1.ffn.gate.bias").data, init.at("layers.1.ffn.gate.bias").data);
}

TEST_F(TrainerTest, RunFoldersAreProtectedAgainstMixUps) {
  const Recipe r = recipe();
  const std::string run = dir + "/run";
  ASSERT_EQ(train(r, run_opts(run, false, 3)), TrainOutcome::Interrupted);
  EXPECT_ERROR_CONTAINS(train(r, run_opts(run)), "already holds a run: pass --resume");
  json changed = testing_train::micro_recipe(corpus);
  changed["lr_schedule"]["peak"] = 1e-3;
  EXPECT_ERROR_CONTAINS(train(parse_recipe(changed, "other.json", dir), run_opts(run, true)),
                        "recipe differs", "'lr_schedule.peak'");
  {
    const RunLock busy(run);  // as if another trainer were running there
    EXPECT_ERROR_CONTAINS(train(r, run_opts(run, true)), "another `dsv4 train` is running");
  }
  // --resume where there is no run yet starts one
  EXPECT_EQ(train(r, run_opts(dir + "/new", true, 1)), TrainOutcome::Interrupted);
  EXPECT_EQ(newest_checkpoint(dir + "/new"), 1);

  // a corpus made with another tokenizer is refused
  json other = testing_train::micro_recipe(corpus);
  const std::string tok2 = dir + "/tokenizer.json";
  {
    std::ifstream in(testing_train::kByteTokenizer);
    std::stringstream ss;
    ss << in.rdbuf();
    std::ofstream(tok2) << ss.str() << "\n";  // same tokens, other bytes: another identity
  }
  other["tokenizer"] = tok2;
  EXPECT_ERROR_CONTAINS(train(parse_recipe(other, "other.json", dir), run_opts(dir + "/x")),
                        "was tokenized with tokenizer", "re-run `dsv4 tokenize`");
}

TEST_F(TrainerTest, ATooSmallValidationSplitFailsBeforeTraining) {
  json j = testing_train::micro_recipe(corpus);
  j["data"]["val_fraction"] = 0.01;  // one short paragraph: not one row of 64 tokens
  EXPECT_ERROR_CONTAINS(train(parse_recipe(j, "small.json", dir), run_opts(dir + "/run")),
                        "fewer than one row of 64", "raise the validation fraction");
  EXPECT_FALSE(fs::exists(dir + "/run/metrics.jsonl"));
}

}  // namespace
}  // namespace dsv4
