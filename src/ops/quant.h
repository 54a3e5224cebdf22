// Quantization simulation (model.md §8) and the Hadamard rotation (§7). In place.
//   fp8_sim: blocks of B values: s = 2^ceil(log2(max(amax, 1e-4)/448)); x = e4m3(clamp(x/s)) · s
//   fp4_sim: blocks of 32:       s = 2^ceil(log2(max(amax, 6·2^-126)/6)); x = e2m1(clamp(x/s)) · s
//   hadamard: x [d] <- (x · H_d) · d^(-1/2), H_d the Sylvester ±1 matrix (d a power of two)
// backward: the simulations are straight-through (training.md: the gradient passes as if the
// rounding were the identity), so they have no backward function; the scaled Hadamard
// matrix is symmetric and orthogonal, so its backward is hadamard itself.
#pragma once
#include <cstdint>

namespace dsv4::ops {

void fp8_sim(float* x, int64_t n, int64_t block);
void fp4_sim(float* x, int64_t n, int64_t block = 32);
template <class S>
void hadamard(S* x, int64_t d);

}  // namespace dsv4::ops
