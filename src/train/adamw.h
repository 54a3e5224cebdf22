// AdamW (training.md §3): Adam moments with bias correction and decoupled weight decay,
// for embed, head (with decay) and the norms, mHC biases/gating factors, attn_sink and
// compressor ape (without).
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace dsv4 {

struct AdamWConfig {
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;          // 1e-20 is the V4 value; 1e-8 suits small float32 runs
  float weight_decay = 0.1f;  // for the AdamW group; the no-decay group uses 0
};

// adamw_step: W, G, m, v of one shape; t >= 1 the number of this step (bias correction):
//   m ← β1·m + (1 − β1)·G;  v ← β2·v + (1 − β2)·G²
//   W ← W(1 − ηλ) − η · (m / (1 − β1ᵗ)) / (sqrt(v / (1 − β2ᵗ)) + ε)
void adamw_step(Tensor& W, const Tensor& G, Tensor& m, Tensor& v, int64_t t, float lr,
                float weight_decay, const AdamWConfig& cfg);

}  // namespace dsv4
