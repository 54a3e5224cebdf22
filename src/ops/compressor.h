// compressor pooling (model.md §6): one entry from the gated projections of its tokens.
//   u, z: rows of c·d values (c = 2 when overlapping, m = 4), z already includes ape.
//   no overlap:  e[f] = Σ_r softmax_r(z_r[f]) · u_r[f] over the m tokens of block i
//   overlap:     softmax over 2m slots: block i−1's (u[f], z[f]) and block i's (u[d+f], z[d+f]);
//                block i−1 absent (i = 0) -> only block i's m slots
// -> e [d]. Normalization, RoPE and quantization are applied by the caller.
#pragma once
#include <cstdint>

namespace dsv4::ops {

void compress_pool(const float* u_cur, const float* z_cur, const float* u_prev, const float* z_prev,
                   int64_t m, int64_t d, bool overlap, float* e);

}  // namespace dsv4::ops
