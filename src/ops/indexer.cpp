#include "ops/indexer.h"

#include <algorithm>
#include <numeric>

namespace dsv4::ops {

template <class S>
void indexer_scores(const S* q, const std::type_identity_t<S>* w, int64_t HI, int64_t DI,
                    const std::type_identity_t<S>* k, int64_t C, std::type_identity_t<S>* score) {
  for (int64_t i = 0; i < C; ++i) {
    const S* ki = k + i * DI;
    S acc = 0;
    for (int64_t h = 0; h < HI; ++h) {
      const S* qh = q + h * DI;
      S dot = 0;
      for (int64_t j = 0; j < DI; ++j) dot += qh[j] * ki[j];
      acc += w[h] * std::max(dot, S(0));
    }
    score[i] = acc;
  }
}

template <class S>
void indexer_scores_backward(const S* q, const std::type_identity_t<S>* w, int64_t HI, int64_t DI,
                             const std::type_identity_t<S>* k, int64_t C, const std::type_identity_t<S>* dscore,
                             std::type_identity_t<S>* dq, std::type_identity_t<S>* dw, std::type_identity_t<S>* dk) {
  for (int64_t i = 0; i < C; ++i) {
    const S* ki = k + i * DI;
    for (int64_t h = 0; h < HI; ++h) {
      const S* qh = q + h * DI;
      S dot = 0;
      for (int64_t j = 0; j < DI; ++j) dot += qh[j] * ki[j];
      if (!(dot > 0)) continue;
      dw[h] += dscore[i] * dot;
      const S g = dscore[i] * w[h];
      for (int64_t j = 0; j < DI; ++j) {
        dq[h * DI + j] += g * ki[j];
        dk[i * DI + j] += g * qh[j];
      }
    }
  }
}

template <class S>
std::vector<int32_t> topk_lower_index(const S* score, int64_t C, int64_t K) {
  std::vector<int32_t> idx(C);
  std::iota(idx.begin(), idx.end(), 0);
  int64_t k = std::min(K, C);
  auto better = [&](int32_t a, int32_t b) { return score[a] > score[b] || (score[a] == score[b] && a < b); };
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), better);
  idx.resize(k);
  std::sort(idx.begin(), idx.end());
  return idx;
}

#define DSV4_INDEXER(S)                                                                                          \
  template void indexer_scores<S>(const S*, const S*, int64_t, int64_t, const S*, int64_t, S*);                  \
  template void indexer_scores_backward<S>(const S*, const S*, int64_t, int64_t, const S*, int64_t, const S*,    \
                                           S*, S*, S*);                                                          \
  template std::vector<int32_t> topk_lower_index<S>(const S*, int64_t, int64_t);
DSV4_INDEXER(float)
DSV4_INDEXER(double)

}  // namespace dsv4::ops
