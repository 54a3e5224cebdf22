// Manifold-constrained hyper-connections (model.md §3), per token, float32.
//   hc_pre:  X [T, n, D], fn [(2+n)n, n·D], base [(2+n)n], scale [3]
//            -> y [T, D] = Σ_j pre_j X[j],  pre [T, n],  post [T, n],  comb [T, n, n]
//   hc_post: X [T, n, D], o [T, D], post [T, n], comb [T, n, n] -> X' [k] = post_k o + Σ_j C_jk X[j]
//   hc_head: X [T, n, D], fn [n, n·D], base [n], scale [1] -> y [T, D] (no Sinkhorn, no post)
#pragma once
#include <cstdint>

namespace dsv4::ops {

struct HcShape { int64_t n, D; float eps, hc_eps; int sinkhorn_iters; };

// mix [T, (2+n)n] = (fn · x) / sqrt(mean(x²) + eps), x = vec(X[t]).
void hc_mix(const float* X, int64_t T, const HcShape& s, const float* fn, int64_t rows, float* mix);

// Splits one token's mix into pre (n), post (n) and the Sinkhorn-normalized comb (n×n).
void hc_split_sinkhorn(const float* mix, const float* base, const float* scale, const HcShape& s,
                       float* pre, float* post, float* comb);

void hc_pre(const float* X, int64_t T, const HcShape& s, const float* fn, const float* base,
            const float* scale, float* y, float* pre, float* post, float* comb);
void hc_post(const float* X, const float* o, const float* post, const float* comb, int64_t T,
             const HcShape& s, float* Xout);
void hc_head(const float* X, int64_t T, const HcShape& s, const float* fn, const float* base,
             const float* scale, float* y);

}  // namespace dsv4::ops
