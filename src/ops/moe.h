// MoE routing and the SwiGLU expert (model.md §9).
//   moe_scores: logits [E] -> p [E] = softmax | sigmoid | sqrt(softplus)
//   route:      p [E], bias [E] or null, hash ids or null -> k experts and their weights
//   swiglu:     g, u [F] -> h [F] = silu(min(g, λ)) ⊙ clamp(u, ±λ)   (λ = 0: no clamp)
// backward: the choice of experts has no gradient; the weights do (w_e = p_e, normalized
// unless softmax, times routed_scale), and so do the scores. A clamped input gets no
// gradient where the clamp is active (g > λ, |u| > λ), as autograd's clamp.
#pragma once
#include <cstdint>
#include <type_traits>

#include "io/config.h"

namespace dsv4::ops {

template <class S>
void moe_scores(const S* logits, int64_t E, ScoringFunc f, std::type_identity_t<S>* p);
// dlogits [E] = the gradient of the logits from dp [E] (overwrites).
template <class S>
void moe_scores_backward(const S* logits, int64_t E, ScoringFunc f, const std::type_identity_t<S>* dp,
                         std::type_identity_t<S>* dlogits);

// experts[k], weights[k]: from hash_experts (k ids) when given, else the top k of p + bias
// (ties to the lower index). w_e = p_e; normalized unless softmax; times routed_scale.
template <class S>
void moe_route(const S* p, const std::type_identity_t<S>* bias, int64_t E, int64_t k, const int64_t* hash_experts,
               ScoringFunc f, float routed_scale, int32_t* experts, std::type_identity_t<S>* weights);
// dp [E] += the gradient of the scores from dweights [k], for the chosen experts.
template <class S>
void moe_route_backward(const S* p, int64_t k, const int32_t* experts, ScoringFunc f, float routed_scale,
                        const std::type_identity_t<S>* dweights, std::type_identity_t<S>* dp);

template <class S>
void swiglu(const S* g, const std::type_identity_t<S>* u, int64_t F, float limit, std::type_identity_t<S>* h);
// dg, du [F] (overwrite) from dh [F].
template <class S>
void swiglu_backward(const S* g, const std::type_identity_t<S>* u, int64_t F, float limit,
                     const std::type_identity_t<S>* dh, std::type_identity_t<S>* dg, std::type_identity_t<S>* du);

}  // namespace dsv4::ops
