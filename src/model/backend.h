// The narrow interface through which the CLI, parity and the benchmarks run the forward pass
// on a device (STYLE.md, "Backends behind one narrow interface"). Sequences are handles;
// the CPU backend wraps Model and SequenceState (the oracle), the CUDA backend keeps weights
// and caches on the GPU. A build without CUDA compiles everything and answers a request for
// the CUDA backend with an Error that says how to get one.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/model.h"

namespace dsv4 {

enum class Device { Cpu, Cuda };
Device parse_device(const std::string& s);  // "cpu" | "cuda"
const char* device_name(Device d);

// F32:  float32 weights, products and caches: the spec's definition (the parity mode).
// Fast: the checkpoint's storage on the GPU (bf16, its inputs split into two bf16 halves; FP8
//       with its 128×128 block scales and activations rounded to e4m3 in 1×128 blocks; FP4
//       experts dequantized on the fly, bf16 inputs; float32 where stored so and for the MoE
//       gate), float32 accumulation, compact caches. Checked against F32 by tolerance.
enum class Precision { F32, Fast };
Precision parse_precision(const std::string& s);  // "f32" | "fast"
const char* precision_name(Precision p);

struct SeqChunk {
  int seq;                   // a handle from new_sequence
  std::vector<int64_t> ids;  // the next tokens of that sequence
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const ModelConfig& config() const = 0;
  virtual std::string describe() const = 0;
  // A new, empty sequence for up to max_tokens tokens (main model and MTP block alike).
  virtual int new_sequence(int64_t max_tokens) = 0;
  virtual void free_sequence(int seq) = 0;
  // Runs each chunk after what its sequence has seen (model.md §11); logits [rows, V] with the
  // chunks' rows concatenated; streams [rows, n, D] when asked.
  virtual ForwardOut forward(const std::vector<SeqChunk>& batch, bool want_streams = false,
                             ForwardTrace* trace = nullptr) = 0;
  // The logits of each chunk's last token only: [chunks, V], what generation reads. This
  // default slices forward()'s; the CUDA backend runs the LM head on those rows alone and copies
  // only them to the host.
  virtual ForwardOut forward_last(const std::vector<SeqChunk>& batch);
  // The MTP block over chunks, on the main model's final streams [rows, n, D] of the same rows.
  virtual ForwardOut mtp_forward(const std::vector<SeqChunk>& batch, const Tensor& streams) = 0;
  // Bytes the sequence's decoding state holds now (on the backend's device).
  virtual size_t sequence_bytes(int seq) const = 0;
};

// The backend for `device`; `checkpoint_dir` (optional) lets the fast CUDA path read the
// stored FP8/FP4 weights and scales instead of re-rounding the float32 ones.
std::unique_ptr<Backend> make_backend(Device device, const Model& model, Precision precision,
                                      const std::string& checkpoint_dir = "");
// Whether this build has the CUDA backend.
bool cuda_built();

}  // namespace dsv4
