// CUDA expert products of the MoE (contracts in cuda_ops.h). Expert weights stay in their
// stored form (packed FP4 with E8M0 scales per 32, or bf16) and are dequantized on the fly:
// Hopper has no FP4 tensor cores. Both forms take bf16 activations and accumulate in float32.
//   gemv:    few rows per expert (decode): a warp per output row.
//   grouped: many rows (prefill): 64×64 tiles of bf16 WMMA.
#include <mma.h>

#include "cuda/check.h"
#include "ops/cuda_device.cuh"

namespace dsv4::cuda {

namespace {

namespace wmma = nvcuda::wmma;

// ---- weight access ------------------------------------------------------------------------
// 8 consecutive weights of row n of expert e starting at column k (k % 8 == 0), as floats.
__device__ __forceinline__ void load8(const ExpertMatrix& w, int e, int n, int k, float* out) {
  const int64_t row = static_cast<int64_t>(e) * w.rows + n;
  if (w.codes) {
    const uint32_t c = *reinterpret_cast<const uint32_t*>(w.codes + row * (w.cols / 2) + k / 2);
    const float s = dev::e8m0_value(w.scales[row * (w.cols / 32) + k / 32]);
#pragma unroll
    for (int j = 0; j < 8; ++j) out[j] = dev::e2m1_value((c >> (4 * j)) & 0xf) * s;
  } else {
    const uint4 v = *reinterpret_cast<const uint4*>(w.w + row * w.cols + k);
    const bf16* b = reinterpret_cast<const bf16*>(&v);
#pragma unroll
    for (int j = 0; j < 8; ++j) out[j] = __bfloat162float(b[j]);
  }
}

__device__ __forceinline__ float swiglu_value(float g, float u, float limit) {
  if (limit > 0.0f) {
    u = fminf(fmaxf(u, -limit), limit);
    g = fminf(g, limit);
  }
  return g / (1.0f + expf(-g)) * u;
}

// ---- gemv ------------------------------------------------------------------------------------
struct GemvConfig {
  static constexpr int kWarps = 8, kRows = 4;  // output rows per block, activation rows per pass
  static constexpr int kChunk = 32;            // weights per lane per step: one FP4 scale block, 16 bytes
};

// 32 consecutive weights of row n of expert e from column k (k % 32 == 0), still encoded:
// FP4: 16 bytes of codes and their one scale; bf16: 64 bytes.
struct W32 {
  uint4 v[4];
  float s;
};
__device__ __forceinline__ void load32(const ExpertMatrix& w, int e, int n, int k, W32& o) {
  const int64_t row = static_cast<int64_t>(e) * w.rows + n;
  if (w.codes) {
    o.v[0] = *reinterpret_cast<const uint4*>(w.codes + row * (w.cols / 2) + k / 2);
    o.s = dev::e8m0_value(w.scales[row * (w.cols / 32) + k / 32]);
  } else {
    const uint4* p = reinterpret_cast<const uint4*>(w.w + row * w.cols + k);
#pragma unroll
    for (int i = 0; i < 4; ++i) o.v[i] = p[i];
  }
}
// Weights 8q .. 8q + 7 of a loaded chunk (q a compile-time constant after unrolling).
__device__ __forceinline__ void values8(const W32& o, bool fp4, int q, float* out) {
  if (fp4) {
    const uint32_t c = q == 0 ? o.v[0].x : q == 1 ? o.v[0].y : q == 2 ? o.v[0].z : o.v[0].w;
#pragma unroll
    for (int j = 0; j < 8; ++j) out[j] = dev::e2m1_value((c >> (4 * j)) & 0xf) * o.s;
  } else {
    const bf16* b = reinterpret_cast<const bf16*>(&o.v[q]);
#pragma unroll
    for (int j = 0; j < 8; ++j) out[j] = __bfloat162float(b[j]);
  }
}

// One warp per output row n of the tile's expert; each lane streams chunks of 32 weights (16-byte
// loads), two chunks in flight.
template <bool kSwiglu>
__global__ void __launch_bounds__(GemvConfig::kWarps * 32)
moe_gemv_kernel(const bf16* x, ExpertMatrix wa, ExpertMatrix wb, const int2* tiles, const int32_t* ntiles,
                const int32_t* offsets, float limit, const float* weight, const int32_t* perm, bf16* h_out,
                float* y_out) {
  using C = GemvConfig;
  if (static_cast<int>(blockIdx.x) >= *ntiles) return;
  const int lane = threadIdx.x & 31;
  const int n = blockIdx.y * C::kWarps + (threadIdx.x >> 5);
  if (n >= wa.rows) return;
  const int e = tiles[blockIdx.x].x, r_begin = offsets[e], r_end = offsets[e + 1];
  const int K = wa.cols, N = wa.rows;
  const bool fp4 = wa.codes != nullptr;
  for (int r0 = r_begin; r0 < r_end; r0 += C::kRows) {
    const int nr = min(C::kRows, r_end - r0);
    float acc_a[C::kRows] = {}, acc_b[C::kRows] = {};
#pragma unroll 2
    for (int k = lane * C::kChunk; k < K; k += 32 * C::kChunk) {
      W32 a, b;
      load32(wa, e, n, k, a);
      if (kSwiglu) load32(wb, e, n, k, b);
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        float av[8], bv[8];
        values8(a, fp4, q, av);
        if (kSwiglu) values8(b, fp4, q, bv);
#pragma unroll
        for (int rr = 0; rr < C::kRows; ++rr) {
          if (rr >= nr) break;
          const uint4 xr = *reinterpret_cast<const uint4*>(x + static_cast<int64_t>(r0 + rr) * K + k + 8 * q);
          const bf16* xb = reinterpret_cast<const bf16*>(&xr);
#pragma unroll
          for (int j = 0; j < 8; ++j) {
            const float xv = __bfloat162float(xb[j]);
            acc_a[rr] += av[j] * xv;
            if (kSwiglu) acc_b[rr] += bv[j] * xv;
          }
        }
      }
    }
#pragma unroll
    for (int rr = 0; rr < C::kRows; ++rr) {
      if (rr >= nr) break;
      const float a = dev::warp_sum(acc_a[rr]);
      const float b = kSwiglu ? dev::warp_sum(acc_b[rr]) : 0.0f;
      if (lane == 0) {
        const int64_t r = r0 + rr;
        if (kSwiglu) h_out[r * N + n] = __float2bfloat16_rn(swiglu_value(a, b, limit) * weight[perm[r]]);
        else y_out[r * N + n] = a;
      }
    }
  }
}

// ---- grouped WMMA ---------------------------------------------------------------------------
struct GroupedConfig {
  static constexpr int kBM = 64, kBN = 64, kBK = 32, kThreads = 128, kPad = 8;
  static constexpr int kLd = kBK + kPad;  // bf16 row stride in shared memory (multiple of 8)
  static constexpr int kWarpsM = 2, kWarpsN = 2, kFragM = kBM / kWarpsM / 16, kFragN = kBN / kWarpsN / 16;
  static_assert(kWarpsM * kWarpsN * 32 == kThreads, "one warp per 32×32 sub-tile");
  static_assert(kBK % 16 == 0 && kBK % 8 == 0 && kLd % 8 == 0, "WMMA bf16 tiles");
};

// Shared tile loads: activations (bf16 rows of the tile, zero past the expert's rows) and one
// weight matrix (dequantized to bf16, zero past the last output row).
__device__ __forceinline__ void load_x_tile(const bf16* x, int K, int r0, int nvalid, int k0, bf16* xs) {
  using C = GroupedConfig;
  for (int i = threadIdx.x; i < C::kBM * C::kBK / 8; i += blockDim.x) {
    const int row = i / (C::kBK / 8), c8 = (i % (C::kBK / 8)) * 8;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (row < nvalid) v = *reinterpret_cast<const uint4*>(x + static_cast<int64_t>(r0 + row) * K + k0 + c8);
    *reinterpret_cast<uint4*>(xs + row * C::kLd + c8) = v;
  }
}
__device__ __forceinline__ void load_w_tile(const ExpertMatrix& w, int e, int n0, int k0, bf16* ws) {
  using C = GroupedConfig;
  for (int i = threadIdx.x; i < C::kBN * C::kBK / 8; i += blockDim.x) {
    const int row = i / (C::kBK / 8), c8 = (i % (C::kBK / 8)) * 8;
    float v[8] = {};
    if (n0 + row < w.rows) load8(w, e, n0 + row, k0 + c8, v);
#pragma unroll
    for (int j = 0; j < 8; ++j) ws[row * C::kLd + c8 + j] = __float2bfloat16_rn(v[j]);
  }
}

template <bool kSwiglu>
__global__ void __launch_bounds__(GroupedConfig::kThreads)
moe_grouped_kernel(const bf16* x, ExpertMatrix wa, ExpertMatrix wb, const int2* tiles, const int32_t* ntiles,
                   const int32_t* offsets, float limit, const float* weight, const int32_t* perm, bf16* h_out,
                   float* y_out) {
  using C = GroupedConfig;
  __shared__ __align__(128) bf16 xs[C::kBM * C::kLd];
  __shared__ __align__(128) bf16 was[C::kBN * C::kLd];
  __shared__ __align__(128) bf16 wbs[kSwiglu ? C::kBN * C::kLd : 16];
  __shared__ __align__(128) float out[C::kBM * C::kBN];
  if (static_cast<int>(blockIdx.x) >= *ntiles) return;
  const int2 tile = tiles[blockIdx.x];
  const int e = tile.x, r0 = tile.y, nvalid = min(C::kBM, offsets[e + 1] - r0);
  const int n0 = blockIdx.y * C::kBN, K = wa.cols, N = wa.rows;
  const int warp = threadIdx.x >> 5, wm = warp / C::kWarpsN, wn = warp % C::kWarpsN;
  using Acc = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;
  Acc acc_a[C::kFragM][C::kFragN], acc_b[C::kFragM][C::kFragN];
#pragma unroll
  for (int i = 0; i < C::kFragM; ++i)
#pragma unroll
    for (int j = 0; j < C::kFragN; ++j) {
      wmma::fill_fragment(acc_a[i][j], 0.0f);
      wmma::fill_fragment(acc_b[i][j], 0.0f);
    }
  for (int k0 = 0; k0 < K; k0 += C::kBK) {
    load_x_tile(x, K, r0, nvalid, k0, xs);
    load_w_tile(wa, e, n0, k0, was);
    if (kSwiglu) load_w_tile(wb, e, n0, k0, wbs);
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < C::kBK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa[C::kFragM];
#pragma unroll
      for (int i = 0; i < C::kFragM; ++i)
        wmma::load_matrix_sync(fa[i], xs + (wm * C::kFragM * 16 + i * 16) * C::kLd + kk, C::kLd);
#pragma unroll
      for (int j = 0; j < C::kFragN; ++j) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> fb;
        const int nrow = (wn * C::kFragN + j) * 16;
        wmma::load_matrix_sync(fb, was + nrow * C::kLd + kk, C::kLd);
#pragma unroll
        for (int i = 0; i < C::kFragM; ++i) wmma::mma_sync(acc_a[i][j], fa[i], fb, acc_a[i][j]);
        if (kSwiglu) {
          wmma::load_matrix_sync(fb, wbs + nrow * C::kLd + kk, C::kLd);
#pragma unroll
          for (int i = 0; i < C::kFragM; ++i) wmma::mma_sync(acc_b[i][j], fa[i], fb, acc_b[i][j]);
        }
      }
    }
    __syncthreads();
  }
  // Epilogue: SwiGLU elementwise on matching fragments (same layout), then rows through shared memory.
#pragma unroll
  for (int i = 0; i < C::kFragM; ++i)
#pragma unroll
    for (int j = 0; j < C::kFragN; ++j) {
      if (kSwiglu)
        for (int t = 0; t < acc_a[i][j].num_elements; ++t)
          acc_a[i][j].x[t] = swiglu_value(acc_a[i][j].x[t], acc_b[i][j].x[t], limit);
      wmma::store_matrix_sync(out + (wm * C::kFragM * 16 + i * 16) * C::kBN + (wn * C::kFragN + j) * 16, acc_a[i][j],
                              C::kBN, wmma::mem_row_major);
    }
  __syncthreads();
  for (int i = threadIdx.x; i < C::kBM * C::kBN; i += blockDim.x) {
    const int row = i / C::kBN, col = i % C::kBN;
    if (row >= nvalid || n0 + col >= N) continue;
    const int64_t r = r0 + row;
    if (kSwiglu) h_out[r * N + n0 + col] = __float2bfloat16_rn(out[i] * weight[perm[r]]);
    else y_out[r * N + n0 + col] = out[i];
  }
}

void check_expert(const ExpertMatrix& w, const char* what) {
  DSV4_CHECK((w.codes && w.scales) || w.w, "moe", what, ": no weights");
  DSV4_CHECK(w.cols % 32 == 0, "moe", what, ": ", w.cols, " columns, not a multiple of 32");
}

}  // namespace

void moe_gemv_swiglu_cuda(const bf16* xs, const ExpertMatrix& w1, const ExpertMatrix& w3, const int2* tiles,
                          const int32_t* ntiles, int max_tiles, const int32_t* offsets, float limit,
                          const float* weight, const int32_t* perm, bf16* h, cudaStream_t s) {
  check_expert(w1, "w1");
  check_expert(w3, "w3");
  if (max_tiles == 0) return;
  dim3 grid(max_tiles, (w1.rows + GemvConfig::kWarps - 1) / GemvConfig::kWarps);
  moe_gemv_kernel<true><<<grid, GemvConfig::kWarps * 32, 0, s>>>(xs, w1, w3, tiles, ntiles, offsets, limit, weight,
                                                                  perm, h, nullptr);
  DSV4_CUDA_LAUNCHED("moe_gemv_kernel<swiglu>");
}

void moe_gemv_down_cuda(const bf16* h, const ExpertMatrix& w2, const int2* tiles, const int32_t* ntiles,
                        int max_tiles, const int32_t* offsets, float* y, cudaStream_t s) {
  check_expert(w2, "w2");
  if (max_tiles == 0) return;
  dim3 grid(max_tiles, (w2.rows + GemvConfig::kWarps - 1) / GemvConfig::kWarps);
  moe_gemv_kernel<false><<<grid, GemvConfig::kWarps * 32, 0, s>>>(h, w2, w2, tiles, ntiles, offsets, 0.0f, nullptr,
                                                                   nullptr, nullptr, y);
  DSV4_CUDA_LAUNCHED("moe_gemv_kernel<down>");
}

void moe_grouped_swiglu_cuda(const bf16* xs, const ExpertMatrix& w1, const ExpertMatrix& w3, const int2* tiles,
                             const int32_t* ntiles, int max_tiles, int tile_rows, const int32_t* offsets,
                             float limit, const float* weight, const int32_t* perm, bf16* h, cudaStream_t s) {
  check_expert(w1, "w1");
  check_expert(w3, "w3");
  DSV4_CHECK(tile_rows == GroupedConfig::kBM, "moe", "grouped tiles must have ", GroupedConfig::kBM, " rows");
  if (max_tiles == 0) return;
  dim3 grid(max_tiles, (w1.rows + GroupedConfig::kBN - 1) / GroupedConfig::kBN);
  moe_grouped_kernel<true><<<grid, GroupedConfig::kThreads, 0, s>>>(xs, w1, w3, tiles, ntiles, offsets, limit, weight,
                                                                     perm, h, nullptr);
  DSV4_CUDA_LAUNCHED("moe_grouped_kernel<swiglu>");
}

void moe_grouped_down_cuda(const bf16* h, const ExpertMatrix& w2, const int2* tiles, const int32_t* ntiles,
                           int max_tiles, int tile_rows, const int32_t* offsets, float* y, cudaStream_t s) {
  check_expert(w2, "w2");
  DSV4_CHECK(tile_rows == GroupedConfig::kBM, "moe", "grouped tiles must have ", GroupedConfig::kBM, " rows");
  if (max_tiles == 0) return;
  dim3 grid(max_tiles, (w2.rows + GroupedConfig::kBN - 1) / GroupedConfig::kBN);
  moe_grouped_kernel<false><<<grid, GroupedConfig::kThreads, 0, s>>>(h, w2, w2, tiles, ntiles, offsets, 0.0f, nullptr,
                                                                      nullptr, nullptr, y);
  DSV4_CUDA_LAUNCHED("moe_grouped_kernel<down>");
}

}  // namespace dsv4::cuda
