// CUDA quantization simulation, Hadamard rotation and the fast path's GEMM-input rounding
// (contracts in quant.h / cuda_ops.h). Values follow the CPU rules bit for bit.
#include <cmath>

#include "cuda/check.h"
#include "cuda/launch.h"
#include "ops/cuda_device.cuh"

// -DDSV4_IDX_QUERY_WARP=0 leaves d = 128 to the block kernel (side-by-side runs).
#ifndef DSV4_IDX_QUERY_WARP
#define DSV4_IDX_QUERY_WARP 1
#endif

namespace dsv4::cuda {

namespace {

// One warp per block of `block` values (block ≤ 1024): amax, scale, rounding.
template <bool kFp4>
__global__ void block_sim_kernel(float* x, int64_t rows, int64_t n, int64_t ld, int64_t block) {
  dev::pdl_begin();
  const int64_t nblocks = (n + block - 1) / block;
  const int64_t w = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (w >= rows * nblocks) return;
  const int64_t r = w / nblocks, b0 = (w % nblocks) * block, b1 = min(n, b0 + block);
  dev::sim_block<kFp4>(x + r * ld, b0, b1, lane);
}

// One block per vector, d/2 threads: the butterfly stages of the fast Walsh–Hadamard transform
// in the CPU's order (h = 1, 2, 4, ...), then the scale.
__global__ void hadamard_kernel(float* x, int d, float scale) {
  dev::pdl_begin();
  extern __shared__ float v[];
  float* xv = x + blockIdx.x * static_cast<int64_t>(d);
  for (int i = threadIdx.x; i < d; i += blockDim.x) v[i] = xv[i];
  __syncthreads();
  dev::hadamard_butterflies(v, d);
  for (int i = threadIdx.x; i < d; i += blockDim.x) xv[i] = v[i] * scale;
}

// The indexer's query heads (one block per head vector of d): RoPE of the last R dims
// (rope_kernel's rotation), the butterflies and scale of hadamard_kernel, then block_sim_kernel's
// FP4 rounding per 32 values, on the vector in shared memory: bit for bit the three kernels.
// The thread's first RoPE angle comes before the wait, from the position (the batch descriptor, no
// earlier kernel's output: launch.h) and the frequencies.
__global__ void indexer_query_kernel(float* x, int heads, int d, int R, float scale, const float* freqs,
                                     const int32_t* pos) {
  extern __shared__ float v[];
  const int p = pos[blockIdx.x / heads], N = d - R;
  const dev::RopeAngle first = dev::rope_first_angle(freqs, R, p);
  dev::pdl_begin();
  float* xv = x + blockIdx.x * static_cast<int64_t>(d);
  for (int i = threadIdx.x; i < d; i += blockDim.x) v[i] = xv[i];
  __syncthreads();
  dev::rope_pairs(v + N, freqs, R, p, first);
  __syncthreads();
  dev::hadamard_butterflies(v, d);
  for (int i = threadIdx.x; i < d; i += blockDim.x) v[i] *= scale;
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  for (int b = warp; b < d / 32; b += nwarps) dev::sim_block<true>(v, b * 32, b * 32 + 32, lane);
  __syncthreads();
  for (int i = threadIdx.x; i < d; i += blockDim.x) xv[i] = v[i];
}

// The same for d = 128 (V4's indexer heads), a warp per head vector from registers, with no
// barrier: lane l holds dims 4l .. 4l + 3. The RoPE pairs lie inside a lane (N = d − R is even);
// the butterflies h = 1, 2 are inside a lane and h = 4 .. 64 between lanes l and l ^ (h / 4), the
// lower dim's lane keeping a + b and the upper's a − b as hadamard_butterflies does; an FP4 block
// of 32 dims is 8 lanes. Bit for bit indexer_query_kernel, which took ~7 µs of a CSA layer's
// decode chain at batch 1 (64 blocks of 64 threads meeting at ten barriers).
constexpr int kQueryWarpDims = 128, kQueryWarps = 2;
__global__ void __launch_bounds__(32 * kQueryWarps) indexer_query_warp_kernel(float* x, int64_t vecs, int heads, int R,
                                                                              float scale, const float* freqs,
                                                                              const int32_t* pos) {
  const int lane = threadIdx.x & 31;
  const int64_t v = blockIdx.x * static_cast<int64_t>(kQueryWarps) + threadIdx.x / 32;
  const bool active = v < vecs;
  const int N = kQueryWarpDims - R;
  // The lane's RoPE angles before the wait (the position and the frequencies: launch.h).
  dev::RopeAngle ang[2];
  if (active)
#pragma unroll
    for (int e = 0; e < 2; ++e)
      if (4 * lane + 2 * e >= N) ang[e] = dev::rope_angle(freqs[(4 * lane + 2 * e - N) / 2], pos[v / heads]);
  dev::pdl_begin();
  if (!active) return;
  float4* xv = reinterpret_cast<float4*>(x + v * kQueryWarpDims) + lane;
  const float4 in = *xv;
  float a[4] = {in.x, in.y, in.z, in.w};
#pragma unroll
  for (int e = 0; e < 2; ++e)
    if (4 * lane + 2 * e >= N) dev::rope_rotate(a[2 * e], a[2 * e + 1], ang[e].cs, ang[e].sn);
  auto butterfly = [](float& lo, float& hi) {
    const float p = lo, q = hi;
    lo = p + q;
    hi = p - q;
  };
  butterfly(a[0], a[1]);
  butterfly(a[2], a[3]);
  butterfly(a[0], a[2]);
  butterfly(a[1], a[3]);
#pragma unroll
  for (int m = 1; m < 32; m <<= 1) {
    const bool upper = lane & m;
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const float o = __shfl_xor_sync(0xffffffffu, a[c], m);
      a[c] = upper ? o - a[c] : a[c] + o;
    }
  }
  float amax = 0.0f;
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    a[c] *= scale;
    amax = fmaxf(amax, fabsf(a[c]));
  }
#pragma unroll
  for (int m = 1; m < 8; m <<= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, m));
  const float s = ldexpf(1.0f, dev::fp4_scale_exp(amax));
#pragma unroll
  for (int c = 0; c < 4; ++c) a[c] = dev::fp4_sim_value(a[c], s);
  *xv = make_float4(a[0], a[1], a[2], a[3]);
}

__global__ void round_rope_bf16_kernel(float* x, int64_t rows, int64_t ld, int R) {
  dev::pdl_begin();
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= rows * R) return;
  float* p = x + (i / R) * ld + (ld - R) + (i % R);
  *p = __bfloat162float(__float2bfloat16_rn(*p));
}

__global__ void to_bf16_kernel(const float* x, int64_t n, bf16* y) {
  dev::pdl_begin();
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) y[i] = __float2bfloat16_rn(x[i]);
}

__global__ void split_bf16_kernel(const float* x, int64_t n, bf16* hi, bf16* lo) {
  dev::pdl_begin();
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const bf16 h = __float2bfloat16_rn(x[i]);
  hi[i] = h;
  lo[i] = __float2bfloat16_rn(x[i] - __bfloat162float(h));
}

// One warp per 1×128 block: 4 values per lane.
__global__ void quantize_fp8_kernel(const float* x, int64_t M, int64_t K, uint8_t* q, float* scale, int64_t lds) {
  dev::pdl_begin_early();
  const int64_t w = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  const int64_t kb = K / 128;
  if (w >= M * kb) return;
  const int64_t r = w / kb, b = w % kb;
  const float4 v = *reinterpret_cast<const float4*>(x + r * K + b * 128 + lane * 4);
  const float s = dev::quantize_e4m3_block128(v, q + r * K + b * 128, lane);
  if (lane == 0) scale[b * lds + r] = s;
}

unsigned blocks_for(int64_t threads_total, int per_block) {
  return static_cast<unsigned>((threads_total + per_block - 1) / per_block);
}

}  // namespace

void fp8_sim_cuda(float* x, int64_t rows, int64_t n, int64_t ld, int64_t block, cudaStream_t s) {
  const int64_t warps = rows * ((n + block - 1) / block);
  if (warps == 0) return;
  launch("block_sim_kernel", block_sim_kernel<false>, blocks_for(warps * 32, 256), 256, 0, s, x, rows, n, ld, block);
}

void fp4_sim_cuda(float* x, int64_t rows, int64_t n, int64_t ld, cudaStream_t s) {
  const int64_t warps = rows * ((n + 31) / 32);
  if (warps == 0) return;
  launch("block_sim_kernel", block_sim_kernel<true>, blocks_for(warps * 32, 256), 256, 0, s, x, rows, n, ld, 32);
}

void hadamard_cuda(float* x, int64_t count, int64_t d, cudaStream_t s) {
  DSV4_CHECK(d > 0 && (d & (d - 1)) == 0 && d <= 1024, "hadamard", "size ", d, " is not a power of two <= 1024");
  if (count == 0) return;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  const int threads = static_cast<int>(std::max<int64_t>(32, std::min<int64_t>(512, d / 2)));
  launch("hadamard_kernel", hadamard_kernel, static_cast<unsigned>(count), threads, d * sizeof(float), s, x, static_cast<int>(d), scale);
}

void indexer_query_cuda(float* x, int64_t rows, int heads, int64_t d, int R, const float* freqs, const int32_t* pos,
                        cudaStream_t s) {
  DSV4_CHECK(d >= 32 && (d & (d - 1)) == 0 && d <= 1024 && R % 2 == 0 && R <= d, "indexer", "query heads of ", d,
             " dims (a power of two in [32, 1024]) with ", R, " RoPE dims");
  if (rows * heads == 0) return;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  if (DSV4_IDX_QUERY_WARP && d == kQueryWarpDims) {
    const int64_t vecs = rows * heads;
    launch("indexer_query_warp_kernel", indexer_query_warp_kernel,
           static_cast<unsigned>((vecs + kQueryWarps - 1) / kQueryWarps), 32 * kQueryWarps, 0, s, x, vecs, heads, R,
           scale, freqs, pos);
    return;
  }
  const int threads = static_cast<int>(std::max<int64_t>(32, std::min<int64_t>(512, d / 2)));
  launch("indexer_query_kernel", indexer_query_kernel, static_cast<unsigned>(rows * heads), threads, d * sizeof(float),
         s, x, heads, static_cast<int>(d), R, scale, freqs, pos);
}

void round_rope_bf16_cuda(float* x, int64_t rows, int64_t ld, int R, cudaStream_t s) {
  if (rows * R == 0) return;
  launch("round_rope_bf16_kernel", round_rope_bf16_kernel, blocks_for(rows * R, 256), 256, 0, s, x, rows, ld, R);
}

void to_bf16_cuda(const float* x, int64_t n, bf16* y, cudaStream_t s) {
  if (n == 0) return;
  launch("to_bf16_kernel", to_bf16_kernel, blocks_for(n, 256), 256, 0, s, x, n, y);
}

void split_bf16_cuda(const float* x, int64_t n, bf16* hi, bf16* lo, cudaStream_t s) {
  if (n == 0) return;
  launch("split_bf16_kernel", split_bf16_kernel, blocks_for(n, 256), 256, 0, s, x, n, hi, lo);
}

void quantize_fp8_1x128_cuda(const float* x, int64_t M, int64_t K, uint8_t* q, float* scale, int64_t ld_scale,
                             cudaStream_t s) {
  DSV4_CHECK(K % 128 == 0, "quantize_fp8", "K = ", K, " is not a multiple of 128");
  if (M == 0) return;
  launch("quantize_fp8_kernel", quantize_fp8_kernel, blocks_for(M * (K / 128) * 32, 256), 256, 0, s, x, M, K, q, scale, ld_scale);
}

}  // namespace dsv4::cuda
