// rmsnorm: x [T, D], w [D] (or null: w = 1) -> y [T, D] = w ⊙ x / sqrt(mean(x²) + ε).
// backward: with r = 1/sqrt(mean(x²) + ε) and g = w ⊙ dy,
//   dx += r·g − r³·x·(g·x)/D,   dw += Σ_t dy ⊙ x·r   (dw may be null).
#pragma once
#include <cstdint>
#include <type_traits>

namespace dsv4::ops {

template <class S>
void rmsnorm(const S* x, int64_t T, int64_t D, const std::type_identity_t<S>* w, float eps,
             std::type_identity_t<S>* y);

template <class S>
void rmsnorm_backward(const S* x, int64_t T, int64_t D, const std::type_identity_t<S>* w, float eps,
                      const std::type_identity_t<S>* dy, std::type_identity_t<S>* dx, std::type_identity_t<S>* dw);

}  // namespace dsv4::ops
