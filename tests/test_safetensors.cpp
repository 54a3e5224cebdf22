// safetensors reader and writer: round trips, every float and integer dtype, and each
// kind of broken file rejected with a message that says what is wrong.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "io/safetensors.h"
#include "io_test_util.h"

using namespace dsv4;
using namespace dsv4::testing_io;

namespace {

// A valid two-tensor header: "a" F32 [2, 2] at [0, 16), "b" I64 [1] at [16, 24).
const char* kGoodHeader =
    R"({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},)"
    R"( "b": {"dtype": "I64", "shape": [1], "data_offsets": [16, 24]}})";

std::string write_raw(const std::string& dir, const std::string& header, size_t data_bytes,
                      uint64_t n = UINT64_MAX) {
  std::string path = dir + "/t.safetensors";
  write_bytes(path, raw_safetensors(header, std::string(data_bytes, '\0'), n));
  return path;
}

template <typename T>
TensorBlob blob_of(DType dtype, Shape shape, const std::vector<T>& values) {
  TensorBlob b;
  b.dtype = dtype;
  b.shape = std::move(shape);
  b.bytes.resize(values.size() * sizeof(T));
  std::memcpy(b.bytes.data(), values.data(), b.bytes.size());
  return b;
}

}  // namespace

TEST(Safetensors, RoundTripF32AndI64WithMetadata) {
  std::string dir = fresh_dir("rt");
  Tensor w({2, 3});
  for (int i = 0; i < 6; ++i) w[i] = 0.25f * i - 1.0f;
  std::map<std::string, TensorBlob> blobs;
  blobs["w"] = blob_f32(w);
  blobs["ids"] = blob_i64({5, -7, 1LL << 40}, {3});
  blobs["empty"] = blob_f32(Tensor({0, 4}));
  const std::string path = dir + "/m.safetensors";
  write_safetensors(path, blobs, {{"format", "pt"}});
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));

  SafetensorsFile f(path);
  EXPECT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.get("w").dtype, DType::F32);
  EXPECT_EQ(f.get("w").shape, (Shape{2, 3}));
  Tensor back = f.read_f32("w");
  EXPECT_EQ(back.shape, w.shape);
  EXPECT_EQ(back.data, w.data);
  Shape s;
  EXPECT_EQ(f.read_i64("ids", &s), (std::vector<int64_t>{5, -7, 1LL << 40}));
  EXPECT_EQ(s, (Shape{3}));
  EXPECT_EQ(f.read_f32("empty").shape, (Shape{0, 4}));
}

TEST(Safetensors, WriterReplacesAnExistingFile) {
  std::string dir = fresh_dir("replace");
  const std::string path = dir + "/m.safetensors";
  write_safetensors(path, {{"x", blob_f32(Tensor({4}, 1.0f))}});
  write_safetensors(path, {{"y", blob_f32(Tensor({2}, 2.0f))}});
  SafetensorsFile f(path);
  EXPECT_FALSE(f.has("x"));
  EXPECT_EQ(f.read_f32("y").data, (std::vector<float>{2.0f, 2.0f}));
}

TEST(Safetensors, ReadsEveryFloatDtypeAsF32) {
  std::string dir = fresh_dir("float");
  std::map<std::string, TensorBlob> blobs;
  blobs["bf16"] = blob_of<uint16_t>(DType::BF16, {3}, {f32_to_bf16(1.5f), f32_to_bf16(-2.0f),
                                                       f32_to_bf16(0.0078125f)});
  blobs["f16"] = blob_of<uint16_t>(DType::F16, {2}, {f32_to_f16(0.5f), f32_to_f16(-65504.0f)});
  blobs["f64"] = blob_of<double>(DType::F64, {2}, {0.125, -3.0});
  const std::string path = dir + "/m.safetensors";
  write_safetensors(path, blobs);
  SafetensorsFile f(path);
  EXPECT_EQ(f.read_f32("bf16").data, (std::vector<float>{1.5f, -2.0f, 0.0078125f}));
  EXPECT_EQ(f.read_f32("f16").data, (std::vector<float>{0.5f, -65504.0f}));
  EXPECT_EQ(f.read_f32("f64").data, (std::vector<float>{0.125f, -3.0f}));
}

TEST(Safetensors, ReadsEveryIntegerDtypeAsI64) {
  std::string dir = fresh_dir("int");
  std::map<std::string, TensorBlob> blobs;
  blobs["i32"] = blob_of<int32_t>(DType::I32, {2}, {-3, 70000});
  blobs["i16"] = blob_of<int16_t>(DType::I16, {2}, {-300, 7});
  blobs["i8"] = blob_of<int8_t>(DType::I8, {2}, {-128, 127});
  blobs["u8"] = blob_of<uint8_t>(DType::U8, {2}, {0, 255});
  const std::string path = dir + "/m.safetensors";
  write_safetensors(path, blobs);
  SafetensorsFile f(path);
  EXPECT_EQ(f.read_i64("i32"), (std::vector<int64_t>{-3, 70000}));
  EXPECT_EQ(f.read_i64("i16"), (std::vector<int64_t>{-300, 7}));
  EXPECT_EQ(f.read_i64("i8"), (std::vector<int64_t>{-128, 127}));
  EXPECT_EQ(f.read_i64("u8"), (std::vector<int64_t>{0, 255}));
}

TEST(Safetensors, AcceptsAHandWrittenValidFileWithGapsAndUnalignedData) {
  std::string dir = fresh_dir("valid");
  // "b" at an odd offset after a gap: allowed (no overlap).
  const std::string header =
      R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
      R"( "b": {"dtype": "I64", "shape": [1], "data_offsets": [7, 15]}, "__metadata__": {}})";
  std::string data(15, '\0');
  float one = 1.0f;
  int64_t big = -123456789012LL;
  std::memcpy(data.data(), &one, 4);
  std::memcpy(data.data() + 7, &big, 8);
  write_bytes(dir + "/t.safetensors", raw_safetensors(header, data));
  SafetensorsFile f(dir + "/t.safetensors");
  EXPECT_EQ(f.read_f32("a").data, (std::vector<float>{1.0f}));
  EXPECT_EQ(f.read_i64("b"), (std::vector<int64_t>{big}));
}

TEST(Safetensors, RejectsAMissingFile) {
  EXPECT_ERROR_CONTAINS(SafetensorsFile("/nonexistent/x.safetensors"), "[safetensors]",
                        "/nonexistent/x.safetensors", "cannot open");
}

TEST(Safetensors, RejectsATruncatedFile) {
  std::string dir = fresh_dir("trunc");
  write_bytes(dir + "/t.safetensors", std::string(5, '\0'));
  EXPECT_ERROR_CONTAINS(SafetensorsFile(dir + "/t.safetensors"), "5 bytes", "too short");
  write_bytes(dir + "/t.safetensors", "");
  EXPECT_ERROR_CONTAINS(SafetensorsFile(dir + "/t.safetensors"), "0 bytes");
}

TEST(Safetensors, RejectsTruncatedData) {
  std::string dir = fresh_dir("truncdata");
  // The header promises 24 bytes of data; only 20 are there.
  std::string path = write_raw(dir, kGoodHeader, 20);
  EXPECT_ERROR_CONTAINS(SafetensorsFile(path), "tensor 'b'", "offsets [16, 24]",
                        "exceed data size 20");
  EXPECT_NO_THROW(SafetensorsFile(write_raw(dir, kGoodHeader, 24)));
}

TEST(Safetensors, RejectsAHeaderLengthPastTheEnd) {
  std::string dir = fresh_dir("pastend");
  std::string path = write_raw(dir, kGoodHeader, 24, 5000);
  EXPECT_ERROR_CONTAINS(SafetensorsFile(path), "header length 5000", "past the end");
}

TEST(Safetensors, RejectsAHeaderLengthOver100MB) {
  std::string dir = fresh_dir("huge");
  std::string path = write_raw(dir, kGoodHeader, 24, 200ull * 1000 * 1000);
  EXPECT_ERROR_CONTAINS(SafetensorsFile(path), "header length 200000000", "100 MB");
}

TEST(Safetensors, RejectsInvalidJson) {
  std::string dir = fresh_dir("json");
  EXPECT_ERROR_CONTAINS(SafetensorsFile(write_raw(dir, R"({"a": {"dtype": )", 0)),
                        "not valid JSON");
  EXPECT_ERROR_CONTAINS(SafetensorsFile(write_raw(dir, std::string("\xff\xfe", 2), 0)),
                        "not valid JSON");
}

TEST(Safetensors, RejectsAHeaderThatIsNotAnObject) {
  std::string dir = fresh_dir("notobj");
  EXPECT_ERROR_CONTAINS(SafetensorsFile(write_raw(dir, "[1, 2]", 0)),
                        "header must be a JSON object", "array");
}

TEST(Safetensors, RejectsAnUnknownDtype) {
  std::string dir = fresh_dir("dtype");
  std::string h = R"({"a": {"dtype": "F7", "shape": [1], "data_offsets": [0, 1]}})";
  EXPECT_ERROR_CONTAINS(SafetensorsFile(write_raw(dir, h, 1)), "tensor 'a'", "unknown dtype 'F7'");
}

TEST(Safetensors, RejectsOutOfRangeOffsets) {
  std::string dir = fresh_dir("range");
  std::string h = R"({"w": {"dtype": "U8", "shape": [90], "data_offsets": [10, 100]}})";
  EXPECT_ERROR_CONTAINS(SafetensorsFile(write_raw(dir, h, 64)), "tensor 'w'", "offsets [10, 100]",
                        "exceed data size 64");
  h = R"({"w": {"dtype": "U8", "shape": [0], "data_offsets": [10, 0]}})";
  EXPECT_ERROR_CONTAINS(SafetensorsFile(write_raw(dir, h, 64)), "tensor 'w'", "reversed");
}

TEST(Safetensors, RejectsOverlappingTensors) {
  std::string dir = fresh_dir("overlap");
  std::string h = R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},)"
                  R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [12, 20]}})";
  EXPECT_ERROR_CONTAINS(SafetensorsFile(write_raw(dir, h, 20)), "'a' [0, 16]", "'b' [12, 20]",
                        "overlap");
}

TEST(Safetensors, RejectsAByteLengthThatDoesNotMatchTheShape) {
  std::string dir = fresh_dir("bytes");
  std::string h = R"({"a": {"dtype": "BF16", "shape": [3, 2], "data_offsets": [0, 16]}})";
  EXPECT_ERROR_CONTAINS(SafetensorsFile(write_raw(dir, h, 16)), "tensor 'a'", "byte length 16",
                        "!= 12");
}

TEST(Safetensors, RejectsEntriesWithMissingOrMistypedFields) {
  std::string dir = fresh_dir("fields");
  struct Case { const char* header; const char* message; };
  const Case cases[] = {
      {R"({"a": {"shape": [1], "data_offsets": [0, 4]}})", "no 'dtype'"},
      {R"({"a": {"dtype": "F32", "data_offsets": [0, 4]}})", "no 'shape'"},
      {R"({"a": {"dtype": "F32", "shape": [1]}})", "no 'data_offsets'"},
      {R"({"a": {"dtype": 7, "shape": [1], "data_offsets": [0, 4]}})", "dtype must be a string"},
      {R"({"a": {"dtype": "F32", "shape": "1", "data_offsets": [0, 4]}})", "shape must be an array"},
      {R"({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", "non-negative integer"},
      {R"({"a": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}})", "non-negative integer"},
      {R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}})", "[begin, end]"},
      {R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": ["0", 4]}})", "non-negative integer"},
      {R"({"a": [1, 2]})", "entry must be an object"},
      {R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296, 4294967296],)"
       R"( "data_offsets": [0, 4]}})", "overflows"},
      {R"({"__metadata__": [1]})", "__metadata__ must be an object"},
      {R"({"__metadata__": {"k": 1}})", "must be a string"},
      {R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
       R"( "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", "appears twice"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.header);
    EXPECT_ERROR_CONTAINS(SafetensorsFile(write_raw(dir, c.header, 8)), c.message);
  }
}

TEST(Safetensors, NamesAMissingTensorAndAWrongDtypeOnRead) {
  std::string dir = fresh_dir("read");
  std::string path = write_raw(dir, kGoodHeader, 24);
  SafetensorsFile f(path);
  EXPECT_ERROR_CONTAINS(f.get("nope"), "no tensor 'nope'", path);
  EXPECT_ERROR_CONTAINS(f.read_f32("b"), "tensor 'b' is I64", "float dtype");
  EXPECT_ERROR_CONTAINS(f.read_i64("a"), "tensor 'a' is F32", "integer dtype");
}

TEST(Safetensors, WriterRejectsABlobOfTheWrongSize) {
  std::string dir = fresh_dir("wbad");
  TensorBlob b;
  b.dtype = DType::F32;
  b.shape = {3};
  b.bytes.resize(8);
  EXPECT_ERROR_CONTAINS(write_safetensors(dir + "/m.safetensors", {{"x", b}}), "tensor 'x'",
                        "8 bytes", "needs 12");
  EXPECT_FALSE(std::filesystem::exists(dir + "/m.safetensors"));
  EXPECT_ERROR_CONTAINS(blob_i64({1, 2, 3}, {2}), "3 values for shape [2]");
}
