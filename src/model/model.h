// The whole DeepSeek-V4 model (model.md §2, §10, §11): embedding into n streams, the
// blocks, HcHead, the final norm and the head; the MTP block; batched prefill and
// decode of chunks with per-sequence state.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/config.h"
#include "model/block.h"
#include "model/state.h"
#include "model/weights.h"

namespace dsv4 {

// One sequence's chunk: its state and the ids of the next T tokens.
struct Chunk {
  SequenceState* state;
  std::vector<int64_t> ids;
};

// Per-block intermediates, recorded when asked (for `dsv4 parity --trace`).
struct ForwardTrace {
  std::vector<Tensor> hidden;      // per main block: streams after it [rows, n, D]
  std::vector<TopkTrace> topk;     // per main block: indexer selections (empty for non-CSA)
};

struct ForwardOut {
  Tensor logits;   // [rows, V], rows = chunks concatenated in order
  Tensor streams;  // [rows, n, D]: final streams before HcHead (when asked)
};

class Model {
 public:
  Model(ModelConfig config, Params params);
  static Model load(const std::string& dir);

  const ModelConfig& config() const { return config_; }
  const Params& params() const { return params_; }
  Params& params() { return params_; }
  SequenceState new_state() const { return SequenceState::create(config_); }

  // Runs each chunk after what its state has seen (a prefill when the state is new,
  // a decode step for one token); positions continue from state->pos.
  ForwardOut forward(const std::vector<Chunk>& batch, bool want_streams = false, ForwardTrace* trace = nullptr) const;

  // The MTP block (index i) over chunks: `streams` [rows, n, D] are the main model's
  // final streams of the same rows, the chunks' ids its token inputs; uses state->mtp.
  ForwardOut mtp_forward(const std::vector<Chunk>& batch, const Tensor& streams, int i = 0) const;

 private:
  Tensor head_logits(const Tensor& X, const HcWeights& hc, const Tensor& norm) const;
  Tensor embed_rows(const std::vector<Chunk>& batch, std::vector<int64_t>& ids) const;

  ModelConfig config_;
  Params params_;
  ModelWeights w_;
  RopeTables rope_;
};

}  // namespace dsv4
