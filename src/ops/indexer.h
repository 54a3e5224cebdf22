// lightning indexer scoring and top-k (model.md §7):
//   q [HI, DI], w [HI], k [C, DI] -> score [C], score_i = Σ_h w_h · ReLU(q_h · k_i)
//   topk: the min(K, C) highest scores, ties to the lower index, returned ascending.
// backward of the scores (ReLU' = 0 at 0, as autograd): where q_h · k_i > 0,
//   dw_h += dscore_i (q_h · k_i);  dq_h += dscore_i w_h k_i;  dk_i += dscore_i w_h q_h.
// The top-k choice itself has no gradient.
#pragma once
#include <cstdint>
#include <type_traits>
#include <vector>

namespace dsv4::ops {

template <class S>
void indexer_scores(const S* q, const std::type_identity_t<S>* w, int64_t HI, int64_t DI,
                    const std::type_identity_t<S>* k, int64_t C, std::type_identity_t<S>* score);
template <class S>
void indexer_scores_backward(const S* q, const std::type_identity_t<S>* w, int64_t HI, int64_t DI,
                             const std::type_identity_t<S>* k, int64_t C, const std::type_identity_t<S>* dscore,
                             std::type_identity_t<S>* dq, std::type_identity_t<S>* dw, std::type_identity_t<S>* dk);

template <class S>
std::vector<int32_t> topk_lower_index(const S* score, int64_t C, int64_t K);

}  // namespace dsv4::ops
