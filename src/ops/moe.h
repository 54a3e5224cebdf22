// MoE routing and the SwiGLU expert (model.md §9).
//   moe_scores: logits [E] -> p [E] = softmax | sigmoid | sqrt(softplus)
//   route:      p [E], bias [E] or null, hash ids or null -> k experts and their weights
//   swiglu:     g, u [F] -> h [F] = silu(min(g, λ)) ⊙ clamp(u, ±λ)   (λ = 0: no clamp)
#pragma once
#include <cstdint>

#include "io/config.h"

namespace dsv4::ops {

void moe_scores(const float* logits, int64_t E, ScoringFunc f, float* p);

// experts[k], weights[k]: from hash_experts (k ids) when given, else the top k of p + bias
// (ties to the lower index). w_e = p_e; normalized unless softmax; times routed_scale.
void moe_route(const float* p, const float* bias, int64_t E, int64_t k, const int64_t* hash_experts,
               ScoringFunc f, float routed_scale, int32_t* experts, float* weights);

void swiglu(const float* g, const float* u, int64_t F, float limit, float* h);

}  // namespace dsv4::ops
