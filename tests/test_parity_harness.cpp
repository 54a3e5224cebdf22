// The parity harness works on any folder in the fixture format: other shapes, batches of
// 3, a one-token prompt (K' = 0 selections), several hash layers, CSA first. Fixtures are
// written here from our own model through a different path (one long prefill per
// sequence instead of prefill + decode steps), then checked; a corrupted logit must fail.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "infer/parity.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "model_test_util.h"

using namespace dsv4;
using namespace dsv4::testing_util;
namespace fs = std::filesystem;

namespace {

struct CaseSpec { std::string name; int64_t batch, prefill, total; };

// Writes config.json, model.safetensors, cases.json and expected.safetensors into dir.
void write_fixture(const std::string& dir, const ModelConfig& c, const Params& p, const std::vector<CaseSpec>& cases,
                   float corrupt = 0.0f) {
  save_params(dir, c, p);
  Model m(c, p);
  const int64_t V = c.vocab_size, nD = static_cast<int64_t>(c.hc_mult) * c.hidden_size;
  nlohmann::json jc;
  std::map<std::string, TensorBlob> exp;
  uint64_t seed = 1;
  for (const CaseSpec& cs : cases) {
    jc["cases"].push_back({{"name", cs.name}, {"batch", cs.batch}, {"prefill", cs.prefill}, {"total", cs.total}});
    const int64_t B = cs.batch, P = cs.prefill, T = cs.total;
    std::vector<int64_t> ids, mids;
    Tensor logits({B, T, V}), mtp({B, P, V});
    for (int64_t b = 0; b < B; ++b) {
      std::vector<int64_t> seq = random_ids(c, T, seed++), mseq = random_ids(c, P, seed++);
      ids.insert(ids.end(), seq.begin(), seq.end());
      mids.insert(mids.end(), mseq.begin(), mseq.end());
      SequenceState s = m.new_state();
      ForwardOut full = m.forward({{&s, seq}});
      std::copy(full.logits.data.begin(), full.logits.data.end(), logits.ptr() + b * T * V);
      SequenceState sp = m.new_state(), sm = m.new_state();
      ForwardTrace tr;
      ForwardOut pre = m.forward({{&sp, std::vector<int64_t>(seq.begin(), seq.begin() + P)}}, true, &tr);
      ForwardOut mo = m.mtp_forward({{&sm, mseq}}, pre.streams);
      std::copy(mo.logits.data.begin(), mo.logits.data.end(), mtp.ptr() + b * P * V);
      // Indexer selections in the fixture layout: K' = min(K, P/4) per row, −1 padding first.
      const int64_t Kp = std::min<int64_t>(c.index_topk, P / 4);
      for (int l = 0; l < c.num_hidden_layers; ++l) {
        if (c.ratio(l) != 4) continue;
        const std::string key = cs.name + ".topk." + std::to_string(l);
        if (b == 0) exp[key] = blob_i64(std::vector<int64_t>(B * P * Kp, -1), {B, P, Kp});
        int64_t* dst = reinterpret_cast<int64_t*>(exp[key].bytes.data());
        for (int64_t t = 0; t < P; ++t) {
          const auto& sel = tr.topk[l][t];
          std::copy(sel.begin(), sel.end(), dst + (b * P + t) * Kp + (Kp - static_cast<int64_t>(sel.size())));
        }
      }
      (void)nD;
    }
    logits[logits.numel() / 2] += corrupt;
    exp[cs.name + ".ids"] = blob_i64(ids, {B, T});
    exp[cs.name + ".mtp_ids"] = blob_i64(mids, {B, P});
    exp[cs.name + ".logits"] = blob_f32(logits);
    exp[cs.name + ".mtp_logits"] = blob_f32(mtp);
  }
  std::ofstream(dir + "/cases.json") << jc.dump(2);
  write_safetensors(dir + "/expected.safetensors", exp);
}

std::string scratch(const std::string& name) {
  std::string d = ::testing::TempDir() + "dsv4_parity_" + name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

}  // namespace

TEST(ParityHarness, AnyFolderInTheFixtureFormat) {
  struct Variant { const char* name; TinyOptions o; };
  const Variant variants[] = {
      {"hc1_softmax_csa_first", {1, ScoringFunc::Softmax, {4, 0, 8}, 1, true, 8, 4}},
      {"hc3_sigmoid_no_yarn_two_hash", {3, ScoringFunc::Sigmoid, {8, 4, 0}, 2, false, 6, 3}},
      {"hc4_sqrtsoftplus_hca_first", {4, ScoringFunc::SqrtSoftplus, {16, 4}, 0, true, 8, 2}},
  };
  for (const Variant& v : variants) {
    ModelConfig c = tiny_config(v.o);
    const std::string dir = scratch(v.name);
    write_fixture(dir, c, random_params(c, 5), {{"batch3", 3, 21, 30}, {"one_token", 2, 1, 9}});
    for (const ParityCase& pc : run_parity(dir, /*trace=*/true)) {
      EXPECT_TRUE(pc.passes()) << v.name << " " << pc.name << " mean " << pc.logits.mean_abs;
      EXPECT_TRUE(pc.has_mtp);
      for (const std::string& line : pc.trace) EXPECT_EQ(line.find("first differ"), std::string::npos) << line;
    }
  }
}

TEST(ParityHarness, ACorruptedLogitFails) {
  ModelConfig c = tiny_config();
  const std::string dir = scratch("corrupt");
  write_fixture(dir, c, random_params(c, 6), {{"c", 1, 5, 12}}, /*corrupt=*/1.0f);
  std::vector<ParityCase> r = run_parity(dir, false);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_FALSE(r[0].passes());  // max |Δ| 1.0 > 0.25
  EXPECT_GE(r[0].logits.max_abs, 0.99);
}
