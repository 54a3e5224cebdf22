// One block over whole sequences (model.md §3): two mHC-wrapped sub-layers, attention then
// MoE, and its backward. The tape keeps each sub-layer's y, a, o, post and comb; mHC's mix
// and Sinkhorn iterations are recomputed by the ops' backward.
#include "ops/mhc.h"
#include "ops/rmsnorm.h"
#include "train/graph_parts.h"

namespace dsv4::train {

namespace {

template <class S>
ops::HcShape hc_shape(const LayerCtx<S>& L) {
  return {L.c.hc_mult, L.c.hidden_size, L.c.rms_norm_eps, L.c.hc_eps, L.c.hc_sinkhorn_iters};
}

// X -> X' around `sub` (a [rows, D] -> o [rows, D]); `hc` is "hc_attn" or "hc_ffn", `norm` the
// sub-layer's RMSNorm weight.
template <class S, class Sub>
void hc_sublayer_forward(const LayerCtx<S>& L, const std::string& hc, const std::string& norm, const Vec<S>& X,
                         Vec<S>& Xout, HcTape<S>& tp, Sub&& sub) {
  const int64_t rows = L.layout.rows, n = L.c.hc_mult, D = L.c.hidden_size;
  const ops::HcShape s = hc_shape(L);
  tp.y.assign(rows * D, S(0));
  tp.a.assign(rows * D, S(0));
  tp.post.assign(rows * n, S(0));
  tp.comb.assign(rows * n * n, S(0));
  Vec<S> pre(rows * n);
  ops::hc_pre(X.data(), rows, s, L.w(hc + "_fn"), L.w(hc + "_base"), L.w(hc + "_scale"), tp.y.data(), pre.data(),
              tp.post.data(), tp.comb.data());
  ops::rmsnorm(tp.y.data(), rows, D, L.w(norm), L.c.rms_norm_eps, tp.a.data());
  sub(tp.a, tp.o);
  Xout.assign(rows * n * D, S(0));
  ops::hc_post(X.data(), tp.o.data(), tp.post.data(), tp.comb.data(), rows, s, Xout.data());
}

// dX: dX' on entry, dX on return. `sub_backward` maps do to da (accumulating into da).
template <class S, class SubBackward>
void hc_sublayer_backward(const LayerCtx<S>& L, const std::string& hc, const std::string& norm, const Vec<S>& X,
                          const HcTape<S>& tp, Vec<S>& dX, SubBackward&& sub_backward) {
  const int64_t rows = L.layout.rows, n = L.c.hc_mult, D = L.c.hidden_size;
  const ops::HcShape s = hc_shape(L);
  Vec<S> dXin(rows * n * D, S(0)), d_o(rows * D), dpost(rows * n), dcomb(rows * n * n);
  ops::hc_post_backward(X.data(), tp.o.data(), tp.post.data(), tp.comb.data(), rows, s, dX.data(), dXin.data(),
                        d_o.data(), dpost.data(), dcomb.data());
  Vec<S> da(rows * D, S(0)), dy(rows * D, S(0));
  sub_backward(d_o, da);
  ops::rmsnorm_backward(tp.y.data(), rows, D, L.w(norm), L.c.rms_norm_eps, da.data(), dy.data(), L.g(norm));
  ops::hc_pre_backward(X.data(), rows, s, L.w(hc + "_fn"), L.w(hc + "_base"), L.w(hc + "_scale"), dy.data(),
                       dpost.data(), dcomb.data(), dXin.data(), L.g(hc + "_fn"), L.g(hc + "_base"),
                       L.g(hc + "_scale"));
  dX = std::move(dXin);
}

}  // namespace

template <class S>
void block_train_forward(const LayerCtx<S>& L, const Vec<S>& X_in, Vec<S>& X_out, BlockTape<S>& tp, BlockStats& st) {
  hc_sublayer_forward(L, "hc_attn", "attn_norm.weight", X_in, tp.X_mid, tp.hc_attn,
                      [&](const Vec<S>& a, Vec<S>& o) { attention_train_forward(L, a, tp.attn, o, st); });
  hc_sublayer_forward(L, "hc_ffn", "ffn_norm.weight", tp.X_mid, X_out, tp.hc_ffn,
                      [&](const Vec<S>& a, Vec<S>& o) { moe_train_forward(L, a, tp.moe, o, st); });
}

template <class S>
void block_train_backward(const LayerCtx<S>& L, const Vec<S>& X_in, const BlockTape<S>& tp, Vec<S>& dX) {
  hc_sublayer_backward(L, "hc_ffn", "ffn_norm.weight", tp.X_mid, tp.hc_ffn, dX, [&](const Vec<S>& d_o, Vec<S>& da) {
    moe_train_backward(L, tp.hc_ffn.a, tp.moe, d_o, da);
  });
  hc_sublayer_backward(L, "hc_attn", "attn_norm.weight", X_in, tp.hc_attn, dX, [&](const Vec<S>& d_o, Vec<S>& da) {
    attention_train_backward(L, tp.hc_attn.a, tp.attn, d_o, da);
  });
}

#define DSV4_BLOCK_GRAD(S)                                                                                       \
  template void block_train_forward<S>(const LayerCtx<S>&, const Vec<S>&, Vec<S>&, BlockTape<S>&, BlockStats&); \
  template void block_train_backward<S>(const LayerCtx<S>&, const Vec<S>&, const BlockTape<S>&, Vec<S>&);
DSV4_BLOCK_GRAD(float)
DSV4_BLOCK_GRAD(double)

}  // namespace dsv4::train
