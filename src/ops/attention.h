// sparse attention with a sink, one query token (model.md §5):
//   q [H, Dh], kv [S, Dh] (each row is both key and value), sink [H]
//   s_j = (q_h · kv_j) · scale;  o_h = Σ_j e^{s_j} kv_j / (Σ_j e^{s_j} + e^{sink_h})
// -> o [H, Dh]. The sink enters only the denominator: it has no value vector.
#pragma once
#include <cstdint>

namespace dsv4::ops {

void sink_attention(const float* q, int64_t H, int64_t Dh, const float* kv, int64_t S,
                    const float* sink, float scale, float* o);

}  // namespace dsv4::ops
