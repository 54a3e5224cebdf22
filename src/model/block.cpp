#include "model/block.h"

#include "ops/mhc.h"
#include "ops/rmsnorm.h"
#include "ops/rope.h"

namespace dsv4 {

RopeTables RopeTables::make(const ModelConfig& c) {
  ops::YarnParams none;
  ops::YarnParams yarn{c.yarn_factor, c.yarn_beta_fast, c.yarn_beta_slow, c.yarn_original_max_pos};
  return {ops::rope_frequencies(c.qk_rope_head_dim, c.rope_theta, none),
          ops::rope_frequencies(c.qk_rope_head_dim, c.compress_rope_theta, yarn)};
}

namespace {

// One mHC-wrapped sub-layer: y = Σ pre_j X[j]; o = S(RMSNorm(y)); X'[k] = post_k o + Σ_j C_jk X[j].
template <typename SubLayer>
void hc_sublayer(const ModelConfig& c, const HcWeights& hc, const Tensor& norm, Tensor& X, SubLayer&& sub) {
  const int64_t rows = X.dim(0), n = c.hc_mult, D = c.hidden_size;
  const ops::HcShape s{n, D, c.rms_norm_eps, c.hc_eps, c.hc_sinkhorn_iters};
  Tensor y({rows, D}), pre({rows, n}), post({rows, n}), comb({rows, n, n});
  ops::hc_pre(X.ptr(), rows, s, hc.fn->ptr(), hc.base->ptr(), hc.scale->ptr(), y.ptr(), pre.ptr(), post.ptr(),
              comb.ptr());
  Tensor a({rows, D});
  ops::rmsnorm(y.ptr(), rows, D, norm.ptr(), c.rms_norm_eps, a.ptr());
  Tensor o({rows, D});
  sub(a, o);
  Tensor Xout(X.shape);
  ops::hc_post(X.ptr(), o.ptr(), post.ptr(), comb.ptr(), rows, s, Xout.ptr());
  X = std::move(Xout);
}

}  // namespace

void block_forward(const ModelConfig& c, const BlockWeights& w, const RopeTables& rope, Tensor& X,
                   const std::vector<Segment>& segs, const int64_t* ids, TopkTrace* topk) {
  hc_sublayer(c, w.hc_attn, *w.attn_norm, X, [&](const Tensor& a, Tensor& o) {
    attention_forward(c, w.attn, w.ratio, rope, a, segs, o, topk);
  });
  hc_sublayer(c, w.hc_ffn, *w.ffn_norm, X, [&](const Tensor& a, Tensor& o) { moe_forward(c, w.moe, a, ids, o); });
}

}  // namespace dsv4
