// The training optimizer (training.md §2–3): Muon for the tensor table's Muon group, AdamW
// for the AdamW (decay) and AdamWNoDecay groups, nothing for GateBias (updated from expert
// loads, aux-loss-free) and Fixed (tid2eid). Global-norm clipping, the learning-rate
// schedule, and the state as named tensors for checkpoints.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/config.h"
#include "model/tensor_table.h"
#include "model/weights.h"
#include "train/adamw.h"
#include "train/muon.h"

namespace dsv4 {

// Learning rate of step s (0-based; n = s + 1 steps done after it), W warm-up, C constant,
// D decay steps:  peak·n/W for n <= W;  peak for n <= W + C;  then cosine from peak down to
// floor_ratio·peak, reached at n = W + C + D and kept after. D = 0: constant after warm-up.
struct LrSchedule {
  float peak = 2.7e-4f;        // V4 Flash
  int64_t warmup_steps = 2000;  // V4
  int64_t constant_steps = 0;
  int64_t decay_steps = 0;
  float floor_ratio = 0.1f;    // decays to one tenth

  float at(int64_t step) const;
  // Whether step s belongs to the decay phase (the MTP loss weight drops there, training.md §1).
  bool decaying(int64_t step) const {
    return decay_steps > 0 && step + 1 > warmup_steps + constant_steps;
  }
  void validate() const;  // throws naming the bad field
};

struct OptimizerConfig {
  LrSchedule schedule;
  MuonConfig muon;
  AdamWConfig adamw;
  float clip_norm = 1.0f;     // global gradient norm limit; <= 0 turns clipping off
  float bias_gamma = 0.001f;  // aux-loss-free bias step γ (V4)
};

// √(Σ g²) over every tensor of `grads` (accumulated in double, in name order).
double grad_global_norm(const std::map<std::string, Tensor>& grads);

// Aux-loss-free balancing of one MoE layer: bias_e += γ·sign(mean_load − load_e), with
// load [E] the number of tokens routed to each expert in the step.
void update_gate_bias(Tensor& bias, const std::vector<int64_t>& load, float gamma);

class Optimizer {
 public:
  // Groups come from the table; every float tensor of a trainable group gets its state.
  Optimizer(const std::vector<TensorSpec>& table, const OptimizerConfig& cfg);
  Optimizer(const ModelConfig& model, const OptimizerConfig& cfg)
      : Optimizer(tensor_table(model), cfg) {}

  // One step. `grads` holds one tensor per Muon/AdamW parameter, by the same name (entries
  // for GateBias parameters are ignored); they are clipped in place to cfg.clip_norm. Returns
  // the pre-clip global norm. A non-finite norm skips the step entirely (parameters, moments
  // and step count unchanged) so the caller can react to it.
  double step(Params& params, std::map<std::string, Tensor>& grads);

  // The aux-loss-free update of every GateBias parameter of the table; `expert_loads` maps
  // each gate.bias name to its per-expert token counts for the step.
  void update_gate_biases(Params& params,
                          const std::map<std::string, std::vector<int64_t>>& expert_loads) const;

  int64_t steps_done() const { return step_; }
  float next_lr() const { return cfg_.schedule.at(step_); }
  ParamGroup group(const std::string& name) const;  // throws for a name not in the table
  const OptimizerConfig& config() const { return cfg_; }

  // The state as named tensors: "m.<name>" (Muon momentum or AdamW first moment),
  // "v.<name>" (AdamW second moment), "step" [1]. load_state requires exactly these names
  // and shapes, so a resumed run continues bit-identically.
  std::map<std::string, Tensor> state() const;
  void load_state(const std::map<std::string, Tensor>& state);

 private:
  struct Slot {
    ParamGroup group;
    Shape shape;
    Tensor m, v;  // v only for the AdamW groups
  };
  OptimizerConfig cfg_;
  std::map<std::string, ParamGroup> groups_;  // every table entry
  std::map<std::string, Slot> slots_;         // the trainable ones
  int64_t step_ = 0;
};

}  // namespace dsv4
