// sparse attention with a sink, one query token (model.md §5):
//   q [H, Dh], kv [S, Dh] (each row is both key and value), sink [H]
//   s_j = (q_h · kv_j) · scale;  o_h = Σ_j e^{s_j} kv_j / (Σ_j e^{s_j} + e^{sink_h})
// -> o [H, Dh]. The sink enters only the denominator: it has no value vector.
// backward (recomputes the probabilities p_j and p_sink): with dp_j = do_h · kv_j,
//   ds_j = p_j (dp_j − Σ_i p_i dp_i);  dq_h += scale Σ_j ds_j kv_j;
//   dkv_j += scale ds_j q_h + p_j do_h (key and value);  dsink_h += −p_sink Σ_i p_i dp_i.
#pragma once
#include <cstdint>
#include <type_traits>

namespace dsv4::ops {

template <class S>
void sink_attention(const S* q, int64_t H, int64_t Dh, const std::type_identity_t<S>* kv, int64_t S_len,
                    const std::type_identity_t<S>* sink, float scale, std::type_identity_t<S>* o);

// One head's attention probabilities over its keys: p [S]; returns the sink's share.
template <class S>
S sink_attention_probs(const S* q, int64_t Dh, const std::type_identity_t<S>* kv, int64_t S_len,
                          std::type_identity_t<S> sink, float scale, std::type_identity_t<S>* p);

template <class S>
void sink_attention_backward(const S* q, int64_t H, int64_t Dh, const std::type_identity_t<S>* kv, int64_t S_len,
                             const std::type_identity_t<S>* sink, float scale, const std::type_identity_t<S>* d_o,
                             std::type_identity_t<S>* dq, std::type_identity_t<S>* dkv,
                             std::type_identity_t<S>* dsink);

}  // namespace dsv4::ops
