// safetensors: 8-byte little-endian header length N, N bytes of JSON
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then data
// (offsets relative to the end of the header). The reader memory-maps the file and
// validates it completely before any tensor is read (checkpoint.md, "The safetensors
// file format"); the writer writes the same format atomically.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"

namespace dsv4 {

struct TensorInfo {
  std::string name;
  DType dtype;
  Shape shape;          // the stored shape
  uint64_t begin = 0;   // byte offsets into the data section
  uint64_t end = 0;
  const uint8_t* data = nullptr;  // into the mapping
  uint64_t nbytes() const { return end - begin; }
};

class SafetensorsFile {
 public:
  // Maps and validates `path`; throws dsv4::Error("safetensors", ...) naming the file
  // and, where it applies, the tensor.
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  const TensorInfo& get(const std::string& name) const;  // throws naming the missing tensor
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // Reads a floating tensor (F32, F16, BF16, F64) as float32, shape checked when given.
  Tensor read_f32(const std::string& name) const;
  // Reads an integer tensor (I64, I32, I16, I8, U8) as int64.
  std::vector<int64_t> read_i64(const std::string& name, Shape* shape = nullptr) const;

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// A tensor to write: raw little-endian bytes of `dtype` with `shape`.
struct TensorBlob {
  DType dtype = DType::F32;
  Shape shape;
  std::vector<uint8_t> bytes;
};
TensorBlob blob_f32(const Tensor& t);
TensorBlob blob_i64(const std::vector<int64_t>& v, Shape shape);

// Writes a safetensors file: to `path + ".tmp"`, fsync, rename (atomic).
void write_safetensors(const std::string& path, const std::map<std::string, TensorBlob>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// The same without copying: each view points at `nbytes` little-endian bytes of `dtype`
// that stay alive during the call.
struct TensorView {
  DType dtype = DType::F32;
  Shape shape;
  const void* data = nullptr;
  size_t nbytes = 0;
};
void write_safetensors_views(const std::string& path,
                             const std::map<std::string, TensorView>& tensors,
                             const std::map<std::string, std::string>& metadata = {});

}  // namespace dsv4
