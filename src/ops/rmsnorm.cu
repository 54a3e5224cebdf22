// CUDA rmsnorm (contract in rmsnorm.h / cuda_ops.h): one block per row.
#include <algorithm>

#include "cuda/check.h"
#include "cuda/launch.h"
#include "ops/cuda_device.cuh"

namespace dsv4::cuda {

namespace {

// This thread's Σ x[i]² over i = threadIdx.x, + blockDim.x, ... < D, in that order (one fused
// multiply-add each): the loads of a batch are issued before the first is used, one L2 round
// trip a batch where a plain loop waited one per element (the rows of a decode step come
// straight from the previous kernel).
__device__ __forceinline__ float sum_squares(const float* xr, int64_t D) {
  constexpr int kBatch = 8;
  float ss = 0.0f;
  for (int64_t base = threadIdx.x; base < D; base += kBatch * static_cast<int64_t>(blockDim.x)) {
    float v[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int64_t i = base + u * static_cast<int64_t>(blockDim.x);
      v[u] = i < D ? xr[i] : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u)
      if (base + u * static_cast<int64_t>(blockDim.x) < D) ss = __fmaf_rn(v[u], v[u], ss);
  }
  return ss;
}

// This thread's weights of the first batch of scale_rows (w[threadIdx.x + u · blockDim.x]; 1 without
// w): loaded before the kernel's PDL wait, so that their trip from memory overlaps the previous
// kernel instead of following the row's sum of squares (weights: no kernel writes them).
constexpr int kScaleBatch = 8;
struct FirstWeights {
  float v[kScaleBatch];
};
__device__ __forceinline__ FirstWeights first_weights(const float* w, int64_t D) {
  FirstWeights f;
#pragma unroll
  for (int u = 0; u < kScaleBatch; ++u) {
    const int64_t i = threadIdx.x + u * static_cast<int64_t>(blockDim.x);
    f.v[u] = i < D && w ? w[i] : 1.0f;
  }
  return f;
}

// out[i] = (w ? w[i] : 1) · (x[i] · inv) for this thread's i (as sum_squares), the loads of a
// batch first (out may be x: each element is read and written by the same thread); the first
// batch's weights from first_weights.
__device__ __forceinline__ void scale_rows(const float* xr, const float* w, const FirstWeights& w0, float inv, int64_t D,
                                           float* out) {
  constexpr int kBatch = kScaleBatch;
  for (int64_t base = threadIdx.x; base < D; base += kBatch * static_cast<int64_t>(blockDim.x)) {
    float v[kBatch], wv[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int64_t i = base + u * static_cast<int64_t>(blockDim.x);
      v[u] = i < D ? xr[i] : 0.0f;
      wv[u] = base == threadIdx.x ? w0.v[u] : i < D && w ? w[i] : 1.0f;
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int64_t i = base + u * static_cast<int64_t>(blockDim.x);
      if (i < D) out[i] = wv[u] * (v[u] * inv);
    }
  }
}

// With q: one warp per 128 columns writes y and its FP8 rounding (quantize_fp8_1x128_cuda's
// rule; scales qs[b · ldqs + row]), saving the GEMM input's separate quantize launch.
__global__ void rmsnorm_kernel(const float* x, int64_t D, const float* w, float eps, float* y, uint8_t* q, float* qs,
                               int64_t ldqs) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  // The weights this thread uses first, before the wait (first_weights).
  const float4 ones = make_float4(1.0f, 1.0f, 1.0f, 1.0f);
  const float4 w_first = q && w && warp < D / 128 ? *reinterpret_cast<const float4*>(w + warp * 128 + lane * 4) : ones;
  const FirstWeights w0 = q ? FirstWeights{} : first_weights(w, D);
  dev::pdl_begin_early();
  __shared__ float scratch[33];
  const float* xr = x + blockIdx.x * D;
  float* yr = y + blockIdx.x * D;
  float ss = sum_squares(xr, D);
  ss = dev::block_sum(ss, scratch);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(D) + eps);
  if (q) {
    for (int64_t b = warp; b < D / 128; b += nwarps) {
      const int64_t d = b * 128 + lane * 4;
      const float4 xv = *reinterpret_cast<const float4*>(xr + d);
      const float4 wv = b == warp ? w_first : w ? *reinterpret_cast<const float4*>(w + d) : ones;
      const float4 v = make_float4(wv.x * (xv.x * inv), wv.y * (xv.y * inv), wv.z * (xv.z * inv), wv.w * (xv.w * inv));
      __syncwarp();  // y may be x: every lane has read its columns before any is overwritten
      *reinterpret_cast<float4*>(yr + d) = v;
      const float sc = dev::quantize_e4m3_block128(v, q + blockIdx.x * D + b * 128, lane);
      if (lane == 0) qs[b * ldqs + blockIdx.x] = sc;
    }
    return;
  }
  scale_rows(xr, w, w0, inv, D, yr);
}

// rmsnorm_kernel's arithmetic (same thread count, same summation order), then on the same
// row in shared memory: RoPE of the last R dims, FP8 simulation of the first d − R in blocks of
// fp8_block (block_sim_kernel's rule), bf16 rounding of the RoPE dims; bit for bit the
// separate kernels, in one launch. Blocks past a.rows · a.heads take b's vectors (two
// normalizations in one launch: the query heads and the window key of a decode step).
__global__ void rmsnorm_rope_kernel(RmsRopeRows a, RmsRopeRows b, float eps, int R, const float* freqs,
                                    const int32_t* pos) {
  extern __shared__ float row[];
  __shared__ float scratch[33];
  int64_t v = blockIdx.x;
  const bool second = v >= a.rows * a.heads;
  if (second) v -= a.rows * a.heads;
  // The job's fields as scalars (a reference to either parameter would copy both to the stack).
  const int64_t D = second ? b.D : a.D;
  const float* w = second ? b.w : a.w;
  const int heads = second ? b.heads : a.heads, fp8_block = second ? b.fp8_block : a.fp8_block;
  const bool round_rope = second ? b.round_rope : a.round_rope;
  // Before the wait: the weights, the position and the window ring's pointers (the batch
  // descriptor, no earlier kernel's output: launch.h), and the angle of the thread's first RoPE
  // pair (a double-precision sincos, ~600 cycles): a decode step's kernels run beside
  // bandwidth-bound products, where each dependent trip to memory costs microseconds.
  const FirstWeights w0 = first_weights(w, D);
  const int p = pos[v / heads];
  const bool to_ring = second && b.encode && b.ring_caches;
  const CacheRows ring = to_ring ? b.ring_caches[b.slot[v]].window : CacheRows{};
  const dev::RopeAngle first = dev::rope_first_angle(freqs, R, p);
  dev::pdl_begin();
  float* xr = (second ? b.x : a.x) + v * D;
  float ss = sum_squares(xr, D);
  ss = dev::block_sum(ss, scratch);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(D) + eps);
  scale_rows(xr, w, w0, inv, D, row);
  __syncthreads();
  const int64_t N = D - R;
  dev::rope_pairs(row + N, freqs, R, p, first);
  if (fp8_block > 0) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int64_t b0 = static_cast<int64_t>(warp) * fp8_block; b0 < N; b0 += static_cast<int64_t>(nwarps) * fp8_block)
      dev::sim_block<false>(row, b0, min(N, b0 + fp8_block), lane);
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x)
    xr[i] = round_rope && i >= N ? __bfloat162float(__float2bfloat16_rn(row[i])) : row[i];
  if (second && b.encode) {  // the compact row (bf16 rounding of the RoPE dims included) for the attention and the ring
    const RowFormat f{static_cast<int>(D), R, true, false};
    dev::write_kv_row(row, f, b.enc, v);
    if (to_ring) dev::write_kv_row(row, f, ring, p % b.W);
  }
}

int rmsnorm_threads(int64_t D) { return D >= 1024 ? 256 : D >= 256 ? 128 : 64; }

}  // namespace

void rmsnorm_rope2_cuda(const RmsRopeRows& a, const RmsRopeRows& b, float eps, int R, const float* freqs,
                        const int32_t* pos, cudaStream_t s) {
  for (const RmsRopeRows* j : {&a, &b})
    DSV4_CHECK(j->rows == 0 || (R % 2 == 0 && R <= j->D && j->heads >= 1), "rmsnorm_rope", "R = ", R, ", D = ", j->D,
               ", heads = ", j->heads);
  const int64_t blocks = a.rows * a.heads + b.rows * b.heads;
  if (blocks == 0) return;
  const int64_t D = std::max(a.rows ? a.D : 0, b.rows ? b.D : 0);
  DSV4_CHECK(a.rows == 0 || b.rows == 0 || rmsnorm_threads(a.D) == rmsnorm_threads(b.D), "rmsnorm_rope",
             "one launch needs one thread count: D = ", a.D, " and ", b.D);
  launch("rmsnorm_rope_kernel", rmsnorm_rope_kernel, static_cast<unsigned>(blocks), rmsnorm_threads(D),
         D * sizeof(float), s, a, b, eps, R, freqs, pos);
}

void rmsnorm_rope_cuda(float* x, int64_t rows, int heads, int64_t D, const float* w, float eps, int R, const float* freqs,
                       const int32_t* pos, int fp8_block, bool round_rope, cudaStream_t s) {
  rmsnorm_rope2_cuda(RmsRopeRows{x, rows, heads, D, w, fp8_block, round_rope}, RmsRopeRows{}, eps, R, freqs, pos, s);
}

void rmsnorm_cuda(const float* x, int64_t T, int64_t D, const float* w, float eps, float* y, cudaStream_t s, uint8_t* q,
                  float* qs) {
  DSV4_CHECK(!q || (qs && D % 128 == 0), "rmsnorm", "FP8 output needs scales and D % 128 == 0 (D = ", D, ")");
  if (T == 0) return;
  launch("rmsnorm_kernel", rmsnorm_kernel, static_cast<unsigned>(T), rmsnorm_threads(D), 0, s, x, D, w, eps, y, q, qs,
         T);
}

}  // namespace dsv4::cuda
