// The training graph as the trainer sees it: one forward (and backward) over packed rows.
// This is the only place that turns the loader's rows into the graph's batch.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/config.h"
#include "model/weights.h"
#include "train/data_loader.h"
#include "train/train_graph.h"

namespace dsv4 {

struct GraphResult {
  TrainLosses loss;
  std::map<std::string, Tensor> grads;                       // empty without backward
  std::map<std::string, std::vector<int64_t>> expert_loads;  // gate.bias name → tokens per expert
};

// Each row's segments (packed documents) become sequences of their own (TrainBatch::seq_lens).
GraphResult run_graph(const ModelConfig& c, const Params& params, const PackedRows& rows, const TrainOptions& opt,
                      bool backward);

}  // namespace dsv4
