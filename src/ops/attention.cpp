#include "ops/attention.h"

#include <cmath>
#include <vector>

namespace dsv4::ops {

void sink_attention(const float* q, int64_t H, int64_t Dh, const float* kv, int64_t S,
                    const float* sink, float scale, float* o) {
  std::vector<float> s(S);
  for (int64_t h = 0; h < H; ++h) {
    const float* qh = q + h * Dh;
    float mx = sink[h];
    for (int64_t j = 0; j < S; ++j) {
      const float* v = kv + j * Dh;
      float dot = 0.0f;
      for (int64_t i = 0; i < Dh; ++i) dot += qh[i] * v[i];
      s[j] = dot * scale;
      mx = std::max(mx, s[j]);
    }
    float den = std::exp(sink[h] - mx);
    float* oh = o + h * Dh;
    for (int64_t i = 0; i < Dh; ++i) oh[i] = 0.0f;
    for (int64_t j = 0; j < S; ++j) {
      float p = std::exp(s[j] - mx);
      den += p;
      const float* v = kv + j * Dh;
      for (int64_t i = 0; i < Dh; ++i) oh[i] += p * v[i];
    }
    float inv = 1.0f / den;
    for (int64_t i = 0; i < Dh; ++i) oh[i] *= inv;
  }
}

}  // namespace dsv4::ops
