// Health monitors of a training run (docs/train.md), measured by a forward pass of their own
// over a few packed rows, as the training step's forward runs them:
//  - mHC composite amax gain (mHC paper): per token, the product over every sub-layer of the
//    residual mixing matrices Cᵀ (X' = Cᵀ X + post·o); forward gain = the largest absolute
//    row sum, backward gain = the largest absolute column sum; the max over tokens. 1 for
//    exactly doubly stochastic matrices; unconstrained hyper-connections blow up.
//  - indexer recall per CSA layer: the share of the dense attention mass over compressed
//    entries (summed over heads, L1-normalized) that the indexer's top-K keeps; mean over
//    the rows that have more than K entries.
//  - expert load per MoE layer: max / mean tokens per routed expert (1 = balanced).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/config.h"
#include "model/weights.h"
#include "train/data_loader.h"
#include "train/train_graph.h"

namespace dsv4 {

struct HealthStats {
  double mhc_gain_fwd = 0, mhc_gain_bwd = 0;
  std::vector<std::string> recall_layers;  // "layers.1." ...: the CSA layers
  std::vector<double> indexer_recall;      // per CSA layer; NaN when no row has more than K entries
};

// Rows of `rows` are packed documents; `phase` the training phase (dense attention is
// measured for Dense and IndexerWarmup, the top-K attention for Sparse).
HealthStats health_pass(const ModelConfig& c, const Params& params, const PackedRows& rows, AttnPhase phase);

// max / mean of a load vector (1 when every expert got the same; 0 for no tokens).
double load_imbalance(const std::vector<int64_t>& load);

}  // namespace dsv4
