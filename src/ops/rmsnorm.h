// rmsnorm: x [T, D], w [D] (or null: w = 1) -> y [T, D] = w ⊙ x / sqrt(mean(x²) + ε).
#pragma once
#include <cstdint>

namespace dsv4::ops {

void rmsnorm(const float* x, int64_t T, int64_t D, const float* w, float eps, float* y);

}  // namespace dsv4::ops
