// The MoE sub-layer (model.md §9): routing per token, then each expert's rows as one
// matrix product (SwiGLU in float32), plus the shared expert on every row.
#include "model/block.h"
#include "ops/linear.h"
#include "ops/moe.h"

namespace dsv4 {

namespace {

// out[rows] += W2 · (weight ⊙ swiglu(W1 · a, W3 · a)) for the gathered rows.
void expert_forward(const ModelConfig& c, const ExpertWeights& w, const float* a, int64_t rows,
                    const float* weight, float* out) {
  const int64_t D = c.hidden_size, F = c.moe_intermediate_size;
  Tensor g({rows, F}), u({rows, F}), h({rows, F});
  ops::linear(a, rows, D, w.w1->ptr(), F, g.ptr());
  ops::linear(a, rows, D, w.w3->ptr(), F, u.ptr());
  for (int64_t r = 0; r < rows; ++r) {
    ops::swiglu(g.ptr() + r * F, u.ptr() + r * F, F, c.swiglu_limit, h.ptr() + r * F);
    if (weight)
      for (int64_t f = 0; f < F; ++f) h[r * F + f] *= weight[r];
  }
  ops::linear_acc(h.ptr(), rows, F, w.w2->ptr(), D, out);
}

}  // namespace

void moe_forward(const ModelConfig& c, const MoeWeights& w, const Tensor& a, const int64_t* ids, Tensor& out) {
  const int64_t rows = a.dim(0), D = c.hidden_size, E = c.n_routed_experts, k = c.num_experts_per_tok;
  Tensor logits({rows, E}), p({rows, E});
  ops::linear(a.ptr(), rows, D, w.gate->ptr(), E, logits.ptr());
  std::vector<int32_t> experts(rows * k);
  std::vector<float> weights(rows * k);
  for (int64_t r = 0; r < rows; ++r) {
    ops::moe_scores(logits.ptr() + r * E, E, c.scoring_func, p.ptr() + r * E);
    const int64_t* hash = nullptr;
    if (w.tid2eid) {
      DSV4_CHECK(ids[r] >= 0 && ids[r] < c.vocab_size, "moe", "token id ", ids[r], " outside the vocabulary of ",
                 c.vocab_size);
      hash = w.tid2eid->data() + ids[r] * k;
    }
    ops::moe_route(p.ptr() + r * E, w.bias ? w.bias->ptr() : nullptr, E, k, hash, c.scoring_func,
                   c.routed_scaling_factor, &experts[r * k], &weights[r * k]);
  }

  out = Tensor({rows, D});
  // Group rows by expert; each expert's rows go through it as one matrix product.
  std::vector<std::vector<int64_t>> rows_of(E);
  std::vector<std::vector<float>> weight_of(E);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < k; ++i) {
      const int32_t e = experts[r * k + i];
      DSV4_CHECK(e >= 0 && e < E, "moe", "expert index ", e, " out of range [0, ", E, ")");
      rows_of[e].push_back(r);
      weight_of[e].push_back(weights[r * k + i]);
    }
  for (int64_t e = 0; e < E; ++e) {
    const int64_t n = static_cast<int64_t>(rows_of[e].size());
    if (n == 0) continue;
    Tensor ae({n, D}), ye({n, D});
    for (int64_t i = 0; i < n; ++i) std::copy(a.ptr() + rows_of[e][i] * D, a.ptr() + (rows_of[e][i] + 1) * D, ae.ptr() + i * D);
    expert_forward(c, w.experts[e], ae.ptr(), n, weight_of[e].data(), ye.ptr());
    for (int64_t i = 0; i < n; ++i) {
      float* dst = out.ptr() + rows_of[e][i] * D;
      const float* src = ye.ptr() + i * D;
      for (int64_t d = 0; d < D; ++d) dst[d] += src[d];
    }
  }
  expert_forward(c, w.shared, a.ptr(), rows, nullptr, out.ptr());
}

}  // namespace dsv4
