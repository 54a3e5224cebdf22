#include "ops/rope.h"

#include <algorithm>
#include <cmath>

namespace dsv4::ops {

std::vector<float> rope_frequencies(int R, float base, const YarnParams& yarn) {
  const int half = R / 2;
  std::vector<float> f(half);
  for (int i = 0; i < half; ++i) {
    float e = static_cast<float>(2 * i) / static_cast<float>(R);
    f[i] = 1.0f / std::pow(base, e);
  }
  if (yarn.original_max_pos > 0) {
    // Dimension where a wavelength of r full turns fits the original context (double).
    auto corr = [&](double r) {
      return R * std::log(yarn.original_max_pos / (r * 2.0 * M_PI)) / (2.0 * std::log(static_cast<double>(base)));
    };
    double lo = std::max(std::floor(corr(yarn.beta_fast)), 0.0);
    double hi = std::min(std::ceil(corr(yarn.beta_slow)), static_cast<double>(R - 1));
    if (lo == hi) hi += 0.001;
    for (int i = 0; i < half; ++i) {
      float ramp = (static_cast<float>(i) - static_cast<float>(lo)) / static_cast<float>(hi - lo);
      ramp = std::clamp(ramp, 0.0f, 1.0f);
      float smooth = 1.0f - ramp;
      f[i] = (f[i] / yarn.factor) * (1.0f - smooth) + f[i] * smooth;
    }
  }
  return f;
}

template <class S>
void rope_apply(S* x, int R, const float* freqs, int64_t pos, bool inverse) {
  const float t = static_cast<float>(pos);
  for (int i = 0; i < R / 2; ++i) {
    float theta = t * freqs[i];  // one float32 rounding, as the reference
    S c = std::cos(static_cast<S>(theta)), s = std::sin(static_cast<S>(theta));
    if (inverse) s = -s;
    S re = x[2 * i], im = x[2 * i + 1];
    x[2 * i] = re * c - im * s;
    x[2 * i + 1] = re * s + im * c;
  }
}

template <class S>
void rope_apply_heads(S* x, int64_t count, int64_t stride, int64_t offset, int R,
                      const float* freqs, int64_t pos, bool inverse) {
  for (int64_t h = 0; h < count; ++h) rope_apply(x + h * stride + offset, R, freqs, pos, inverse);
}

template void rope_apply<float>(float*, int, const float*, int64_t, bool);
template void rope_apply<double>(double*, int, const float*, int64_t, bool);
template void rope_apply_heads<float>(float*, int64_t, int64_t, int64_t, int, const float*, int64_t, bool);
template void rope_apply_heads<double>(double*, int64_t, int64_t, int64_t, int, const float*, int64_t, bool);

}  // namespace dsv4::ops
