// compressor pooling (model.md §6): one entry from the gated projections of its tokens.
//   u, z: rows of c·d values (c = 2 when overlapping, m = 4), z already includes ape.
//   no overlap:  e[f] = Σ_r softmax_r(z_r[f]) · u_r[f] over the m tokens of block i
//   overlap:     softmax over 2m slots: block i−1's (u[f], z[f]) and block i's (u[d+f], z[d+f]);
//                block i−1 absent (i = 0) -> only block i's m slots
// -> e [d]. Normalization, RoPE and quantization are applied by the caller.
// backward (recomputes the softmax weights s_r of each feature):
//   du_r[f] += s_r · de[f];  dz_r[f] += s_r · (u_r[f] − e[f]) · de[f]   (same slots as the forward)
#pragma once
#include <cstdint>
#include <type_traits>

namespace dsv4::ops {

template <class S>
void compress_pool(const S* u_cur, const std::type_identity_t<S>* z_cur, const std::type_identity_t<S>* u_prev,
                   const std::type_identity_t<S>* z_prev, int64_t m, int64_t d, bool overlap,
                   std::type_identity_t<S>* e);

// du_prev / dz_prev are used only when u_prev is given (overlap, i > 0).
template <class S>
void compress_pool_backward(const S* u_cur, const std::type_identity_t<S>* z_cur,
                            const std::type_identity_t<S>* u_prev, const std::type_identity_t<S>* z_prev, int64_t m,
                            int64_t d, bool overlap, const std::type_identity_t<S>* de,
                            std::type_identity_t<S>* du_cur, std::type_identity_t<S>* dz_cur,
                            std::type_identity_t<S>* du_prev, std::type_identity_t<S>* dz_prev);

}  // namespace dsv4::ops
