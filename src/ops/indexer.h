// lightning indexer scoring and top-k (model.md §7):
//   q [HI, DI], w [HI], k [C, DI] -> score [C], score_i = Σ_h w_h · ReLU(q_h · k_i)
//   topk: the min(K, C) highest scores, ties to the lower index, returned ascending.
#pragma once
#include <cstdint>
#include <vector>

namespace dsv4::ops {

void indexer_scores(const float* q, const float* w, int64_t HI, int64_t DI, const float* k, int64_t C,
                    float* score);
std::vector<int32_t> topk_lower_index(const float* score, int64_t C, int64_t K);

}  // namespace dsv4::ops
