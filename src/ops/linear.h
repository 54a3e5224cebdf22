// linear: x [T, in], W [out, in] -> y [T, out] = x · Wᵀ (BLAS; float32, float64 for gradient checks).
// backward: dx [T, in] += dy · W,  dW [out, in] += dyᵀ · x  (either may be null: not wanted).
#pragma once
#include <type_traits>

#include "core/tensor.h"

namespace dsv4::ops {

template <class S> using Same = std::type_identity_t<S>;  // a parameter that does not deduce S

template <class S>
void linear(const S* x, int64_t T, int64_t in, const Same<S>* W, int64_t out, S* y);
// Adds instead of overwriting: y += x · Wᵀ.
template <class S>
void linear_acc(const S* x, int64_t T, int64_t in, const Same<S>* W, int64_t out, S* y);
Tensor linear(const Tensor& x, const Tensor& W);  // x [T, in], W [out, in]

template <class S>
void linear_backward(const S* x, int64_t T, int64_t in, const Same<S>* W, int64_t out, const Same<S>* dy,
                     Same<S>* dx, Same<S>* dW);

}  // namespace dsv4::ops
