// linear: x [T, in], W [out, in] -> y [T, out] = x · Wᵀ (float32, BLAS).
#pragma once
#include "core/tensor.h"

namespace dsv4::ops {

void linear(const float* x, int64_t T, int64_t in, const float* W, int64_t out, float* y);
// Adds instead of overwriting: y += x · Wᵀ.
void linear_acc(const float* x, int64_t T, int64_t in, const float* W, int64_t out, float* y);
Tensor linear(const Tensor& x, const Tensor& W);  // x [T, in], W [out, in]

}  // namespace dsv4::ops
