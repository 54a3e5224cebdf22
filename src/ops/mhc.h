// Manifold-constrained hyper-connections (model.md §3), per token, float32 (float64 for checks).
//   hc_pre:  X [T, n, D], fn [(2+n)n, n·D], base [(2+n)n], scale [3]
//            -> y [T, D] = Σ_j pre_j X[j],  pre [T, n],  post [T, n],  comb [T, n, n]
//   hc_post: X [T, n, D], o [T, D], post [T, n], comb [T, n, n] -> X' [k] = post_k o + Σ_j C_jk X[j]
//   hc_head: X [T, n, D], fn [n, n·D], base [n], scale [1] -> y [T, D] (no Sinkhorn, no post)
// backward: through the mix's norm, the sigmoids, the softmax and every Sinkhorn
// normalization (recomputed per token; nothing is stored). Gradients accumulate (+=) into
// dX, dfn, dbase, dscale; hc_post_backward overwrites d_o, dpost, dcomb.
#pragma once
#include <cstdint>
#include <type_traits>

namespace dsv4::ops {

struct HcShape { int64_t n, D; float eps, hc_eps; int sinkhorn_iters; };

template <class S> using HcT = std::type_identity_t<S>;

// mix [T, (2+n)n] = (fn · x) / sqrt(mean(x²) + eps), x = vec(X[t]).
template <class S>
void hc_mix(const S* X, int64_t T, const HcShape& s, const HcT<S>* fn, int64_t rows, HcT<S>* mix);
template <class S>
void hc_mix_backward(const S* X, int64_t T, const HcShape& s, const HcT<S>* fn, int64_t rows, const HcT<S>* dmix,
                     HcT<S>* dX, HcT<S>* dfn);

// Splits one token's mix into pre (n), post (n) and the Sinkhorn-normalized comb (n×n).
template <class S>
void hc_split_sinkhorn(const S* mix, const HcT<S>* base, const HcT<S>* scale, const HcShape& s, HcT<S>* pre,
                       HcT<S>* post, HcT<S>* comb);
// dlogit [(2+n)n] = the gradient of mix·scale + base (the pre-activation logits) from dpre,
// dpost, dcomb (any may be null: zero).
template <class S>
void hc_split_sinkhorn_backward(const S* mix, const HcT<S>* base, const HcT<S>* scale, const HcShape& s,
                                const HcT<S>* dpre, const HcT<S>* dpost, const HcT<S>* dcomb, HcT<S>* dlogit);

template <class S>
void hc_pre(const S* X, int64_t T, const HcShape& s, const HcT<S>* fn, const HcT<S>* base, const HcT<S>* scale,
            HcT<S>* y, HcT<S>* pre, HcT<S>* post, HcT<S>* comb);
// dy [T, D], dpost [T, n], dcomb [T, n, n]: the gradients of hc_pre's outputs.
template <class S>
void hc_pre_backward(const S* X, int64_t T, const HcShape& s, const HcT<S>* fn, const HcT<S>* base,
                     const HcT<S>* scale, const HcT<S>* dy, const HcT<S>* dpost, const HcT<S>* dcomb, HcT<S>* dX,
                     HcT<S>* dfn, HcT<S>* dbase, HcT<S>* dscale);

template <class S>
void hc_post(const S* X, const HcT<S>* o, const HcT<S>* post, const HcT<S>* comb, int64_t T, const HcShape& s,
             HcT<S>* Xout);
template <class S>
void hc_post_backward(const S* X, const HcT<S>* o, const HcT<S>* post, const HcT<S>* comb, int64_t T,
                      const HcShape& s, const HcT<S>* dXout, HcT<S>* dX, HcT<S>* d_o, HcT<S>* dpost,
                      HcT<S>* dcomb);

template <class S>
void hc_head(const S* X, int64_t T, const HcShape& s, const HcT<S>* fn, const HcT<S>* base, const HcT<S>* scale,
             HcT<S>* y);
template <class S>
void hc_head_backward(const S* X, int64_t T, const HcShape& s, const HcT<S>* fn, const HcT<S>* base,
                      const HcT<S>* scale, const HcT<S>* dy, HcT<S>* dX, HcT<S>* dfn, HcT<S>* dbase,
                      HcT<S>* dscale);

}  // namespace dsv4::ops
