#include "model/backend.h"

#include <algorithm>
#include <map>

#include "model/cuda_model.h"

namespace dsv4 {

Device parse_device(const std::string& s) {
  if (s == "cpu") return Device::Cpu;
  if (s == "cuda") return Device::Cuda;
  throw Error("device", str("unknown device '", s, "' (use cpu or cuda)"));
}
const char* device_name(Device d) { return d == Device::Cpu ? "cpu" : "cuda"; }

Precision parse_precision(const std::string& s) {
  if (s == "f32") return Precision::F32;
  if (s == "fast") return Precision::Fast;
  throw Error("precision", str("unknown precision '", s, "' (use f32 or fast)"));
}
const char* precision_name(Precision p) { return p == Precision::F32 ? "f32" : "fast"; }

ForwardOut Backend::forward_last(const std::vector<SeqChunk>& batch) {
  const ForwardOut all = forward(batch);
  const int64_t V = config().vocab_size;
  ForwardOut out;
  out.logits = Tensor({static_cast<int64_t>(batch.size()), V});
  int64_t row = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    row += static_cast<int64_t>(batch[i].ids.size());
    std::copy(all.logits.ptr() + (row - 1) * V, all.logits.ptr() + row * V, out.logits.ptr() + i * V);
  }
  return out;
}

namespace {

// The CPU oracle behind the interface: Model plus one SequenceState per handle.
class CpuBackend : public Backend {
 public:
  explicit CpuBackend(const Model& m) : m_(m) {}
  const ModelConfig& config() const override { return m_.config(); }
  std::string describe() const override { return "cpu f32"; }
  int new_sequence(int64_t) override {
    states_.emplace(next_, m_.new_state());
    return next_++;
  }
  void free_sequence(int seq) override { states_.erase(seq); }
  ForwardOut forward(const std::vector<SeqChunk>& batch, bool want_streams, ForwardTrace* trace) override {
    return m_.forward(chunks(batch), want_streams, trace);
  }
  ForwardOut mtp_forward(const std::vector<SeqChunk>& batch, const Tensor& streams) override {
    return m_.mtp_forward(chunks(batch), streams);
  }
  size_t sequence_bytes(int seq) const override { return state(seq).bytes(); }

 private:
  SequenceState& state(int seq) const {
    auto it = states_.find(seq);
    DSV4_CHECK(it != states_.end(), "backend", "no sequence ", seq);
    return it->second;
  }
  std::vector<Chunk> chunks(const std::vector<SeqChunk>& batch) const {
    std::vector<Chunk> out;
    for (const SeqChunk& c : batch) out.push_back({&state(c.seq), c.ids});
    return out;
  }
  const Model& m_;
  mutable std::map<int, SequenceState> states_;
  int next_ = 0;
};

}  // namespace

std::unique_ptr<Backend> make_backend(Device device, const Model& model, Precision precision,
                                      const std::string& checkpoint_dir) {
  if (device == Device::Cuda) return make_cuda_backend(model, precision, checkpoint_dir);
  DSV4_CHECK(precision == Precision::F32, "device",
             "the cpu backend computes in float32 only; --precision fast needs --device cuda");
  return std::make_unique<CpuBackend>(model);
}

bool cuda_built() {
#ifdef DSV4_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace dsv4
