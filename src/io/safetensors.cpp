#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/durable_file.h"

namespace dsv4 {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; this reader copies it as is");

namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;  // checkpoint.md: "100 MB"

template <typename T>
T load_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// A JSON value that is a non-negative integer, or an error naming `what`.
uint64_t as_u64(const nlohmann::json& v, const std::string& where, const std::string& what) {
  DSV4_CHECK(v.is_number_unsigned(), "safetensors", where, what,
             " must be a non-negative integer, found ", v.dump());
  return v.get<uint64_t>();
}

struct Mapping {
  void* addr = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (addr) ::munmap(addr, size);
  }
};

// Parses one tensor entry of the header; `where` is "<path>: tensor '<name>': ".
TensorInfo parse_entry(const std::string& name, const nlohmann::json& e, const std::string& where,
                       uint64_t data_size) {
  DSV4_CHECK(e.is_object(), "safetensors", where, "entry must be an object with dtype, shape and ",
             "data_offsets, found ", e.dump());
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    DSV4_CHECK(e.contains(key), "safetensors", where, "entry has no '", key, "'");
  }
  TensorInfo info;
  info.name = name;
  const auto& dt = e["dtype"];
  DSV4_CHECK(dt.is_string(), "safetensors", where, "dtype must be a string, found ", dt.dump());
  DSV4_CHECK(parse_dtype(dt.get<std::string>(), &info.dtype), "safetensors", where,
             "unknown dtype '", dt.get<std::string>(), "'");

  const auto& shape = e["shape"];
  DSV4_CHECK(shape.is_array(), "safetensors", where, "shape must be an array, found ",
             shape.dump());
  uint64_t count = 1;
  for (const auto& d : shape) {
    uint64_t dim = as_u64(d, where, "shape entry");
    DSV4_CHECK(dim <= static_cast<uint64_t>(INT64_MAX), "safetensors", where, "shape entry ",
               dim, " is too large");
    DSV4_CHECK(!__builtin_mul_overflow(count, dim, &count), "safetensors", where, "shape ",
               shape.dump(), " overflows");
    info.shape.push_back(static_cast<int64_t>(dim));
  }
  uint64_t expected_bytes = 0;
  DSV4_CHECK(!__builtin_mul_overflow(count, static_cast<uint64_t>(dtype_size(info.dtype)),
                                     &expected_bytes),
             "safetensors", where, "shape ", shape.dump(), " overflows");

  const auto& off = e["data_offsets"];
  DSV4_CHECK(off.is_array() && off.size() == 2, "safetensors", where,
             "data_offsets must be [begin, end], found ", off.dump());
  info.begin = as_u64(off[0], where, "data_offsets begin");
  info.end = as_u64(off[1], where, "data_offsets end");
  DSV4_CHECK(info.begin <= info.end, "safetensors", where, "offsets [", info.begin, ", ",
             info.end, "] are reversed");
  DSV4_CHECK(info.end <= data_size, "safetensors", where, "offsets [", info.begin, ", ",
             info.end, "] exceed data size ", data_size);
  DSV4_CHECK(info.nbytes() == expected_bytes, "safetensors", where, "byte length ",
             info.nbytes(), " != ", expected_bytes, " (shape ", shape_str(info.shape), " of ",
             dtype_name(info.dtype), ")");
  return info;
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  const std::string p = path + ": ";
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  DSV4_CHECK(fd >= 0, "safetensors", p, "cannot open: ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error("safetensors", p + "not a regular file");
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    throw Error("safetensors", str(p, "file is ", file_size,
                                   " bytes, too short for the 8-byte header length"));
  }
  Mapping m;
  m.size = static_cast<size_t>(file_size);
  void* addr = ::mmap(nullptr, m.size, PROT_READ, MAP_PRIVATE, fd, 0);
  int map_errno = errno;
  ::close(fd);
  DSV4_CHECK(addr != MAP_FAILED, "safetensors", p, "mmap failed: ", std::strerror(map_errno));
  m.addr = addr;
  const uint8_t* base = static_cast<const uint8_t*>(addr);

  const uint64_t n = load_le<uint64_t>(base);
  DSV4_CHECK(n <= kMaxHeaderBytes, "safetensors", p, "header length ", n,
             " exceeds the 100 MB limit (not a safetensors file?)");
  DSV4_CHECK(n <= file_size - 8, "safetensors", p, "header length ", n, " runs past the end of ",
             "the file (", file_size, " bytes; truncated?)");
  const uint64_t data_size = file_size - 8 - n;
  const uint8_t* data = base + 8 + n;

  // Duplicate top-level names would silently shadow each other: reject them while parsing.
  std::set<std::string> seen;
  std::string duplicate;
  auto on_event = [&](int depth, nlohmann::json::parse_event_t ev, nlohmann::json& v) {
    if (depth == 1 && ev == nlohmann::json::parse_event_t::key && v.is_string()) {
      if (!seen.insert(v.get<std::string>()).second && duplicate.empty()) {
        duplicate = v.get<std::string>();
      }
    }
    return true;
  };
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(base + 8, base + 8 + n, on_event);
  } catch (const nlohmann::json::exception& e) {
    throw Error("safetensors", str(p, "header is not valid JSON: ", e.what()));
  }
  DSV4_CHECK(header.is_object(), "safetensors", p, "header must be a JSON object, found ",
             header.type_name());
  DSV4_CHECK(duplicate.empty(), "safetensors", p, "tensor '", duplicate,
             "' appears twice in the header");

  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      DSV4_CHECK(entry.is_object(), "safetensors", p, "__metadata__ must be an object, found ",
                 entry.type_name());
      for (const auto& [k, v] : entry.items()) {
        DSV4_CHECK(v.is_string(), "safetensors", p, "__metadata__ value of '", k,
                   "' must be a string, found ", v.dump());
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    TensorInfo info = parse_entry(name, entry, str(p, "tensor '", name, "': "), data_size);
    info.data = data + info.begin;
    tensors_.emplace(name, std::move(info));
  }

  // Overlap check: sorted by begin, each non-empty tensor starts at or after the end of
  // the previous non-empty one. (Gaps are allowed.)
  std::vector<const TensorInfo*> by_offset;
  for (const auto& [name, info] : tensors_) {
    if (info.nbytes() > 0) by_offset.push_back(&info);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo& a = *by_offset[i - 1];
    const TensorInfo& b = *by_offset[i];
    DSV4_CHECK(b.begin >= a.end, "safetensors", p, "tensors '", a.name, "' [", a.begin, ", ",
               a.end, "] and '", b.name, "' [", b.begin, ", ", b.end, "] overlap");
  }

  map_ = m.addr;
  map_size_ = m.size;
  m.addr = nullptr;  // now owned by this object
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, map_size_);
}

const TensorInfo& SafetensorsFile::get(const std::string& name) const {
  auto it = tensors_.find(name);
  DSV4_CHECK(it != tensors_.end(), "safetensors", path_, ": no tensor '", name, "'");
  return it->second;
}

Tensor SafetensorsFile::read_f32(const std::string& name) const {
  const TensorInfo& info = get(name);
  Tensor t(info.shape);
  const int64_t n = t.numel();
  const uint8_t* src = info.data;
  float* dst = t.ptr();
  switch (info.dtype) {
    case DType::F32:
      if (n > 0) std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      break;
    case DType::F64:
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(load_le<double>(src + 8 * i));
      break;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(load_le<uint16_t>(src + 2 * i));
      break;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(load_le<uint16_t>(src + 2 * i));
      break;
    default:
      throw Error("safetensors", str(path_, ": tensor '", name, "' is ", dtype_name(info.dtype),
                                     ", expected a float dtype (F32, F16, BF16, F64)"));
  }
  return t;
}

std::vector<int64_t> SafetensorsFile::read_i64(const std::string& name, Shape* shape) const {
  const TensorInfo& info = get(name);
  const int64_t n = numel_of(info.shape);
  std::vector<int64_t> out(static_cast<size_t>(n));
  const uint8_t* src = info.data;
  switch (info.dtype) {
    case DType::I64:
      if (n > 0) std::memcpy(out.data(), src, static_cast<size_t>(n) * 8);
      break;
    case DType::I32:
      for (int64_t i = 0; i < n; ++i) out[i] = load_le<int32_t>(src + 4 * i);
      break;
    case DType::I16:
      for (int64_t i = 0; i < n; ++i) out[i] = load_le<int16_t>(src + 2 * i);
      break;
    case DType::I8:
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<int8_t>(src[i]);
      break;
    case DType::U8:
      for (int64_t i = 0; i < n; ++i) out[i] = src[i];
      break;
    default:
      throw Error("safetensors", str(path_, ": tensor '", name, "' is ", dtype_name(info.dtype),
                                     ", expected an integer dtype (I64, I32, I16, I8, U8)"));
  }
  if (shape) *shape = info.shape;
  return out;
}

TensorBlob blob_f32(const Tensor& t) {
  DSV4_CHECK(static_cast<int64_t>(t.data.size()) == numel_of(t.shape), "safetensors",
             "blob_f32: ", t.data.size(), " values for shape ", shape_str(t.shape));
  TensorBlob b;
  b.dtype = DType::F32;
  b.shape = t.shape;
  b.bytes.resize(t.data.size() * 4);
  if (!t.data.empty()) std::memcpy(b.bytes.data(), t.data.data(), b.bytes.size());
  return b;
}

TensorBlob blob_i64(const std::vector<int64_t>& v, Shape shape) {
  DSV4_CHECK(static_cast<int64_t>(v.size()) == numel_of(shape), "safetensors", "blob_i64: ",
             v.size(), " values for shape ", shape_str(shape));
  TensorBlob b;
  b.dtype = DType::I64;
  b.shape = std::move(shape);
  b.bytes.resize(v.size() * 8);
  if (!v.empty()) std::memcpy(b.bytes.data(), v.data(), b.bytes.size());
  return b;
}

void write_safetensors(const std::string& path, const std::map<std::string, TensorBlob>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::map<std::string, TensorView> views;
  for (const auto& [name, blob] : tensors) {
    views[name] = TensorView{blob.dtype, blob.shape, blob.bytes.data(), blob.bytes.size()};
  }
  write_safetensors_views(path, views, metadata);
}

void write_safetensors_views(const std::string& path,
                             const std::map<std::string, TensorView>& tensors,
                             const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  std::vector<std::pair<const void*, size_t>> parts;
  uint64_t offset = 0;
  for (const auto& [name, view] : tensors) {
    DSV4_CHECK(name != "__metadata__", "safetensors", path, ": '__metadata__' is reserved");
    for (int64_t d : view.shape) {
      DSV4_CHECK(d >= 0, "safetensors", path, ": tensor '", name, "' has shape ",
                 shape_str(view.shape));
    }
    const uint64_t expected =
        static_cast<uint64_t>(numel_of(view.shape)) * static_cast<uint64_t>(dtype_size(view.dtype));
    DSV4_CHECK(view.nbytes == expected, "safetensors", path, ": tensor '", name, "' has ",
               view.nbytes, " bytes, shape ", shape_str(view.shape), " of ",
               dtype_name(view.dtype), " needs ", expected);
    header[name] = {{"dtype", dtype_name(view.dtype)},
                    {"shape", view.shape},
                    {"data_offsets", {offset, offset + expected}}};
    offset += expected;
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;

  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data section 8-byte aligned
  const uint64_t n = text.size();
  uint8_t len_le[8];
  std::memcpy(len_le, &n, 8);
  parts.emplace_back(len_le, 8);
  parts.emplace_back(text.data(), text.size());
  for (const auto& [name, view] : tensors) parts.emplace_back(view.data, view.nbytes);

  const std::string tmp = path + ".tmp";
  try {
    write_file_synced(tmp, parts);
    rename_path(tmp, path);
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw;
  }
  fsync_dir(std::filesystem::path(path).parent_path().string());
}

}  // namespace dsv4
