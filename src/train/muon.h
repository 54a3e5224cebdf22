// Muon (training.md §3; V4 report §2.4, Algorithm 1): momentum as a plain sum, Nesterov
// input, hybrid Newton–Schulz orthogonalization, an update scaled to AdamW's RMS and
// decoupled weight decay. One call updates one 2-D matrix; every expert matrix is its own
// call ("logically independent weights").
#pragma once
#include <vector>

#include "core/tensor.h"

namespace dsv4 {

// One Newton–Schulz iteration: X ← a·X + b·(X Xᵀ) X + c·(X Xᵀ)² X.
struct NsStep {
  float a, b, c;
};

// The hybrid schedule: 8 steps of (3.4445, −4.7750, 2.0315), which push every singular value
// of a Frobenius-normalized matrix that is ≥ 1e-4 into [0.68, 1.21], then 2 steps of
// (2, −1.5, 0.5), whose fixed point 1 has zero derivative, which pull them into [1, 1.0021].
std::vector<NsStep> hybrid_ns_schedule();

// newton_schulz: X [n, m] -> O [n, m] ≈ U·f(Σ)·Vᵀ for X = U Σ Vᵀ, with f the composed
// polynomials of `schedule` applied to Σ / (‖X‖_F + 1e-7). Works on the side whose Gram
// matrix is smaller (Xᵀ when n > m, transposed back). float32, BLAS products.
Tensor newton_schulz(const Tensor& X, const std::vector<NsStep>& schedule);
Tensor hybrid_newton_schulz(const Tensor& X);

struct MuonConfig {
  float momentum = 0.95f;      // μ (V4)
  float update_scale = 0.18f;  // γ: makes the update RMS match AdamW's (V4)
  float weight_decay = 0.1f;   // λ (V4)
};

// muon_step: W [n, m], G [n, m], M [n, m] momentum (updated in place), learning rate η:
//   M ← μM + G;  O ← NS(μM + G)·sqrt(max(n, m))·γ;  W ← W(1 − ηλ) − ηO
void muon_step(Tensor& W, const Tensor& G, Tensor& M, float lr, const MuonConfig& cfg);

}  // namespace dsv4
