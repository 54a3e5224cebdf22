// The MoE sub-layer over whole sequences (model.md §9) with its backward and the
// sequence-wise balance loss (training.md §1). The choice of experts is not differentiated;
// the routing weights are (through the scores into gate.weight and the input).
#include <algorithm>
#include <cmath>

#include "ops/linear.h"
#include "ops/moe.h"
#include "train/graph_parts.h"

namespace dsv4::train {

template <class S>
size_t MoeTape<S>::bytes() const {
  size_t b = bytes_of(logits) + bytes_of(p) + bytes_of(weights) + experts.size() * sizeof(int32_t);
  for (size_t e = 0; e < rows_of.size(); ++e) b += rows_of[e].size() * (sizeof(int64_t) + sizeof(int32_t));
  for (size_t e = 0; e < g.size(); ++e) b += bytes_of(g[e]) + bytes_of(u[e]) + bytes_of(h[e]);
  return b;
}

namespace {

std::string expert_prefix(int64_t e, int64_t E) {
  return e == E ? std::string("ffn.shared_experts.") : "ffn.experts." + std::to_string(e) + ".";
}

// Gathers a's rows `rows` into [n, D] (all rows when `rows` is null).
template <class S>
Vec<S> gather_rows(const Vec<S>& a, int64_t D, const std::vector<int64_t>* rows) {
  if (!rows) return a;
  Vec<S> out(rows->size() * D);
  for (size_t i = 0; i < rows->size(); ++i) std::copy(&a[(*rows)[i] * D], &a[(*rows)[i] * D] + D, &out[i * D]);
  return out;
}

// Balance loss of one layer: per sequence f_e = E/(k·T)·#{t : e chosen}, P_e = mean_t p'_e(t)
// with p' = p / Σ p; the loss is the mean over sequences of Σ_e f_e·P_e (f is a constant).
// Returns the loss; adds its gradient with respect to p, times `weight`, into dp.
template <class S>
double balance_loss(const LayerCtx<S>& L, const MoeTape<S>& tp, S weight, S* dp) {
  const int64_t E = L.c.n_routed_experts, k = L.c.num_experts_per_tok;
  const int64_t nseq = static_cast<int64_t>(L.layout.seqs.size());
  double total = 0;
  std::vector<double> f(E);
  for (const SeqLayout::Seq& s : L.layout.seqs) {
    std::fill(f.begin(), f.end(), 0.0);
    for (int64_t r = s.row0; r < s.row0 + s.len; ++r)
      for (int64_t i = 0; i < k; ++i) f[tp.experts[r * k + i]] += 1.0;
    for (double& v : f) v *= static_cast<double>(E) / static_cast<double>(k * s.len);
    for (int64_t r = s.row0; r < s.row0 + s.len; ++r) {
      const S* pr = &tp.p[r * E];
      S sum = 0;
      for (int64_t e = 0; e < E; ++e) sum += pr[e];
      S fp = 0;  // Σ_e f_e p'_e
      for (int64_t e = 0; e < E; ++e) fp += static_cast<S>(f[e]) * pr[e] / sum;
      total += static_cast<double>(fp) / static_cast<double>(s.len * nseq);
      if (!dp) continue;
      // dp'_e = c·f_e with c = weight/(T·nseq); through p' = p/Σp: dp_e = c·(f_e − Σ f p')/Σp
      const S cw = weight / static_cast<S>(s.len * nseq);
      for (int64_t e = 0; e < E; ++e) dp[r * E + e] += cw * (static_cast<S>(f[e]) - fp) / sum;
    }
  }
  return total;
}

}  // namespace

template <class S>
void moe_train_forward(const LayerCtx<S>& L, const Vec<S>& a, MoeTape<S>& tp, Vec<S>& out, BlockStats& st) {
  const ModelConfig& c = L.c;
  const int64_t rows = L.layout.rows, D = c.hidden_size, E = c.n_routed_experts, k = c.num_experts_per_tok;
  const int64_t F = c.moe_intermediate_size;
  tp.logits.assign(rows * E, S(0));
  tp.p.assign(rows * E, S(0));
  tp.experts.assign(rows * k, 0);
  tp.weights.assign(rows * k, S(0));
  ops::linear(a.data(), rows, D, L.w("ffn.gate.weight"), E, tp.logits.data());
  const std::vector<int64_t>* tid2eid = nullptr;
  if (L.hash) tid2eid = &L.P.i64->at(L.prefix + "ffn.gate.tid2eid");
  const S* bias = L.hash ? nullptr : L.w("ffn.gate.bias");
  for (int64_t r = 0; r < rows; ++r) {
    ops::moe_scores(&tp.logits[r * E], E, c.scoring_func, &tp.p[r * E]);
    const int64_t* hash = nullptr;
    if (tid2eid) {
      DSV4_CHECK(L.ids[r] >= 0 && L.ids[r] < c.vocab_size, "train", "token id ", L.ids[r],
                 " outside the vocabulary of ", c.vocab_size);
      hash = tid2eid->data() + L.ids[r] * k;
    }
    ops::moe_route(&tp.p[r * E], bias, E, k, hash, c.scoring_func, c.routed_scaling_factor, &tp.experts[r * k],
                   &tp.weights[r * k]);
  }
  tp.rows_of.assign(E, {});
  tp.slot_of.assign(E, {});
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < k; ++i) {
      const int32_t e = tp.experts[r * k + i];
      DSV4_CHECK(e >= 0 && e < E, "train", "expert index ", e, " out of range [0, ", E, ")");
      tp.rows_of[e].push_back(r);
      tp.slot_of[e].push_back(static_cast<int32_t>(i));
    }
  st.expert_loads.assign(E, 0);
  for (int64_t e = 0; e < E; ++e) st.expert_loads[e] = static_cast<int64_t>(tp.rows_of[e].size());
  if (!L.hash) st.balance = balance_loss(L, tp, S(0), static_cast<S*>(nullptr));

  // Each expert's rows as one product (SwiGLU in between), routed ones scaled by their weight.
  out.assign(rows * D, S(0));
  tp.g.assign(E + 1, {});
  tp.u.assign(E + 1, {});
  tp.h.assign(E + 1, {});
  for (int64_t e = 0; e <= E; ++e) {
    const std::vector<int64_t>* sel = e < E ? &tp.rows_of[e] : nullptr;
    const int64_t n = sel ? static_cast<int64_t>(sel->size()) : rows;
    if (n == 0) continue;
    const std::string p = expert_prefix(e, E);
    const Vec<S> ae = gather_rows(a, D, sel);
    tp.g[e].assign(n * F, S(0));
    tp.u[e].assign(n * F, S(0));
    tp.h[e].assign(n * F, S(0));
    ops::linear(ae.data(), n, D, L.w(p + "w1.weight"), F, tp.g[e].data());
    ops::linear(ae.data(), n, D, L.w(p + "w3.weight"), F, tp.u[e].data());
    Vec<S> hw(n * F);
    for (int64_t i = 0; i < n; ++i) {
      ops::swiglu(&tp.g[e][i * F], &tp.u[e][i * F], F, c.swiglu_limit, &tp.h[e][i * F]);
      const S w = sel ? tp.weights[(*sel)[i] * k + tp.slot_of[e][i]] : S(1);
      for (int64_t f = 0; f < F; ++f) hw[i * F + f] = tp.h[e][i * F + f] * w;
    }
    Vec<S> ye(n * D, S(0));
    ops::linear(hw.data(), n, F, L.w(p + "w2.weight"), D, ye.data());
    for (int64_t i = 0; i < n; ++i) {
      S* dst = &out[(sel ? (*sel)[i] : i) * D];
      for (int64_t d = 0; d < D; ++d) dst[d] += ye[i * D + d];
    }
  }
}

template <class S>
void moe_train_backward(const LayerCtx<S>& L, const Vec<S>& a, const MoeTape<S>& tp, const Vec<S>& dout, Vec<S>& da) {
  const ModelConfig& c = L.c;
  const int64_t rows = L.layout.rows, D = c.hidden_size, E = c.n_routed_experts, k = c.num_experts_per_tok;
  const int64_t F = c.moe_intermediate_size;
  Vec<S> dweights(rows * k, S(0));
  for (int64_t e = 0; e <= E; ++e) {
    const std::vector<int64_t>* sel = e < E ? &tp.rows_of[e] : nullptr;
    const int64_t n = sel ? static_cast<int64_t>(sel->size()) : rows;
    if (n == 0) continue;
    const std::string p = expert_prefix(e, E);
    const Vec<S> ae = gather_rows(a, D, sel), dye = gather_rows(dout, D, sel);
    Vec<S> hw(n * F), dhw(n * F, S(0)), dg(n * F), du(n * F), dae(n * D, S(0));
    for (int64_t i = 0; i < n; ++i) {
      const S w = sel ? tp.weights[(*sel)[i] * k + tp.slot_of[e][i]] : S(1);
      for (int64_t f = 0; f < F; ++f) hw[i * F + f] = tp.h[e][i * F + f] * w;
    }
    ops::linear_backward(hw.data(), n, F, L.w(p + "w2.weight"), D, dye.data(), dhw.data(), L.g(p + "w2.weight"));
    for (int64_t i = 0; i < n; ++i) {
      S* dh = &dhw[i * F];
      if (sel) {
        S dw = 0;
        for (int64_t f = 0; f < F; ++f) dw += dh[f] * tp.h[e][i * F + f];
        const int64_t slot = (*sel)[i] * k + tp.slot_of[e][i];
        dweights[slot] += dw;
        for (int64_t f = 0; f < F; ++f) dh[f] *= tp.weights[slot];
      }
      ops::swiglu_backward(&tp.g[e][i * F], &tp.u[e][i * F], F, c.swiglu_limit, dh, &dg[i * F], &du[i * F]);
    }
    ops::linear_backward(ae.data(), n, D, L.w(p + "w1.weight"), F, dg.data(), dae.data(), L.g(p + "w1.weight"));
    ops::linear_backward(ae.data(), n, D, L.w(p + "w3.weight"), F, du.data(), dae.data(), L.g(p + "w3.weight"));
    for (int64_t i = 0; i < n; ++i) {
      S* dst = &da[(sel ? (*sel)[i] : i) * D];
      for (int64_t d = 0; d < D; ++d) dst[d] += dae[i * D + d];
    }
  }
  // Routing weights -> scores (+ the balance loss) -> gate logits -> gate.weight and a.
  Vec<S> dp(rows * E, S(0)), dlogits(rows * E, S(0));
  for (int64_t r = 0; r < rows; ++r)
    ops::moe_route_backward(&tp.p[r * E], k, &tp.experts[r * k], c.scoring_func, c.routed_scaling_factor,
                            &dweights[r * k], &dp[r * E]);
  if (!L.hash && L.opt.balance_weight > 0) balance_loss(L, tp, S(L.opt.balance_weight), dp.data());
  for (int64_t r = 0; r < rows; ++r)
    ops::moe_scores_backward(&tp.logits[r * E], E, c.scoring_func, &dp[r * E], &dlogits[r * E]);
  ops::linear_backward(a.data(), rows, D, L.w("ffn.gate.weight"), E, dlogits.data(), da.data(),
                       L.g("ffn.gate.weight"));
}

template struct MoeTape<float>;
template struct MoeTape<double>;
#define DSV4_MOE_GRAD(S)                                                                                       \
  template void moe_train_forward<S>(const LayerCtx<S>&, const Vec<S>&, MoeTape<S>&, Vec<S>&, BlockStats&);   \
  template void moe_train_backward<S>(const LayerCtx<S>&, const Vec<S>&, const MoeTape<S>&, const Vec<S>&,    \
                                      Vec<S>&);
DSV4_MOE_GRAD(float)
DSV4_MOE_GRAD(double)

}  // namespace dsv4::train
