// Few-row dense products (contract in cuda_ops.h, gemv_cuda): the decode step's projections.
// With one to eight activation rows a product is a stream of its weights: every weight byte is
// used M times, so the only cost that matters is reading W once at the HBM rate. cuBLASLt's
// tiles are built for many rows (an FP8 GEMM also pads M to 16), so these products get their
// own kernel: one warp (or, for short matrices, up to 8 warps splitting the columns) per two
// output rows, each lane streaming 16-byte weight vectors, the activation rows read through L1
// (they are small and shared by every warp).
//
// The numbers are those of the many-row GEMMs up to float32 summation order:
//   FP8Block: the same e4m3 activations (1×128 blocks, power-of-two scales) and 128×128 weight
//             scales; products of two e4m3 values summed in float32 per 16 columns, then scaled;
//   BF16:     bf16 weights times the activations' two bf16 halves (hi + lo, as the split-input
//             GEMM reads them);
//   F32:      float32 throughout.
#include "cuda/check.h"
#include "cuda/launch.h"
#include "ops/cuda_device.cuh"

namespace dsv4::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerWarp = 2;  // two output rows per warp: two independent weight streams in flight

// Columns per lane per step: one 16-byte vector of weights.
template <GemvWeights kW>
constexpr int kVec = kW == GemvWeights::FP8Block ? 16 : kW == GemvWeights::BF16 ? 8 : 4;

// The weights of one lane step (16 bytes of row n from column k), as floats.
template <GemvWeights kW>
__device__ __forceinline__ void load_w(const GemvArgs& a, int64_t n, int64_t k, float* out) {
  if constexpr (kW == GemvWeights::FP8Block) {
    dev::e4m3x16(__ldcs(reinterpret_cast<const uint4*>(a.w_fp8 + n * a.ldw + k)), out);
  } else if constexpr (kW == GemvWeights::BF16) {
    const uint4 v = __ldcs(reinterpret_cast<const uint4*>(a.w_bf16 + n * a.ldw + k));
    const __nv_bfloat162* b = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __bfloat1622float2(b[i]);
      out[2 * i] = f.x;
      out[2 * i + 1] = f.y;
    }
  } else {
    const float4 v = __ldcs(reinterpret_cast<const float4*>(a.w_f32 + n * a.ldw + k));
    out[0] = v.x, out[1] = v.y, out[2] = v.z, out[3] = v.w;
  }
}

// The activations of row m at columns c .. c + kVec − 1 (c = the group's first column + k).
template <GemvWeights kW>
__device__ __forceinline__ void load_x(const GemvArgs& a, int m, int64_t c, float* out) {
  if constexpr (kW == GemvWeights::FP8Block) {
    dev::e4m3x16(__ldg(reinterpret_cast<const uint4*>(a.xq + m * a.ldxq + c)), out);
  } else {
    const float4* p = reinterpret_cast<const float4*>(a.x + m * a.ldx + c);
#pragma unroll
    for (int i = 0; i < kVec<kW> / 4; ++i) {
      const float4 v = __ldg(p + i);
      out[4 * i] = v.x, out[4 * i + 1] = v.y, out[4 * i + 2] = v.z, out[4 * i + 3] = v.w;
    }
    if constexpr (kW == GemvWeights::BF16) {  // the split-input GEMM's hi + lo halves
#pragma unroll
      for (int j = 0; j < kVec<kW>; ++j) {
        const float hi = __bfloat162float(__float2bfloat16_rn(out[j]));
        out[j] = hi + __bfloat162float(__float2bfloat16_rn(out[j] - hi));
      }
    }
  }
}

// Block = 8 warps = kThreads / 32 / ksplit row pairs; the ksplit warps of a pair take
// interleaved column steps, and their sums meet in shared memory in warp order (deterministic).
// Several products in one launch (gemv_many_cuda): block b belongs to the product whose block
// range holds it.
struct GemvBatch {
  GemvArgs mats[kGemvMaxMats];
  int first_block[kGemvMaxMats + 1];
  int count, ksplit;
};

template <GemvWeights kW, int kM>
__global__ void __launch_bounds__(kThreads) gemv_kernel(const __grid_constant__ GemvBatch batch) {
  constexpr int V = kVec<kW>, kWarps = kThreads / 32;
  __shared__ float red[kWarps][kM][kRowsPerWarp];
  int mi = 0;
  while (mi + 1 < batch.count && static_cast<int>(blockIdx.x) >= batch.first_block[mi + 1]) ++mi;
  const GemvArgs& a = batch.mats[mi];
  const int ksplit = batch.ksplit;
  const int lane = threadIdx.x & 31, w = threadIdx.x / 32;
  const int part = w % ksplit;
  const int64_t pair =
      static_cast<int64_t>(blockIdx.x - batch.first_block[mi]) * (kWarps / ksplit) + w / ksplit;
  const int64_t n0 = pair * kRowsPerWarp;
  const bool active = n0 < a.N;
  const bool second = n0 + 1 < a.N;
  const int64_t n1 = second ? n0 + 1 : n0;
  // The pair's weight rows start streaming into L2 while the previous kernel finishes (PDL):
  // they are the bulk of the bytes and depend on nothing earlier in the stream.
  if (active && part == 0 && lane < 2 && (lane == 0 || second)) {
    const int64_t n = lane == 0 ? n0 : n1;
    constexpr int kBytes = kW == GemvWeights::FP8Block ? 1 : kW == GemvWeights::BF16 ? 2 : 4;
    const void* row = kW == GemvWeights::FP8Block ? static_cast<const void*>(a.w_fp8 + n * a.ldw)
                      : kW == GemvWeights::BF16   ? static_cast<const void*>(a.w_bf16 + n * a.ldw)
                                                  : static_cast<const void*>(a.w_f32 + n * a.ldw);
    dev::prefetch_l2(row, static_cast<uint32_t>(a.K * kBytes));
  }
  dev::pdl_begin();
  float acc0[kM] = {}, acc1[kM] = {};
  if (active) {
    // Both rows lie in one group (group_rows is even) and in one 128-row scale block (n0 is even).
    const int64_t col0 = a.group_rows ? (n0 / a.group_rows) * a.group_stride : 0;
    const float* wscale = kW == GemvWeights::FP8Block ? a.w_scale + (n0 / 128) * a.ldw_scale : nullptr;
#pragma unroll 4
    for (int64_t k = (static_cast<int64_t>(part) * 32 + lane) * V; k < a.K; k += static_cast<int64_t>(ksplit) * 32 * V) {
      float w0[V], w1[V];
      load_w<kW>(a, n0, k, w0);
      load_w<kW>(a, n1, k, w1);
      float sw = 1.0f;
      if constexpr (kW == GemvWeights::FP8Block) sw = __ldg(wscale + k / 128);
#pragma unroll
      for (int m = 0; m < kM; ++m) {
        if (m >= a.M) break;
        float xv[V];
        load_x<kW>(a, m, col0 + k, xv);
        float d0 = 0.0f, d1 = 0.0f;
#pragma unroll
        for (int j = 0; j < V; ++j) {
          d0 = fmaf(w0[j], xv[j], d0);
          d1 = fmaf(w1[j], xv[j], d1);
        }
        if constexpr (kW == GemvWeights::FP8Block) {
          const float sc = sw * __ldg(a.xs + ((col0 + k) / 128) * a.ldxs + m);
          acc0[m] = fmaf(d0, sc, acc0[m]);
          acc1[m] = fmaf(d1, sc, acc1[m]);
        } else {
          acc0[m] += d0;
          acc1[m] += d1;
        }
      }
    }
  }
#pragma unroll
  for (int m = 0; m < kM; ++m) {
    acc0[m] = dev::warp_sum(acc0[m]);
    acc1[m] = dev::warp_sum(acc1[m]);
  }
  if (ksplit > 1) {
    if (lane == 0)
#pragma unroll
      for (int m = 0; m < kM; ++m) red[w][m][0] = acc0[m], red[w][m][1] = acc1[m];
    __syncthreads();
    if (part == 0)
#pragma unroll
      for (int m = 0; m < kM; ++m) {
        float v0 = 0.0f, v1 = 0.0f;
        for (int q = 0; q < ksplit; ++q) v0 += red[w + q][m][0], v1 += red[w + q][m][1];
        acc0[m] = v0, acc1[m] = v1;
      }
  }
  if (!active || part != 0 || lane != 0) return;
#pragma unroll
  for (int m = 0; m < kM; ++m) {
    if (m >= a.M) break;
    float* y = a.y + m * a.ldy;
    y[n0] = a.beta != 0.0f ? fmaf(a.beta, y[n0], acc0[m]) : acc0[m];
    if (second) y[n1] = a.beta != 0.0f ? fmaf(a.beta, y[n1], acc1[m]) : acc1[m];
  }
}

template <GemvWeights kW>
void launch_gemv(const GemvArgs* mats, int count, cudaStream_t s) {
  static int sms = 0;
  if (!sms) DSV4_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  // Enough blocks to keep every SM streaming: split a row pair's columns over up to 8 warps
  // when there are few pairs (short matrices), as long as each warp keeps whole column steps.
  constexpr int kWarps = kThreads / 32;
  const int64_t K = mats[0].K, steps = (K + 32 * kVec<kW> - 1) / (32 * kVec<kW>);
  int64_t pairs = 0;
  for (int i = 0; i < count; ++i) pairs += (mats[i].N + kRowsPerWarp - 1) / kRowsPerWarp;
  GemvBatch b{};
  b.count = count;
  b.ksplit = 1;
  while (b.ksplit < kWarps && (pairs * b.ksplit + kWarps - 1) / kWarps < 2 * sms && steps >= 2 * b.ksplit) b.ksplit *= 2;
  const int per_block = kWarps / b.ksplit;
  b.first_block[0] = 0;
  for (int i = 0; i < count; ++i) {
    b.mats[i] = mats[i];
    const int64_t mp = (mats[i].N + kRowsPerWarp - 1) / kRowsPerWarp;
    b.first_block[i + 1] = b.first_block[i] + static_cast<int>((mp + per_block - 1) / per_block);
  }
  const unsigned blocks = static_cast<unsigned>(b.first_block[count]);
  if (blocks == 0) return;
  const int64_t M = mats[0].M;
  auto kernel = M <= 1 ? gemv_kernel<kW, 1> : M <= 2 ? gemv_kernel<kW, 2> : M <= 4 ? gemv_kernel<kW, 4> : gemv_kernel<kW, 8>;
  launch("gemv_kernel", kernel, blocks, kThreads, 0, s, b);
}

}  // namespace

bool gemv_fits(GemvWeights w, int64_t M, int64_t K) {
  const int v = w == GemvWeights::FP8Block ? 16 : w == GemvWeights::BF16 ? 8 : 4;
  return M >= 1 && M <= kGemvMaxRows && K > 0 && K % v == 0 && (w != GemvWeights::FP8Block || K % 128 == 0);
}

void gemv_cuda(const GemvArgs& a, cudaStream_t s) { gemv_many_cuda(&a, 1, s); }

void gemv_many_cuda(const GemvArgs* mats, int count, cudaStream_t s) {
  DSV4_CHECK(count >= 1 && count <= kGemvMaxMats, "gemv", count, " products in one launch (1..", kGemvMaxMats, ")");
  for (int i = 0; i < count; ++i) {
    const GemvArgs& a = mats[i];
    DSV4_CHECK(gemv_fits(a.weights, a.M, a.K), "gemv", "M = ", a.M, ", K = ", a.K, " do not fit the few-row kernel");
    DSV4_CHECK(a.weights == mats[0].weights && a.M == mats[0].M && a.K == mats[0].K, "gemv",
               "products in one launch share the weight form, M and K");
    DSV4_CHECK(a.group_rows == 0 || (a.group_rows % 2 == 0 && a.group_stride % 16 == 0), "gemv", "groups of ",
               a.group_rows, " rows with stride ", a.group_stride, " are not supported");
    DSV4_CHECK(a.weights != GemvWeights::FP8Block || a.group_stride % 128 == 0, "gemv",
               "FP8 activation groups must start on a 128-column scale block");
  }
  switch (mats[0].weights) {
    case GemvWeights::FP8Block: launch_gemv<GemvWeights::FP8Block>(mats, count, s); break;
    case GemvWeights::BF16: launch_gemv<GemvWeights::BF16>(mats, count, s); break;
    case GemvWeights::F32: launch_gemv<GemvWeights::F32>(mats, count, s); break;
  }
}

}  // namespace dsv4::cuda
