#include "train/optimizer.h"

#include <cmath>
#include <numbers>

namespace dsv4 {

float LrSchedule::at(int64_t step) const {
  DSV4_CHECK(step >= 0, "lr schedule", "step ", step, " must be >= 0");
  const int64_t n = step + 1;
  if (n <= warmup_steps) return static_cast<float>(static_cast<double>(peak) * n / warmup_steps);
  const int64_t into_decay = n - warmup_steps - constant_steps;
  if (into_decay <= 0 || decay_steps == 0) return peak;
  const double floor = static_cast<double>(peak) * floor_ratio;
  if (into_decay >= decay_steps) return static_cast<float>(floor);
  const double progress = static_cast<double>(into_decay) / decay_steps;
  return static_cast<float>(floor + (peak - floor) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress)));
}

void LrSchedule::validate() const {
  DSV4_CHECK(std::isfinite(peak) && peak > 0.0f, "lr schedule", "peak ", peak, " must be > 0");
  DSV4_CHECK(warmup_steps >= 0 && constant_steps >= 0 && decay_steps >= 0, "lr schedule",
             "warmup_steps ", warmup_steps, ", constant_steps ", constant_steps, ", decay_steps ",
             decay_steps, " must all be >= 0");
  DSV4_CHECK(floor_ratio >= 0.0f && floor_ratio <= 1.0f, "lr schedule", "floor_ratio ",
             floor_ratio, " must lie in [0, 1]");
}

double grad_global_norm(const std::map<std::string, Tensor>& grads) {
  double sq = 0.0;
  for (const auto& [name, g] : grads)
    for (float x : g.data) sq += static_cast<double>(x) * x;
  return std::sqrt(sq);
}

void update_gate_bias(Tensor& bias, const std::vector<int64_t>& load, float gamma) {
  DSV4_CHECK(static_cast<int64_t>(load.size()) == bias.numel(), "gate bias", "got ", load.size(),
             " expert loads for a bias of shape ", shape_str(bias.shape));
  double total = 0.0;
  for (int64_t l : load) {
    DSV4_CHECK(l >= 0, "gate bias", "expert load ", l, " is negative");
    total += static_cast<double>(l);
  }
  const double mean = total / static_cast<double>(load.size());
  // Underloaded experts (load below the mean) gain bias, overloaded ones lose it.
  for (size_t e = 0; e < load.size(); ++e) {
    const double diff = mean - static_cast<double>(load[e]);
    if (diff > 0) bias[e] += gamma;
    else if (diff < 0) bias[e] -= gamma;
  }
}

Optimizer::Optimizer(const std::vector<TensorSpec>& table, const OptimizerConfig& cfg) : cfg_(cfg) {
  cfg_.schedule.validate();
  for (const TensorSpec& s : table) {
    DSV4_CHECK(groups_.emplace(s.name, s.group).second, "optimizer", "tensor '", s.name,
               "' appears twice in the table");
    if (!s.trainable()) continue;
    DSV4_CHECK(!s.is_int(), "optimizer", "integer tensor '", s.name, "' cannot be trained");
    Slot slot{s.group, s.shape, Tensor(s.shape), Tensor()};
    if (s.group == ParamGroup::Muon)
      DSV4_CHECK(s.shape.size() == 2, "optimizer", "Muon parameter '", s.name,
                 "' must be a matrix, has shape ", shape_str(s.shape));
    else
      slot.v = Tensor(s.shape);
    slots_.emplace(s.name, std::move(slot));
  }
}

ParamGroup Optimizer::group(const std::string& name) const {
  auto it = groups_.find(name);
  DSV4_CHECK(it != groups_.end(), "optimizer", "'", name, "' is not in the tensor table");
  return it->second;
}

double Optimizer::step(Params& params, std::map<std::string, Tensor>& grads) {
  for (const auto& [name, g] : grads) {
    auto it = slots_.find(name);
    if (it == slots_.end()) {
      DSV4_CHECK(groups_.count(name), "optimizer", "gradient for '", name,
                 "', which is not in the tensor table");
      continue;  // GateBias / Fixed: not trained by gradient
    }
    DSV4_CHECK(g.shape == it->second.shape, "optimizer", "gradient for '", name, "' has shape ",
               shape_str(g.shape), ", the parameter ", shape_str(it->second.shape));
  }
  double sq = 0.0;
  for (const auto& [name, slot] : slots_) {
    auto it = grads.find(name);
    DSV4_CHECK(it != grads.end(), "optimizer", "no gradient for trainable parameter '", name, "'");
    DSV4_CHECK(params.at(name).shape == slot.shape, "optimizer", "parameter '", name,
               "' has shape ", shape_str(params.at(name).shape), ", the table says ",
               shape_str(slot.shape));
    for (float x : it->second.data) sq += static_cast<double>(x) * x;
  }
  const double norm = std::sqrt(sq);
  if (!std::isfinite(norm)) return norm;

  if (cfg_.clip_norm > 0.0f && norm > cfg_.clip_norm) {
    const float scale = static_cast<float>(cfg_.clip_norm / norm);
    for (const auto& [name, slot] : slots_)
      for (float& x : grads.at(name).data) x *= scale;
  }
  const float lr = cfg_.schedule.at(step_);
  const int64_t t = step_ + 1;
  for (auto& [name, slot] : slots_) {
    Tensor& W = params.at(name);
    const Tensor& G = grads.at(name);
    switch (slot.group) {
      case ParamGroup::Muon: muon_step(W, G, slot.m, lr, cfg_.muon); break;
      case ParamGroup::AdamW: adamw_step(W, G, slot.m, slot.v, t, lr, cfg_.adamw.weight_decay, cfg_.adamw); break;
      case ParamGroup::AdamWNoDecay: adamw_step(W, G, slot.m, slot.v, t, lr, 0.0f, cfg_.adamw); break;
      case ParamGroup::GateBias:
      case ParamGroup::Fixed: break;
    }
  }
  ++step_;
  return norm;
}

void Optimizer::update_gate_biases(Params& params,
                                   const std::map<std::string, std::vector<int64_t>>& expert_loads) const {
  for (const auto& [name, load] : expert_loads)
    DSV4_CHECK(groups_.count(name) && groups_.at(name) == ParamGroup::GateBias, "gate bias",
               "expert loads given for '", name, "', which is not a gate.bias of the table");
  for (const auto& [name, g] : groups_) {  // check everything before changing anything
    if (g != ParamGroup::GateBias) continue;
    auto it = expert_loads.find(name);
    DSV4_CHECK(it != expert_loads.end(), "gate bias", "no expert loads for '", name, "'");
    DSV4_CHECK(static_cast<int64_t>(it->second.size()) == params.at(name).numel(), "gate bias",
               it->second.size(), " expert loads for '", name, "' of shape ",
               shape_str(params.at(name).shape));
  }
  for (const auto& [name, load] : expert_loads) update_gate_bias(params.at(name), load, cfg_.bias_gamma);
}

std::map<std::string, Tensor> Optimizer::state() const {
  // float32 holds every integer up to 2^24 exactly
  DSV4_CHECK(step_ <= (int64_t{1} << 24), "optimizer", "step ", step_,
             " is too large to store exactly in the float32 'step' tensor");
  std::map<std::string, Tensor> s;
  for (const auto& [name, slot] : slots_) {
    s["m." + name] = slot.m;
    if (slot.group != ParamGroup::Muon) s["v." + name] = slot.v;
  }
  s["step"] = Tensor({1}, static_cast<float>(step_));
  return s;
}

void Optimizer::load_state(const std::map<std::string, Tensor>& state) {
  auto take = [&](const std::string& key, const Shape& shape) -> const Tensor& {
    auto it = state.find(key);
    DSV4_CHECK(it != state.end(), "optimizer state", "missing '", key, "'");
    DSV4_CHECK(it->second.shape == shape, "optimizer state", "'", key, "' has shape ",
               shape_str(it->second.shape), ", expected ", shape_str(shape));
    return it->second;
  };
  const float step = take("step", {1})[0];
  DSV4_CHECK(step >= 0.0f && step == std::floor(step) && step <= static_cast<float>(1 << 24),
             "optimizer state", "'step' is ", step, ", not a step count");
  size_t expected = 1;
  for (const auto& [name, slot] : slots_) expected += slot.group == ParamGroup::Muon ? 1 : 2;
  DSV4_CHECK(state.size() == expected, "optimizer state", "has ", state.size(),
             " tensors, this model's optimizer has ", expected,
             " (is the state from a different model?)");
  for (const auto& [name, slot] : slots_) {  // check everything before changing anything
    take("m." + name, slot.shape);
    if (slot.group != ParamGroup::Muon) take("v." + name, slot.shape);
  }
  for (auto& [name, slot] : slots_) {
    slot.m = state.at("m." + name);
    if (slot.group != ParamGroup::Muon) slot.v = state.at("v." + name);
  }
  step_ = static_cast<int64_t>(step);
}

}  // namespace dsv4
