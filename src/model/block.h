// One DeepSeek-V4 block over a batch of sequence chunks (model.md §3, §5–§9).
// Rows of all chunks are stacked: token-wise steps (projections, norms, mHC, MoE)
// run on all rows at once; attention, compressors and the indexer per sequence.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "io/config.h"
#include "model/state.h"
#include "model/weights.h"

namespace dsv4 {

// The RoPE frequencies of a model: window-only layers and compressed layers (YaRN).
struct RopeTables {
  std::vector<float> window;      // base rope_theta, no YaRN
  std::vector<float> compressed;  // base compress_rope_theta, YaRN when configured
  static RopeTables make(const ModelConfig& c);
  const std::vector<float>& for_ratio(int m) const { return m > 0 ? compressed : window; }
};

// A contiguous run of rows [row0, row0 + T) of one sequence at positions pos0 + i.
struct Segment {
  AttnState* state;
  int64_t row0, T, pos0;
};

// Per-row indexer selections of one CSA layer, for tracing (entry indices, ascending).
using TopkTrace = std::vector<std::vector<int32_t>>;

// a [rows, D] (normed) -> out [rows, D]. Updates each segment's state.
void attention_forward(const ModelConfig& c, const AttnWeights& w, int m, const RopeTables& rope,
                       const Tensor& a, const std::vector<Segment>& segs, Tensor& out, TopkTrace* topk);

// a [rows, D] (normed), ids [rows] -> out [rows, D].
void moe_forward(const ModelConfig& c, const MoeWeights& w, const Tensor& a, const int64_t* ids, Tensor& out);

// X [rows, n, D] updated in place.
void block_forward(const ModelConfig& c, const BlockWeights& w, const RopeTables& rope, Tensor& X,
                   const std::vector<Segment>& segs, const int64_t* ids, TopkTrace* topk);

}  // namespace dsv4
