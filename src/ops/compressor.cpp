#include "ops/compressor.h"

#include <cmath>

namespace dsv4::ops {

void compress_pool(const float* u_cur, const float* z_cur, const float* u_prev, const float* z_prev,
                   int64_t m, int64_t d, bool overlap, float* e) {
  const int64_t width = overlap ? 2 * d : d;
  for (int64_t f = 0; f < d; ++f) {
    // Current block: the second half of each row when overlapping, else the row itself.
    const int64_t cf = overlap ? d + f : f;
    float mx = -INFINITY;
    for (int64_t r = 0; r < m; ++r) mx = std::max(mx, z_cur[r * width + cf]);
    if (overlap && u_prev)
      for (int64_t r = 0; r < m; ++r) mx = std::max(mx, z_prev[r * width + f]);
    float num = 0.0f, den = 0.0f;
    if (overlap && u_prev)
      for (int64_t r = 0; r < m; ++r) {
        float p = std::exp(z_prev[r * width + f] - mx);
        den += p;
        num += p * u_prev[r * width + f];
      }
    for (int64_t r = 0; r < m; ++r) {
      float p = std::exp(z_cur[r * width + cf] - mx);
      den += p;
      num += p * u_cur[r * width + cf];
    }
    e[f] = num / den;
  }
}

}  // namespace dsv4::ops
