// Release-layout checkpoints: exact FP8/FP4 dequantization (edge blocks, nibble order),
// sharded and single-file layouts, broken layouts, the atomic saver, and the fixtures.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "io/checkpoint.h"
#include "io_test_util.h"

using namespace dsv4;
using namespace dsv4::testing_io;
namespace fs = std::filesystem;

namespace {

const std::string kFixtures = DSV4_FIXTURES;

TensorBlob bytes_blob(DType dtype, Shape shape, std::vector<uint8_t> bytes) {
  TensorBlob b;
  b.dtype = dtype;
  b.shape = std::move(shape);
  b.bytes = std::move(bytes);
  return b;
}

void write_config(const std::string& dir) {
  write_bytes(dir + "/config.json",
              config_to_json(load_config(kFixtures + "/tiny-fp32/config.json")).dump(2));
}

// A single-file checkpoint folder holding `blobs`.
std::string single_file(const std::string& dir, const std::map<std::string, TensorBlob>& blobs) {
  write_config(dir);
  write_safetensors(dir + "/model.safetensors", blobs);
  return dir;
}

// An FP8 weight [130, 200] (partial edge blocks in both dims) and its [2, 2] scale.
struct Fp8Case {
  std::vector<uint8_t> q = std::vector<uint8_t>(130 * 200);
  std::vector<uint8_t> scale = {120, 127, 130, 135};
  Fp8Case() {
    for (int r = 0; r < 130; ++r) {
      for (int c = 0; c < 200; ++c) {
        uint8_t b = static_cast<uint8_t>((r * 7 + c * 13) % 256);
        q[r * 200 + c] = (b & 0x7f) == 0x7f ? 0x38 : b;  // no NaN codes
      }
    }
    q[129 * 200 + 199] = 0x38;  // 1.0 in the bottom-right partial block
    q[0 * 200 + 128] = 0xC0;    // -2.0 in the top-right partial block
    q[128 * 200 + 0] = 0x3C;    // 1.5 in the bottom-left partial block
    q[5 * 200 + 7] = 0x01;      // the smallest subnormal, 2^-9
  }
  void add_to(std::map<std::string, TensorBlob>& blobs, const std::string& prefix) const {
    blobs[prefix + ".weight"] = bytes_blob(DType::F8_E4M3, {130, 200}, q);
    blobs[prefix + ".scale"] = bytes_blob(DType::F8_E8M0, {2, 2}, scale);
  }
};

// Packed FP4 [2, 64] stored I8 [2, 32], with scale [2, 2].
std::map<std::string, TensorBlob> fp4_blobs(Shape scale_shape = {2, 2}) {
  std::vector<uint8_t> q(2 * 32, 0);
  q[0] = 0x21;        // elements 0, 1: nibbles 1 (0.5) low, 2 (1.0) high
  q[1] = 0xF9;        // elements 2, 3: 9 (-0.5), F (-6)
  q[16] = 0x7B;       // elements 32, 33 (second block): B (-1.5), 7 (6)
  q[32 + 31] = 0x5C;  // row 1, elements 62, 63: C (-2), 5 (3)
  for (int j = 2; j < 16; ++j) q[j] = static_cast<uint8_t>(j * 17);
  std::vector<uint8_t> scale(static_cast<size_t>(numel_of(scale_shape)), 127);
  scale[0] = 128;  // row 0, block 0: ×2
  scale[1] = 126;  // row 0, block 1: ×0.5
  std::map<std::string, TensorBlob> blobs;
  blobs["experts.0.w1.weight"] = bytes_blob(DType::I8, {2, 32}, q);
  blobs["experts.0.w1.scale"] = bytes_blob(DType::F8_E8M0, scale_shape, scale);
  return blobs;
}

std::vector<std::string> folder_entries(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// The logical shape of a stored tensor: packed FP4 (I8 with a `.scale`) doubles the columns.
Shape logical_shape(const SafetensorsFile& f, const std::string& name) {
  const TensorInfo& t = f.get(name);
  const std::string base = name.substr(0, name.size() - 7);
  if (t.dtype == DType::I8 && name.ends_with(".weight") && f.has(base + ".scale")) {
    return {t.shape[0], 2 * t.shape[1]};
  }
  return t.shape;
}

// Loads every tensor of a fixture; returns how many loaded.
size_t load_every_tensor(const std::string& dir) {
  Checkpoint ck(dir);
  SafetensorsFile f(dir + "/model.safetensors");
  size_t loaded = 0;
  for (const std::string& name : ck.names()) {
    SCOPED_TRACE(name);
    const TensorInfo& t = f.get(name);
    if (t.dtype == DType::I64 || t.dtype == DType::I32) {
      std::vector<int64_t> v = ck.load_int(name, t.shape);
      EXPECT_EQ(static_cast<int64_t>(v.size()), numel_of(t.shape));
    } else {
      Tensor w = ck.load(name, logical_shape(f, name));
      EXPECT_EQ(w.shape, logical_shape(f, name));
      for (float x : w.data) {
        if (!std::isfinite(x)) { ADD_FAILURE() << "non-finite value"; break; }
      }
    }
    ++loaded;
  }
  return loaded;
}

}  // namespace

TEST(Checkpoint, Fp8DequantizesExactlyWithPartialEdgeBlocks) {
  std::string dir = fresh_dir("fp8");
  Fp8Case fp8;
  std::map<std::string, TensorBlob> blobs;
  fp8.add_to(blobs, "layers.0.attn.wkv");
  Checkpoint ck(single_file(dir, blobs));
  Tensor w = ck.load("layers.0.attn.wkv.weight", {130, 200});
  ASSERT_EQ(w.shape, (Shape{130, 200}));
  EXPECT_EQ(w[129 * 200 + 199], 256.0f);             // 1.0 · 2^(135−127)
  EXPECT_EQ(w[0 * 200 + 128], -2.0f);                // −2.0 · 2^(127−127)
  EXPECT_EQ(w[128 * 200 + 0], 12.0f);                // 1.5 · 2^(130−127)
  EXPECT_EQ(w[5 * 200 + 7], std::ldexp(1.0f, -16));  // 2^−9 · 2^(120−127)
  for (int r = 0; r < 130; ++r) {
    for (int c = 0; c < 200; ++c) {
      const int s = fp8.scale[(r / 128) * 2 + c / 128];
      const float want = e4m3_to_f32(fp8.q[r * 200 + c]) * std::ldexp(1.0f, s - 127);
      ASSERT_EQ(w[r * 200 + c], want) << "at [" << r << ", " << c << "]";
    }
  }
  // The scale itself reads as powers of two.
  EXPECT_EQ(ck.load("layers.0.attn.wkv.scale", {2, 2}).data,
            (std::vector<float>{1.0f / 128, 1.0f, 8.0f, 256.0f}));
}

TEST(Checkpoint, Fp4UnpacksLowNibbleFirst) {
  std::string dir = fresh_dir("fp4");
  auto blobs = fp4_blobs();
  Checkpoint ck(single_file(dir, blobs));
  Tensor w = ck.load("experts.0.w1.weight", {2, 64});
  ASSERT_EQ(w.shape, (Shape{2, 64}));
  EXPECT_EQ(w[0], 1.0f);     // 0.5 · 2
  EXPECT_EQ(w[1], 2.0f);     // 1.0 · 2
  EXPECT_EQ(w[2], -1.0f);    // −0.5 · 2
  EXPECT_EQ(w[3], -12.0f);   // −6 · 2
  EXPECT_EQ(w[32], -0.75f);  // −1.5 · 0.5
  EXPECT_EQ(w[33], 3.0f);    // 6 · 0.5
  EXPECT_EQ(w[64 + 62], -2.0f);
  EXPECT_EQ(w[64 + 63], 3.0f);
  const auto& q = blobs["experts.0.w1.weight"].bytes;
  const auto& s = blobs["experts.0.w1.scale"].bytes;
  for (int r = 0; r < 2; ++r) {
    for (int c = 0; c < 64; ++c) {
      const uint8_t byte = q[r * 32 + c / 2];
      const uint8_t nibble = c % 2 == 0 ? byte & 0x0f : byte >> 4;
      const float want = e2m1_to_f32(nibble) * std::ldexp(1.0f, s[r * 2 + c / 32] - 127);
      ASSERT_EQ(w[r * 64 + c], want) << "at [" << r << ", " << c << "]";
    }
  }
}

TEST(Checkpoint, PlainFloatDtypesLoad) {
  std::string dir = fresh_dir("plain");
  std::map<std::string, TensorBlob> blobs;
  blobs["norm.weight"] = bytes_blob(DType::BF16, {2}, {0x80, 0x3f, 0x00, 0xc0});  // 1, −2
  Tensor f({3}, 0.5f);
  blobs["hc_head_base"] = blob_f32(f);
  blobs["layers.0.ffn.gate.tid2eid"] = blob_i64({1, 2, 3, 4}, {2, 2});
  Checkpoint ck(single_file(dir, blobs));
  EXPECT_EQ(ck.load("norm.weight", {2}).data, (std::vector<float>{1.0f, -2.0f}));
  EXPECT_EQ(ck.load("hc_head_base", {3}).data, f.data);
  EXPECT_EQ(ck.load_int("layers.0.ffn.gate.tid2eid", {2, 2}), (std::vector<int64_t>{1, 2, 3, 4}));
  EXPECT_TRUE(ck.has("norm.weight"));
  EXPECT_EQ(ck.config().vocab_size, 512);
}

TEST(Checkpoint, MismatchesNameTheTensorAndBothShapes) {
  std::string dir = fresh_dir("mismatch");
  std::map<std::string, TensorBlob> blobs = fp4_blobs();
  blobs["w"] = blob_f32(Tensor({2, 3}));
  blobs["ids"] = blob_i64({1, 2}, {2});
  Fp8Case().add_to(blobs, "q");
  Checkpoint ck(single_file(dir, blobs));
  EXPECT_ERROR_CONTAINS(ck.load("w", {3, 2}), "[checkpoint]", "tensor 'w'", "expected",
                        "[3, 2]", "found F32 [2, 3]");
  EXPECT_ERROR_CONTAINS(ck.load("q.weight", {200, 130}), "tensor 'q.weight'", "[200, 130]",
                        "found F8_E4M3 [130, 200]");
  EXPECT_ERROR_CONTAINS(ck.load("experts.0.w1.weight", {2, 32}), "tensor 'experts.0.w1.weight'",
                        "[2, 32]", "packed FP4", "I8 [2, 16]", "found I8 [2, 32]");
  EXPECT_ERROR_CONTAINS(ck.load("ids", {2}), "tensor 'ids' is I64", "load_int");
  EXPECT_ERROR_CONTAINS(ck.load_int("w", {2, 3}), "tensor 'w'", "I64 or I32", "found F32");
  EXPECT_ERROR_CONTAINS(ck.load_int("ids", {1, 2}), "tensor 'ids'", "[1, 2]", "found I64 [2]");
  EXPECT_ERROR_CONTAINS(ck.load("nope.weight", {1}), "tensor 'nope.weight' not found", dir);
}

TEST(Checkpoint, RejectsAnFp4ScaleOfTheWrongShape) {
  std::string dir = fresh_dir("fp4scale");
  EXPECT_ERROR_CONTAINS(Checkpoint(single_file(dir, fp4_blobs({2, 4}))),
                        "scale 'experts.0.w1.scale'", "expected F8_E8M0 [2, 2]",
                        "found F8_E8M0 [2, 4]");
}

TEST(Checkpoint, RejectsAnFp8ScaleOfTheWrongShapeOrDtypeOrAMissingOne) {
  std::string dir = fresh_dir("fp8scale");
  std::map<std::string, TensorBlob> blobs;
  Fp8Case().add_to(blobs, "a");
  blobs["a.scale"] = bytes_blob(DType::F8_E8M0, {1, 2}, {127, 127});
  EXPECT_ERROR_CONTAINS(Checkpoint(single_file(dir, blobs)), "scale 'a.scale'",
                        "expected F8_E8M0 [2, 2]", "found F8_E8M0 [1, 2]");
  blobs["a.scale"] = blob_f32(Tensor({2, 2}, 1.0f));
  EXPECT_ERROR_CONTAINS(Checkpoint(single_file(dir, blobs)), "found F32 [2, 2]");
  blobs.erase("a.scale");
  EXPECT_ERROR_CONTAINS(Checkpoint(single_file(dir, blobs)), "tensor 'a.weight' is F8_E4M3",
                        "'a.scale' is missing");
}

TEST(Checkpoint, IgnoresMtpAliasKeys) {
  std::string dir = fresh_dir("alias");
  std::map<std::string, TensorBlob> blobs;
  blobs["embed.weight"] = blob_f32(Tensor({4, 2}, 1.0f));
  blobs["mtp.0.embed.weight"] = blob_f32(Tensor({4, 2}, 1.0f));
  blobs["mtp.0.head.weight"] = blob_f32(Tensor({4, 2}, 1.0f));
  blobs["mtp.0.norm.weight"] = blob_f32(Tensor({2}, 1.0f));
  Checkpoint ck(single_file(dir, blobs));
  EXPECT_EQ(ck.names(), (std::vector<std::string>{"embed.weight", "mtp.0.norm.weight"}));
  EXPECT_FALSE(ck.has("mtp.0.embed.weight"));
  EXPECT_ERROR_CONTAINS(ck.load("mtp.0.head.weight", {4, 2}), "not found");
}

TEST(Checkpoint, ShardedLayoutLoadsTheSameAsSingleFile) {
  std::map<std::string, TensorBlob> shard1, shard2;
  Fp8Case fp8;
  fp8.add_to(shard1, "layers.0.attn.wkv");
  shard2["layers.0.attn.wkv.scale"] = shard1["layers.0.attn.wkv.scale"];  // scale in the other shard
  shard1.erase("layers.0.attn.wkv.scale");
  shard1["norm.weight"] = blob_f32(Tensor({7}, 0.25f));
  for (auto& [name, blob] : fp4_blobs()) shard2[name] = blob;
  shard2["layers.0.ffn.gate.tid2eid"] = blob_i64({3, 1, 4, 1, 5, 9}, {3, 2});

  std::map<std::string, TensorBlob> all = shard1;
  all.insert(shard2.begin(), shard2.end());
  Checkpoint single(single_file(fresh_dir("single"), all));

  std::string dir = fresh_dir("sharded");
  write_config(dir);
  write_safetensors(dir + "/model-00001-of-00002.safetensors", shard1);
  write_safetensors(dir + "/model-00002-of-00002.safetensors", shard2);
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
  for (const auto& [name, blob] : shard1) index["weight_map"][name] = "model-00001-of-00002.safetensors";
  for (const auto& [name, blob] : shard2) index["weight_map"][name] = "model-00002-of-00002.safetensors";
  index["weight_map"]["mtp.0.embed.weight"] = "model-00009-of-00002.safetensors";  // alias: ignored
  write_bytes(dir + "/model.safetensors.index.json", index.dump(2));
  Checkpoint sharded(dir);

  ASSERT_EQ(sharded.names(), single.names());
  for (const std::string& name : single.names()) {
    SCOPED_TRACE(name);
    if (name == "layers.0.ffn.gate.tid2eid") {
      EXPECT_EQ(sharded.load_int(name, {3, 2}), single.load_int(name, {3, 2}));
      continue;
    }
    Shape shape = name == "experts.0.w1.weight" ? Shape{2, 64} : all.at(name).shape;
    EXPECT_EQ(sharded.load(name, shape).data, single.load(name, shape).data);
  }
}

TEST(Checkpoint, RejectsABrokenIndex) {
  std::string dir = fresh_dir("index");
  write_config(dir);
  write_safetensors(dir + "/a.safetensors", {{"x", blob_f32(Tensor({2}))}});
  auto with_index = [&](const std::string& text) {
    write_bytes(dir + "/model.safetensors.index.json", text);
    return dir;
  };
  EXPECT_ERROR_CONTAINS(Checkpoint(with_index(R"({"weight_map": {"x": "b.safetensors"}})")),
                        "shard 'b.safetensors'", "tensor 'x'", "does not exist");
  EXPECT_ERROR_CONTAINS(Checkpoint(with_index(R"({"weight_map": {"y": "a.safetensors"}})")),
                        "tensor 'y'", "shard 'a.safetensors'", "has no such tensor");
  EXPECT_ERROR_CONTAINS(Checkpoint(with_index(R"({"weight_map": {"x": "../a.safetensors"}})")),
                        "must be a file name");
  EXPECT_ERROR_CONTAINS(Checkpoint(with_index(R"({"weight_map": {"x": 3}})")), "tensor 'x'",
                        "file name");
  EXPECT_ERROR_CONTAINS(Checkpoint(with_index(R"({"weights": {}})")), "weight_map");
  EXPECT_ERROR_CONTAINS(Checkpoint(with_index(R"({"weight_map": )")), "not valid JSON");
}

TEST(Checkpoint, RejectsAFolderWithoutAModel) {
  std::string dir = fresh_dir("empty");
  EXPECT_ERROR_CONTAINS(Checkpoint(dir), "config.json", "cannot open");
  write_config(dir);
  EXPECT_ERROR_CONTAINS(Checkpoint(dir), "neither model.safetensors nor");
  EXPECT_ERROR_CONTAINS(Checkpoint(dir + "/nothing"), "is not a folder");
  write_bytes(dir + "/model.safetensors", "garbage");
  EXPECT_ERROR_CONTAINS(Checkpoint(dir), "[safetensors]", "model.safetensors", "too short");
}

TEST(Checkpoint, SaveRoundTripsAndReplacesAnOldCheckpoint) {
  std::string root = fresh_dir("save");
  const std::string dir = root + "/ckpt";
  ModelConfig config = load_config(kFixtures + "/tiny-fp32/config.json");
  std::map<std::string, Tensor> tensors;
  tensors["a.weight"] = Tensor({2, 3}, 1.5f);
  tensors["b"] = Tensor({4}, -2.0f);
  std::vector<int64_t> tid2eid(512 * 2);
  for (size_t i = 0; i < tid2eid.size(); ++i) tid2eid[i] = static_cast<int64_t>(i % 8);
  std::map<std::string, std::vector<int64_t>> ints = {{"layers.0.ffn.gate.tid2eid", tid2eid},
                                                      {"step", {42}}};
  save_checkpoint(dir + "/", config, tensors, ints, {{"tokenizer.json", "{\"v\": 1}"}});
  EXPECT_EQ(folder_entries(root), (std::vector<std::string>{"ckpt"}));
  EXPECT_EQ(folder_entries(dir),
            (std::vector<std::string>{"config.json", "model.safetensors", "tokenizer.json"}));
  {
    Checkpoint ck(dir);
    EXPECT_EQ(config_to_json(ck.config()), config_to_json(config));
    EXPECT_EQ(ck.load("a.weight", {2, 3}).data, tensors["a.weight"].data);
    EXPECT_EQ(ck.load("b", {4}).data, tensors["b"].data);
    EXPECT_EQ(ck.load_int("layers.0.ffn.gate.tid2eid", {512, 2}), tid2eid);
    EXPECT_EQ(ck.load_int("step", {1}), (std::vector<int64_t>{42}));
    std::ifstream tok(dir + "/tokenizer.json");
    EXPECT_EQ(std::string(std::istreambuf_iterator<char>(tok), {}), "{\"v\": 1}");
  }
  tensors["b"] = Tensor({4}, 3.0f);
  save_checkpoint(dir, config, tensors, {});
  EXPECT_EQ(folder_entries(root), (std::vector<std::string>{"ckpt"}));
  EXPECT_EQ(folder_entries(dir), (std::vector<std::string>{"config.json", "model.safetensors"}));
  EXPECT_EQ(Checkpoint(dir).load("b", {4}).data, tensors["b"].data);
}

TEST(Checkpoint, SaveRefusesUnsafeTargetsAndBadInput) {
  std::string root = fresh_dir("unsafe");
  ModelConfig config = load_config(kFixtures + "/tiny-fp32/config.json");
  std::map<std::string, Tensor> tensors = {{"x", Tensor({2}, 1.0f)}};
  write_bytes(root + "/notes.txt", "precious");
  fs::create_directories(root + "/src");
  write_bytes(root + "/src/main.cpp", "precious");
  EXPECT_ERROR_CONTAINS(save_checkpoint(root + "/src", config, tensors, {}),
                        "refusing to replace", "no config.json");
  EXPECT_ERROR_CONTAINS(save_checkpoint(root + "/notes.txt", config, tensors, {}),
                        "not a folder");
  EXPECT_ERROR_CONTAINS(save_checkpoint(root + "/c", config, tensors, {{"x.tid2eid", {1, 2}}}),
                        "tensor 'x.tid2eid'", "[512, 2]");
  EXPECT_ERROR_CONTAINS(save_checkpoint(root + "/c", config, tensors, {{"x", {1}}}),
                        "both a float and an integer tensor");
  EXPECT_ERROR_CONTAINS(save_checkpoint(root + "/c", config, tensors, {}, {{"../evil", ""}}),
                        "extra file '../evil'");
  EXPECT_ERROR_CONTAINS(save_checkpoint(root + "/c", config, {{"mtp.0.head.weight", Tensor({1})}},
                                        {}),
                        "alias");
  EXPECT_EQ(folder_entries(root), (std::vector<std::string>{"notes.txt", "src"}));
  std::ifstream kept(root + "/src/main.cpp");
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(kept), {}), "precious");
}

TEST(Checkpoint, EveryTensorOfTheTinyFp32FixtureLoads) {
  const std::string dir = kFixtures + "/tiny-fp32";
  EXPECT_EQ(load_every_tensor(dir), SafetensorsFile(dir + "/model.safetensors").tensors().size());
}

TEST(Checkpoint, EveryTensorOfTheTinyFp8FixtureLoads) {
  const std::string dir = kFixtures + "/tiny-fp8";
  EXPECT_EQ(load_every_tensor(dir), SafetensorsFile(dir + "/model.safetensors").tensors().size());
}

TEST(Checkpoint, TheTinyFp32FixtureSurvivesASaveAndReload) {
  Checkpoint original(kFixtures + "/tiny-fp32");
  SafetensorsFile f(kFixtures + "/tiny-fp32/model.safetensors");
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::vector<int64_t>> ints;
  for (const std::string& name : original.names()) {
    const TensorInfo& t = f.get(name);
    if (t.dtype == DType::I64) ints[name] = original.load_int(name, t.shape);
    else tensors[name] = original.load(name, t.shape);
  }
  const std::string dir = fresh_dir("resave") + "/model";
  save_checkpoint(dir, original.config(), tensors, ints);
  Checkpoint copy(dir);
  ASSERT_EQ(copy.names(), original.names());
  for (const auto& [name, t] : tensors) EXPECT_EQ(copy.load(name, t.shape).data, t.data) << name;
  for (const auto& [name, v] : ints) {
    EXPECT_EQ(copy.load_int(name, f.get(name).shape), v) << name;
  }
}
