#include "ops/compressor.h"

#include <algorithm>
#include <cmath>

namespace dsv4::ops {

namespace {

// The slots of feature f: the previous block's (column f) when present, then the current
// block's (column d + f when overlapping, else f). Calls visit(is_prev, index into the rows).
template <class Visit>
void for_each_slot(int64_t m, int64_t d, bool overlap, bool has_prev, int64_t f, Visit&& visit) {
  const int64_t width = overlap ? 2 * d : d;
  if (overlap && has_prev)
    for (int64_t r = 0; r < m; ++r) visit(true, r * width + f);
  const int64_t cf = overlap ? d + f : f;
  for (int64_t r = 0; r < m; ++r) visit(false, r * width + cf);
}

// Feature f's softmax pool over its slots: the scores' max, the softmax's denominator and the
// pooled entry e = Σ softmax(z) u.
template <class S>
struct Pooled {
  S mx, den, e;
};

template <class S>
Pooled<S> pool_feature(const S* u_cur, const S* z_cur, const S* u_prev, const S* z_prev, int64_t m, int64_t d,
                       bool overlap, int64_t f) {
  S mx = -INFINITY;
  for_each_slot(m, d, overlap, u_prev != nullptr, f,
                [&](bool prev, int64_t i) { mx = std::max(mx, prev ? z_prev[i] : z_cur[i]); });
  S num = 0, den = 0;
  for_each_slot(m, d, overlap, u_prev != nullptr, f, [&](bool prev, int64_t i) {
    S p = std::exp((prev ? z_prev[i] : z_cur[i]) - mx);
    den += p;
    num += p * (prev ? u_prev[i] : u_cur[i]);
  });
  return {mx, den, num / den};
}

}  // namespace

template <class S>
void compress_pool(const S* u_cur, const std::type_identity_t<S>* z_cur, const std::type_identity_t<S>* u_prev,
                   const std::type_identity_t<S>* z_prev, int64_t m, int64_t d, bool overlap,
                   std::type_identity_t<S>* e) {
  for (int64_t f = 0; f < d; ++f) e[f] = pool_feature(u_cur, z_cur, u_prev, z_prev, m, d, overlap, f).e;
}

template <class S>
void compress_pool_backward(const S* u_cur, const std::type_identity_t<S>* z_cur,
                            const std::type_identity_t<S>* u_prev, const std::type_identity_t<S>* z_prev, int64_t m,
                            int64_t d, bool overlap, const std::type_identity_t<S>* de,
                            std::type_identity_t<S>* du_cur, std::type_identity_t<S>* dz_cur,
                            std::type_identity_t<S>* du_prev, std::type_identity_t<S>* dz_prev) {
  for (int64_t f = 0; f < d; ++f) {
    const auto [mx, den, e] = pool_feature(u_cur, z_cur, u_prev, z_prev, m, d, overlap, f);
    for_each_slot(m, d, overlap, u_prev != nullptr, f, [&](bool prev, int64_t i) {
      const S s = std::exp((prev ? z_prev[i] : z_cur[i]) - mx) / den;
      const S u = prev ? u_prev[i] : u_cur[i];
      (prev ? du_prev : du_cur)[i] += s * de[f];
      (prev ? dz_prev : dz_cur)[i] += s * (u - e) * de[f];
    });
  }
}

#define DSV4_COMPRESSOR(S)                                                                                   \
  template void compress_pool<S>(const S*, const S*, const S*, const S*, int64_t, int64_t, bool, S*);        \
  template void compress_pool_backward<S>(const S*, const S*, const S*, const S*, int64_t, int64_t, bool,   \
                                          const S*, S*, S*, S*, S*);
DSV4_COMPRESSOR(float)
DSV4_COMPRESSOR(double)

}  // namespace dsv4::ops
