// The training graph (training.md §1, §4): a full-sequence forward over a batch [B, T] of
// token ids that keeps (or recomputes, see TrainOptions::recompute and docs/training.md)
// what the backward needs, the losses, and the backward into one gradient per parameter,
// by the tensor table's names. The forward is the inference forward of model.md (sparse
// phase, quantization simulations on), run over whole sequences; FP8/FP4 simulations are
// straight-through and top-k choices (indexer, MoE) are not differentiated.
//
// Templated on the scalar: float is the training path, double the gradient checks' oracle.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/config.h"
#include "model/weights.h"

namespace dsv4 {

// Which compressed entries a CSA layer (m = 4) attends (training.md §4).
enum class AttnPhase {
  Dense,           // every existing entry, like HCA; the indexer is not run
  IndexerWarmup,   // dense attention; only the indexer learns, from the dense KL target
  Sparse,          // the indexer's top-K (the inference semantics); KL on the selected set
};

struct TrainOptions {
  AttnPhase phase = AttnPhase::Sparse;
  bool quant_sim = true;         // FP8/FP4 simulations in the forward; off for finite differences
  bool recompute = true;         // keep only block inputs, recompute a block's internals in backward
  float mtp_weight = 0.3f;       // training.md §1 (0.1 once the learning rate decays)
  float balance_weight = 0.0f;   // sequence-wise balance loss (1e-4 in V4 training)
  float indexer_weight = 0.0f;   // indexer KL loss; > 0 gives the indexer tensors a gradient
};

// Token ids [B, T]; every row is one sequence at positions 0..T−1, or, with seq_lens, the
// documents packed into it: each a sequence of its own (positions restart at 0; attention,
// compressor blocks, the indexer, the targets and MTP never cross a boundary), exactly as if
// it were a row by itself.
struct TrainBatch {
  int64_t B = 0, T = 0;
  std::vector<int64_t> ids;
  std::vector<std::vector<int64_t>> seq_lens;  // per row: its sequences' lengths, summing to T
};

struct TrainLosses {
  double total = 0;    // main + mtp_weight·mtp + balance_weight·balance + indexer_weight·indexer
  double main = 0;     // CE(logits[:, t], ids[:, t+1]), mean over t < T−1
  double mtp = 0;      // CE(mtp_logits[:, t], ids[:, t+2]), mean over t < T−2
  double balance = 0;  // Σ over learned-routing MoE layers of the mean over sequences of Σ_e f_e P_e
  double indexer = 0;  // Σ over CSA layers of the mean over queries of KL(p_main ‖ p_index)
};

// Activation memory of one step, from the tapes' own sizes (bytes).
struct TrainMemory {
  int64_t tokens = 0;
  size_t kept_bytes = 0;       // held from the forward until the backward: block inputs (+ tapes if kept)
  size_t transient_bytes = 0;  // the largest block tape alive beside them (recomputed or MTP)
  size_t peak_bytes() const { return kept_bytes + transient_bytes; }
};

// Parameters seen as name → const S* (float: the Params themselves; double: a converted copy).
template <class S>
struct ParamView {
  std::map<std::string, const S*> f;
  const std::map<std::string, std::vector<int64_t>>* i64 = nullptr;
  const S* at(const std::string& name) const;
};
ParamView<float> view_of(const Params& p);

template <class S>
struct TrainResult {
  TrainLosses loss;
  std::map<std::string, std::vector<S>> grads;  // by parameter name; see grad_names
  std::map<std::string, std::vector<int64_t>> expert_loads;  // gate.bias name → tokens per expert
  TrainMemory memory;
  std::vector<S> logits;  // [B·T, V] main logits, only when train_step is asked to keep them
};

// The parameters that receive a gradient under `opt`: every trainable tensor of the table,
// except the indexer's unless its KL loss is on (indexer_weight > 0, phase not Dense);
// in IndexerWarmup only the indexer's. Never gate.bias or tid2eid.
std::vector<std::string> grad_names(const ModelConfig& c, const TrainOptions& opt);

// One forward (and backward when `backward`) over the batch.
template <class S>
TrainResult<S> train_step(const ModelConfig& c, const ParamView<S>& params, const TrainBatch& batch,
                          const TrainOptions& opt, bool backward, bool keep_logits = false);

// The activation memory of train_step (float, with backward) for a batch [B, T] under `opt`,
// from the sizes the tapes allocate; it equals the TrainMemory a step reports (tested), and
// lets docs/training.md state the cost of configurations too large to run here.
TrainMemory activation_footprint(const ModelConfig& c, const TrainOptions& opt, int64_t B, int64_t T);

// The float path with the gradients as Tensors of the parameters' shapes.
struct Gradients {
  TrainLosses loss;
  std::map<std::string, Tensor> grads;
  std::map<std::string, std::vector<int64_t>> expert_loads;
  TrainMemory memory;
};
Gradients compute_gradients(const ModelConfig& c, const Params& params, const TrainBatch& batch,
                            const TrainOptions& opt);
// The same computed in float64 (parameters converted), the gradients rounded to float32.
Gradients compute_gradients_f64(const ModelConfig& c, const Params& params, const TrainBatch& batch,
                                const TrainOptions& opt);

}  // namespace dsv4
