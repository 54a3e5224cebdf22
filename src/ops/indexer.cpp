#include "ops/indexer.h"

#include <algorithm>
#include <numeric>

namespace dsv4::ops {

void indexer_scores(const float* q, const float* w, int64_t HI, int64_t DI, const float* k, int64_t C,
                    float* score) {
  for (int64_t i = 0; i < C; ++i) {
    const float* ki = k + i * DI;
    float acc = 0.0f;
    for (int64_t h = 0; h < HI; ++h) {
      const float* qh = q + h * DI;
      float dot = 0.0f;
      for (int64_t j = 0; j < DI; ++j) dot += qh[j] * ki[j];
      acc += w[h] * std::max(dot, 0.0f);
    }
    score[i] = acc;
  }
}

std::vector<int32_t> topk_lower_index(const float* score, int64_t C, int64_t K) {
  std::vector<int32_t> idx(C);
  std::iota(idx.begin(), idx.end(), 0);
  int64_t k = std::min(K, C);
  auto better = [&](int32_t a, int32_t b) { return score[a] > score[b] || (score[a] == score[b] && a < b); };
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), better);
  idx.resize(k);
  std::sort(idx.begin(), idx.end());
  return idx;
}

}  // namespace dsv4::ops
