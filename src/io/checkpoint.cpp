#include "io/checkpoint.h"

#include <sys/stat.h>

#include <array>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "core/error.h"
#include "io/durable_file.h"

namespace dsv4 {

namespace fs = std::filesystem;

namespace {

constexpr int64_t kFp8Block = 128;  // E8M0 scale per 128×128 block of an F8_E4M3 weight
constexpr int64_t kFp4Block = 32;   // E8M0 scale per 1×32 block of a packed FP4 weight

// mtp.{i}.embed.weight / mtp.{i}.head.weight: aliases of embed / head that readers ignore.
bool is_alias(const std::string& name) {
  if (name.rfind("mtp.", 0) != 0) return false;
  size_t i = 4, digits = 0;
  while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i]))) ++i, ++digits;
  if (digits == 0) return false;
  std::string rest = name.substr(i);
  return rest == ".embed.weight" || rest == ".head.weight";
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The scale of `X.weight` is `X.scale`; "" when the name has no `.weight` suffix.
std::string scale_name(const std::string& name) {
  if (!ends_with(name, ".weight")) return "";
  return name.substr(0, name.size() - 7) + ".scale";
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

std::string found(const TensorInfo& t) { return str(dtype_name(t.dtype), " ", shape_str(t.shape)); }

// Decoding tables: every code of e4m3, e8m0 (256 each) and e2m1 (16).
struct DecodeTables {
  std::array<float, 256> e4m3{}, e8m0{};
  std::array<float, 16> e2m1{};
  DecodeTables() {
    for (int b = 0; b < 256; ++b) {
      e4m3[b] = e4m3_to_f32(static_cast<uint8_t>(b));
      e8m0[b] = e8m0_to_f32(static_cast<uint8_t>(b));
    }
    for (int b = 0; b < 16; ++b) e2m1[b] = e2m1_to_f32(static_cast<uint8_t>(b));
  }
};
const DecodeTables& tables() {
  static const DecodeTables t;
  return t;
}

// Threads pay off only for large tensors (and cost a lot when cores are oversubscribed).
constexpr int64_t kParallelMin = int64_t{1} << 22;

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  DSV4_CHECK(in.good(), "checkpoint", "cannot open '", path.string(), "'");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

Checkpoint::Checkpoint(const std::string& dir) : dir_(dir) {
  const fs::path d(dir);
  DSV4_CHECK(fs::is_directory(d), "checkpoint", "'", dir, "' is not a folder");
  config_ = load_config((d / "config.json").string());

  const fs::path index_path = d / "model.safetensors.index.json";
  const fs::path single_path = d / "model.safetensors";
  if (fs::exists(index_path)) {
    const std::string where = index_path.string();
    nlohmann::json index;
    try {
      index = nlohmann::json::parse(read_text(index_path));
    } catch (const nlohmann::json::exception& e) {
      throw Error("checkpoint", str(where, ": not valid JSON: ", e.what()));
    }
    DSV4_CHECK(index.is_object() && index.contains("weight_map") && index["weight_map"].is_object(),
               "checkpoint", where, ": needs a \"weight_map\" object {tensor name: shard file}");
    std::map<std::string, const SafetensorsFile*> shards;
    for (const auto& [name, shard_json] : index["weight_map"].items()) {
      DSV4_CHECK(shard_json.is_string(), "checkpoint", where, ": shard of tensor '", name,
                 "' must be a file name, found ", shard_json.dump());
      const std::string shard = shard_json.get<std::string>();
      DSV4_CHECK(!shard.empty() && shard.find('/') == std::string::npos && shard != "." &&
                     shard != "..",
                 "checkpoint", where, ": shard '", shard, "' of tensor '", name,
                 "' must be a file name in the checkpoint folder");
      if (is_alias(name)) continue;
      auto it = shards.find(shard);
      if (it == shards.end()) {
        const fs::path shard_path = d / shard;
        DSV4_CHECK(fs::exists(shard_path), "checkpoint", where, " names shard '", shard,
                   "' for tensor '", name, "', but ", shard_path.string(), " does not exist");
        files_.push_back(std::make_unique<SafetensorsFile>(shard_path.string()));
        it = shards.emplace(shard, files_.back().get()).first;
      }
      DSV4_CHECK(it->second->has(name), "checkpoint", where, " names tensor '", name,
                 "' in shard '", shard, "', but that shard has no such tensor");
      where_[name] = it->second;
    }
  } else if (fs::exists(single_path)) {
    files_.push_back(std::make_unique<SafetensorsFile>(single_path.string()));
    for (const auto& [name, t] : files_.back()->tensors()) {
      if (!is_alias(name)) where_[name] = files_.back().get();
    }
  } else {
    throw Error("checkpoint", str("'", dir, "' has neither model.safetensors nor ",
                                  "model.safetensors.index.json"));
  }

  // Validate every quantized weight's scale now, before any tensor is read.
  for (const auto& [name, file] : where_) {
    const TensorInfo& w = file->get(name);
    const std::string s = scale_name(name);
    if (w.dtype == DType::F8_E4M3) {
      DSV4_CHECK(w.shape.size() == 2, "checkpoint", "tensor '", name,
                 "': an F8_E4M3 weight must be 2-D, found ", found(w));
      DSV4_CHECK(!s.empty() && has(s), "checkpoint", "tensor '", name,
                 "' is F8_E4M3 but its scale '", s.empty() ? name + ".scale" : s,
                 "' is missing");
      const Shape want{ceil_div(w.shape[0], kFp8Block), ceil_div(w.shape[1], kFp8Block)};
      const TensorInfo& sc = info(s);
      DSV4_CHECK(sc.dtype == DType::F8_E8M0 && sc.shape == want, "checkpoint", "scale '", s,
                 "' of F8_E4M3 weight ", shape_str(w.shape), ": expected F8_E8M0 ",
                 shape_str(want), " (128×128 blocks), found ", found(sc));
    } else if ((w.dtype == DType::I8 || w.dtype == DType::U8) && !s.empty() && has(s)) {
      DSV4_CHECK(w.shape.size() == 2, "checkpoint", "tensor '", name,
                 "': a packed FP4 weight must be 2-D, found ", found(w));
      const Shape want{w.shape[0], 2 * w.shape[1] / kFp4Block};
      const TensorInfo& sc = info(s);
      DSV4_CHECK((2 * w.shape[1]) % kFp4Block == 0 && sc.dtype == DType::F8_E8M0 &&
                     sc.shape == want,
                 "checkpoint", "scale '", s, "' of packed FP4 weight stored ", found(w),
                 ": expected F8_E8M0 ", shape_str(want), " ([rows, 2·stored cols / 32]), found ",
                 found(sc));
    }
  }
}

bool Checkpoint::has(const std::string& name) const { return where_.count(name) != 0; }
const TensorInfo* Checkpoint::find(const std::string& name) const { return has(name) ? &info(name) : nullptr; }

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& [name, file] : where_) out.push_back(name);
  return out;
}

const TensorInfo& Checkpoint::info(const std::string& name) const {
  auto it = where_.find(name);
  DSV4_CHECK(it != where_.end(), "checkpoint", "tensor '", name, "' not found in '", dir_, "'");
  return it->second->get(name);
}

Tensor Checkpoint::load(const std::string& name, const Shape& logical_shape) const {
  const TensorInfo& w = info(name);
  auto expect_shape = [&](const char* kind) {
    DSV4_CHECK(w.shape == logical_shape, "checkpoint", "tensor '", name, "': expected ", kind,
               " shape ", shape_str(logical_shape), ", found ", found(w));
  };
  switch (w.dtype) {
    case DType::F32:
    case DType::F16:
    case DType::BF16:
    case DType::F64:
      expect_shape("");
      return where_.at(name)->read_f32(name);

    case DType::F8_E8M0: {  // a scale read on its own: 2^(b − 127)
      expect_shape("");
      Tensor t(logical_shape);
      for (int64_t i = 0; i < t.numel(); ++i) t[i] = tables().e8m0[w.data[i]];
      return t;
    }

    case DType::F8_E4M3: {
      expect_shape("F8_E4M3");
      const int64_t rows = w.shape[0], cols = w.shape[1];
      const int64_t scale_cols = ceil_div(cols, kFp8Block);
      const uint8_t* scale = info(scale_name(name)).data;  // shape checked in the constructor
      const DecodeTables& lut = tables();
      Tensor t(logical_shape);
      // W[r, c] = e4m3(q[r, c]) · 2^(scale[r/128, c/128] − 127); products of a value and a
      // power of two are exact in float32.
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin)
      for (int64_t r = 0; r < rows; ++r) {
        const uint8_t* q = w.data + r * cols;
        const uint8_t* s = scale + (r / kFp8Block) * scale_cols;
        float* out = t.ptr() + r * cols;
        for (int64_t c = 0; c < cols; ++c) out[c] = lut.e4m3[q[c]] * lut.e8m0[s[c / kFp8Block]];
      }
      return t;
    }

    case DType::I8:
    case DType::U8: {
      // Packed FP4: stored [rows, cols/2] for a logical [rows, cols].
      const bool packed = logical_shape.size() == 2 && w.shape.size() == 2 &&
                          w.shape[0] == logical_shape[0] && 2 * w.shape[1] == logical_shape[1];
      DSV4_CHECK(packed, "checkpoint", "tensor '", name, "': expected shape ",
                 shape_str(logical_shape), " as packed FP4 stored I8 ",
                 logical_shape.size() == 2
                     ? shape_str({logical_shape[0], logical_shape[1] / 2})
                     : std::string("[rows, cols/2]"),
                 ", found ", found(w));
      const int64_t rows = logical_shape[0], cols = logical_shape[1];
      DSV4_CHECK(cols % kFp4Block == 0, "checkpoint", "tensor '", name, "': packed FP4 columns (",
                 cols, ") must be a multiple of 32");
      const std::string s = scale_name(name);
      DSV4_CHECK(!s.empty() && has(s), "checkpoint", "tensor '", name,
                 "' is packed FP4 but its scale '", s.empty() ? name + ".scale" : s,
                 "' is missing");
      const uint8_t* scale = info(s).data;  // [rows, cols/32], checked in the constructor
      const int64_t scale_cols = cols / kFp4Block;
      const DecodeTables& lut = tables();
      Tensor t(logical_shape);
      // Byte j of a row: element 2j in the low nibble, 2j+1 in the high nibble.
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin)
      for (int64_t r = 0; r < rows; ++r) {
        const uint8_t* q = w.data + r * (cols / 2);
        const uint8_t* sr = scale + r * scale_cols;
        float* out = t.ptr() + r * cols;
        for (int64_t j = 0; j < cols / 2; ++j) {
          const float sv = lut.e8m0[sr[(2 * j) / kFp4Block]];
          out[2 * j] = lut.e2m1[q[j] & 0x0f] * sv;
          out[2 * j + 1] = lut.e2m1[q[j] >> 4] * sv;
        }
      }
      return t;
    }

    default:
      throw Error("checkpoint", str("tensor '", name, "' is ", dtype_name(w.dtype),
                                    ", not a float weight (integer tensors are read with ",
                                    "load_int)"));
  }
}

std::vector<int64_t> Checkpoint::load_int(const std::string& name, const Shape& shape) const {
  const TensorInfo& t = info(name);
  DSV4_CHECK((t.dtype == DType::I64 || t.dtype == DType::I32) && t.shape == shape, "checkpoint",
             "tensor '", name, "': expected I64 or I32 ", shape_str(shape), ", found ", found(t));
  return where_.at(name)->read_i64(name);
}

namespace {

// mkdtemp on `prefix` + "XXXXXX"; returns the created folder.
std::string make_temp_dir(const std::string& prefix) {
  std::string templ = prefix + "XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  DSV4_CHECK(::mkdtemp(buf.data()) != nullptr, "checkpoint", "cannot create a folder '", templ,
             "': ", std::strerror(errno));
  return std::string(buf.data());
}

Shape int_tensor_shape(const std::string& name, const std::vector<int64_t>& v,
                       const ModelConfig& c) {
  if (ends_with(name, ".tid2eid")) {
    const Shape s{c.vocab_size, c.num_experts_per_tok};
    DSV4_CHECK(numel_of(s) == static_cast<int64_t>(v.size()), "checkpoint", "tensor '", name,
               "' has ", v.size(), " values, expected ", shape_str(s),
               " [vocab_size, num_experts_per_tok]");
    return s;
  }
  return Shape{static_cast<int64_t>(v.size())};
}

}  // namespace

void save_checkpoint(const std::string& dir, const ModelConfig& config,
                     const std::map<std::string, Tensor>& tensors,
                     const std::map<std::string, std::vector<int64_t>>& int_tensors,
                     const std::map<std::string, std::string>& extra_files) {
  std::string target = dir;
  while (target.size() > 1 && target.back() == '/') target.pop_back();
  DSV4_CHECK(!target.empty() && target != "/" && target != "." && target != "..", "checkpoint",
             "cannot save into '", dir, "': name a folder");

  // Check everything before touching the disk.
  std::map<std::string, TensorView> views;
  for (const auto& [name, t] : tensors) {
    DSV4_CHECK(!is_alias(name), "checkpoint", "tensor '", name,
               "' is an alias of embed/head; writers do not emit it");
    DSV4_CHECK(numel_of(t.shape) == t.numel(), "checkpoint", "tensor '", name, "' has ",
               t.numel(), " values for shape ", shape_str(t.shape));
    views[name] = TensorView{DType::F32, t.shape, t.ptr(), t.data.size() * sizeof(float)};
  }
  for (const auto& [name, v] : int_tensors) {
    DSV4_CHECK(!views.count(name), "checkpoint", "tensor '", name,
               "' is both a float and an integer tensor");
    views[name] = TensorView{DType::I64, int_tensor_shape(name, v, config), v.data(),
                             v.size() * sizeof(int64_t)};
  }
  for (const auto& [file, contents] : extra_files) {
    DSV4_CHECK(!file.empty() && file.find('/') == std::string::npos && file != "." &&
                   file != ".." && file != "config.json" && file != "model.safetensors" &&
                   file != "model.safetensors.index.json",
               "checkpoint", "extra file '", file,
               "' must be a plain file name other than the ones the checkpoint writes");
  }
  const std::string json_text = config_to_json(config).dump(2) + "\n";

  const fs::path target_path(target);
  fs::path parent = target_path.parent_path();
  if (parent.empty()) parent = ".";
  std::error_code ec;
  fs::create_directories(parent, ec);
  DSV4_CHECK(!ec, "checkpoint", "cannot create '", parent.string(), "': ", ec.message());
  const bool replacing = fs::exists(target_path);
  if (replacing) {
    // Guard against replacing a folder that is not a checkpoint (a home folder, a source tree).
    DSV4_CHECK(fs::is_directory(target_path), "checkpoint", "'", target,
               "' exists and is not a folder");
    DSV4_CHECK(fs::is_empty(target_path) || fs::exists(target_path / "config.json"),
               "checkpoint", "refusing to replace '", target,
               "': it is not empty and holds no config.json (not a checkpoint folder)");
  }

  const std::string tmp = make_temp_dir(target + ".tmp-");
  try {
    ::chmod(tmp.c_str(), 0755);
    write_file_synced((fs::path(tmp) / "config.json").string(), json_text);
    write_safetensors_views((fs::path(tmp) / "model.safetensors").string(), views,
                            {{"format", "pt"}});
    for (const auto& [file, contents] : extra_files) {
      write_file_synced((fs::path(tmp) / file).string(), contents);
    }
    fsync_dir(tmp);
    if (replacing) {
      // rename(2) replaces an empty folder: move the old one onto a fresh empty name.
      const std::string old = make_temp_dir(target + ".old-");
      rename_path(target, old);
      try {
        rename_path(tmp, target);
      } catch (...) {
        rename_path(old, target);
        throw;
      }
      fsync_dir(parent.string());
      fs::remove_all(old, ec);  // the new checkpoint is in place; a leftover is harmless
    } else {
      rename_path(tmp, target);
      fsync_dir(parent.string());
    }
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

}  // namespace dsv4
