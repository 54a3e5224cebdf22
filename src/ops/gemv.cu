// Few-row dense products (contract in cuda_ops.h, gemv_cuda): the decode step's projections.
// With one to eight activation rows a product is a stream of its weights: every weight byte is
// used M times, so the only cost that matters is reading W once at the HBM rate. cuBLASLt's
// tiles are built for many rows (an FP8 GEMM also pads M to 16), so these products get their
// own kernel, the activation rows read through L1 (they are small and shared by every warp):
//   FP8Block: a warp per 16 output rows on the tensor cores (mma.m16n8k32, e4m3 × e4m3 ->
//             float32, the products the many-row FP8 GEMM makes): the weights' bytes are the
//             mma's A fragments as loaded and the activation rows its B columns, so a weight
//             costs a fraction of an instruction and the kernel is a pure stream;
//   BF16, F32: a warp per two output rows, each lane streaming 16-byte weight vectors into
//             float32 FMAs.
// Short matrices split their columns over up to 8 warps.
//
// The numbers are those of the many-row GEMMs up to summation order:
//   FP8Block: the same e4m3 activations (1×128 blocks, power-of-two scales) and 128×128 weight
//             scales; the products of one 128-column block summed by the tensor cores (mma.sync
//             keeps float32 accuracy here, where the GEMM's wgmma sums in reduced precision),
//             then scaled and added in float32;
//   BF16:     bf16 weights times the activations' two bf16 halves (hi + lo, as the split-input
//             GEMM reads them);
//   F32:      float32 throughout.
#include <algorithm>
#include <cstdint>

#include "cuda/check.h"
#include "cuda/launch.h"
#include "ops/cuda_device.cuh"
#include "ops/cuda_ptx.cuh"

namespace dsv4::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerWarp = 2;  // two output rows per warp: two independent weight streams in flight

// Columns per lane per step of the SIMT path: one 16-byte vector of weights.
constexpr int vec_of(GemvWeights w) { return w == GemvWeights::FP8Block ? 16 : w == GemvWeights::BF16 ? 8 : 4; }

// The tensor-core path (FP8 blocks): a warp owns 16 output rows (the mma's M); a step is one
// 128-column scale block, of which lane (g, t) loads columns [32t, 32t + 32) of rows g and g + 8
// (two 16-byte vectors each: a row's 128 bytes per step come from four lanes) and the same
// columns of activation row g. The K order inside an mma is free as long as A and B agree, so
// mma j of a step takes words 2j, 2j + 1 of those 32 bytes: A = {row g: 2j, row g + 8: 2j, row g:
// 2j + 1, row g + 8: 2j + 1}, B = {x: 2j, 2j + 1}, both meaning columns 32t + 8j .. 32t + 8j + 7.
constexpr int kFp8Rows = 16;    // output rows per warp
constexpr int kFp8Step = 128;   // columns per step: one scale block of W and of x
// Steps of weights loaded ahead (6 KB per warp), and the blocks an SM must hold (the registers
// allow ~128 a thread). Measured alone on a 33.6 MB product at M = 1 (scripts/experiments/
// expert_stream.cu, which builds other values through these macros): 2 steps at 3 blocks 18.4 µs
// (wq_b's shape), 17.7 (wo_b's); 3 steps at 2 blocks 17.4 and 16.1; 4 steps at 2 blocks 19.1, 18.5.
// In the model (more of each product loaded before its PDL wait), 4 steps were slower too: B=1 4K
// 2.92 against 2.81 ms (bench/results/2026-11-30-cuda-21.md).
#ifndef DSV4_FP8_IN_FLIGHT
#define DSV4_FP8_IN_FLIGHT 3
#endif
#ifndef DSV4_FP8_BLOCKS
#define DSV4_FP8_BLOCKS 2
#endif
// FP8 products take the most column splits that keep them in one wave (DSV4_FP8_BLOCKS a SM):
// measured alone at M = 1, wq_b's and wo_a's shapes 17.5 -> 16.1 µs against the rule of the other
// forms (splits until the blocks fill the SMs, which left them 512 blocks in two waves;
// bench/results/2026-11-29-cuda-11.md).
constexpr int kFp8InFlight = DSV4_FP8_IN_FLIGHT;
constexpr int rows_per_warp(GemvWeights w) { return w == GemvWeights::FP8Block ? kFp8Rows : kRowsPerWarp; }
constexpr int step_cols(GemvWeights w) { return w == GemvWeights::FP8Block ? kFp8Step : 32 * vec_of(w); }
template <GemvWeights kW>
constexpr int kVec = vec_of(kW);

// Column steps whose weights a lane loads before it uses the first: with one 16-byte load per
// row and step in flight, a warp waits a full memory latency per step and the SM streams at half
// the HBM rate. Three steps (6 × 16 bytes, 24 registers) keep one row's kernel at 64 registers,
// four blocks per SM: the 512-block output projections then run in one wave (four steps need
// ~76 registers: three blocks per SM, two waves).
constexpr int kInFlight = 3;

// The 16 raw bytes of row n at column k (streamed: read once, not kept in L1).
template <GemvWeights kW>
__device__ __forceinline__ uint4 load_w(const GemvArgs& a, int64_t n, int64_t k) {
  const void* p = kW == GemvWeights::FP8Block ? static_cast<const void*>(a.w_fp8 + n * a.ldw + k)
                  : kW == GemvWeights::BF16   ? static_cast<const void*>(a.w_bf16 + n * a.ldw + k)
                                              : static_cast<const void*>(a.w_f32 + n * a.ldw + k);
  return __ldcs(reinterpret_cast<const uint4*>(p));
}

// Word i (4 bytes) of a raw weight vector as floats: 4 e4m3, 2 bf16 or 1 float32.
template <GemvWeights kW>
__device__ __forceinline__ void decode_word(uint32_t w, float* out) {
  if constexpr (kW == GemvWeights::BF16) {
    const float2 f = dev::bf16x2_to_float2(w);
    out[0] = f.x;
    out[1] = f.y;
  } else {
    out[0] = __uint_as_float(w);
  }
}

// The activations of row m at columns c .. c + kVec − 1 (c = the group's first column + k).
template <GemvWeights kW>
__device__ __forceinline__ void load_x(const GemvArgs& a, int m, int64_t c, float* out) {
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

// Block = 8 warps. SIMT path: kThreads / 32 / ksplit row pairs; tensor-core path: as many
// 16-row groups. The ksplit warps of a pair or group take interleaved column steps, and their
// sums meet in shared memory in warp order (deterministic). Several products in one launch
// (gemv_many_cuda): block b belongs to the product whose block range holds it.
struct GemvBatch {
  GemvArgs mats[kGemvMaxMats];
  int first_block[kGemvMaxMats + 1];
  int ksplit[kGemvMaxMats];  // per product, from its own shape: a product sums as it would alone
  int count;
};

constexpr int kWarps = kThreads / 32;
// The partial sums of the ksplit warps: [warp][kM][2] (SIMT) or [warp][16 rows][8 x rows] (mma).
constexpr int kRedFloats = kWarps * kFp8Rows * kGemvMaxRows;

// Steps loaded before the wait (of the kDepth in flight). Fewer or more both lost at B=1 (ms at 4K
// and 1M): all 3 2.73 and 3.08; 1 2.76 and 3.09; none 2.82 and 3.16; 3 plus up to 6 more a warp
// copied into shared memory, 2.92-3.67 at 4K (bench/results/2026-11-30-cuda-25.md, calls 2-7).
#ifndef DSV4_GEMV_PRE
#define DSV4_GEMV_PRE 3
#endif

// The column steps k0, k0 + stride, ... < K of one warp, kDepth of them in flight: load(u, k) puts
// step k's weights in slot u, use(u, k) consumes them. The first loads read weights only, so
// DSV4_GEMV_PRE of them are issued before the PDL wait and overlap the previous kernel.
// (Prefetching whole rows into L2 here as well made the decode step 10% slower: measured, 4.22 vs
// 3.80 ms.)
template <int kDepth, typename Load, typename Use>
__device__ __forceinline__ void stream_steps(bool active, int64_t k0, int64_t stride, int64_t K, Load&& load,
                                             Use&& use) {
  auto load_slots = [&](int64_t kb, int first, int end) {  // slots first .. end - 1 from column kb
#pragma unroll
    for (int u = 0; u < kDepth; ++u)
      if (u >= first && u < end && kb + u * stride < K) load(u, kb + u * stride);
  };
  constexpr int kPre = DSV4_GEMV_PRE < kDepth ? DSV4_GEMV_PRE : kDepth;
  if (active) load_slots(k0, 0, kPre);
  dev::pdl_begin();
  if (!active) return;
  load_slots(k0, kPre, kDepth);
  for (; k0 < K; k0 += kDepth * stride) {
#pragma unroll
    for (int u = 0; u < kDepth; ++u)
      if (k0 + u * stride < K) use(u, k0 + u * stride);
    if (k0 + kDepth * stride < K) load_slots(k0 + kDepth * stride, 0, kDepth);
  }
}

// SIMT block `block` of product a (its first row pair block · kWarps / ksplit): BF16 or F32 weights.
template <GemvWeights kW, int kM>
__device__ __forceinline__ void gemv_block(const GemvArgs& a, int64_t block, int ksplit, float* red_raw) {
  constexpr int V = kVec<kW>;
  auto red = reinterpret_cast<float(*)[kM][kRowsPerWarp]>(red_raw);
  const int lane = threadIdx.x & 31, w = threadIdx.x / 32;
  const int part = w % ksplit;
  const int64_t pair = block * (kWarps / ksplit) + w / ksplit;
  const int64_t n0 = pair * kRowsPerWarp;
  const bool active = n0 < a.N;
  const bool second = n0 + 1 < a.N;
  const int64_t n1 = second ? n0 + 1 : n0;
  // Both rows lie in one group (group_rows is even).
  const int64_t col0 = active && a.group_rows ? (n0 / a.group_rows) * a.group_stride : 0;
  const int64_t stride = static_cast<int64_t>(ksplit) * 32 * V;
  uint4 raw0[kInFlight], raw1[kInFlight];
  float acc0[kM] = {}, acc1[kM] = {};
  stream_steps<kInFlight>(
      active, (static_cast<int64_t>(part) * 32 + lane) * V, stride, a.K,
      [&](int u, int64_t k) {
        raw0[u] = load_w<kW>(a, n0, k);
        raw1[u] = load_w<kW>(a, n1, k);
      },
      [&](int u, int64_t k) {
        const uint32_t* r0 = reinterpret_cast<const uint32_t*>(&raw0[u]);
        const uint32_t* r1 = reinterpret_cast<const uint32_t*>(&raw1[u]);
#pragma unroll
        for (int m = 0; m < kM; ++m) {
          if (m >= a.M) break;
          float xv[V];
          load_x<kW>(a, m, col0 + k, xv);
          // Per word: its weights of both rows against the matching activations, in column order.
          constexpr int kPerWord = V / 4;
          float d0 = 0.0f, d1 = 0.0f;
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            float w0[kPerWord], w1[kPerWord];
            decode_word<kW>(r0[i], w0);
            decode_word<kW>(r1[i], w1);
#pragma unroll
            for (int j = 0; j < kPerWord; ++j) {
              d0 = fmaf(w0[j], xv[kPerWord * i + j], d0);
              d1 = fmaf(w1[j], xv[kPerWord * i + j], d1);
            }
          }
          acc0[m] += d0;
          acc1[m] += d1;
        }
      });
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

// c[16×8] += a[16×32] · b[32×8], e4m3 → float32 (fragments as in the PTX ISA, 4 bytes a register).
__device__ __forceinline__ void mma_e4m3(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                         uint32_t b1) {
  asm("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// y's FP8 form as well (GemvArgs::yq): the blocks of one 128-row scale block of y count themselves
// on done[] once their rows are written, and the last one rounds the whole block (every x row) by
// quantize_fp8_1x128_cuda's rule, so the next product reads FP8 without a quantize launch between
// the two. The last one returns the counter to zero for the next launch. rows: the block's first
// row r0 and its row count (a divisor of 128, so a block lies in one scale block).
__device__ __forceinline__ void round_output_block(const GemvArgs& a, int64_t r0, int rows) {
  __shared__ bool last;
  __threadfence();  // this thread's y, before the count that publishes it
  __syncthreads();
  const int64_t qb = r0 / 128;
  if (threadIdx.x == 0) {
    last = atomicAdd(a.done + qb, 1u) == static_cast<unsigned>(128 / rows) - 1;  // (N % 128 == 0)
    if (last) a.done[qb] = 0;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  const int lane = threadIdx.x & 31;
  for (int m = threadIdx.x / 32; m < a.M; m += kWarps) {  // a warp per x row
    const float4 v = __ldcg(reinterpret_cast<const float4*>(a.y + m * a.ldy + qb * 128) + lane);
    const float s = dev::quantize_e4m3_block128(v, a.yq + m * a.ldyq + qb * 128, lane);
    if (lane == 0) a.ys[qb * a.ldys + m] = s;
  }
}

// Tensor-core block `block` of product a (FP8 blocks): warp w's group of 16 rows starts at
// (block · kWarps / ksplit + w / ksplit) · 16. Lane (g, t) ends with rows g, g + 8 of the group
// for x rows 2t, 2t + 1 (the mma's C fragment).
__device__ __forceinline__ void gemv_fp8_block(const GemvArgs& a, int64_t block, int ksplit, float* red_raw) {
  auto red = reinterpret_cast<float(*)[kFp8Rows][kGemvMaxRows]>(red_raw);
  const int lane = threadIdx.x & 31, w = threadIdx.x / 32, g = lane >> 2, t = lane & 3;
  const int part = w % ksplit;
  const int64_t n0 = (block * (kWarps / ksplit) + w / ksplit) * kFp8Rows;
  const bool active = n0 < a.N;  // the warp's
  const int64_t na = n0 + g, nb = n0 + g + 8;
  // The 16 rows lie in one group (group_rows % 16 == 0) and one 128-row scale block (n0 % 16 == 0).
  const int64_t col0 = active && a.group_rows ? (n0 / a.group_rows) * a.group_stride : 0;
  const uint8_t* wa = active && na < a.N ? a.w_fp8 + na * a.ldw + 32 * t : nullptr;
  const uint8_t* wb = active && nb < a.N ? a.w_fp8 + nb * a.ldw + 32 * t : nullptr;
  const uint8_t* xr = g < a.M ? a.xq + g * a.ldxq + col0 + 32 * t : nullptr;
  const float* wscale = active ? a.w_scale + (n0 / 128) * a.ldw_scale : nullptr;
  const int64_t stride = static_cast<int64_t>(ksplit) * kFp8Step;
  uint4 ra[kFp8InFlight][2], rb[kFp8InFlight][2];
  float acc[4] = {};
  const int m0 = 2 * t, m1 = 2 * t + 1;  // the x rows of this lane's outputs
  stream_steps<kFp8InFlight>(
      active, static_cast<int64_t>(part) * kFp8Step, stride, a.K,
      [&](int u, int64_t k) {  // zeros past the rows
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          ra[u][h] = wa ? __ldcs(reinterpret_cast<const uint4*>(wa + k) + h) : make_uint4(0, 0, 0, 0);
          rb[u][h] = wb ? __ldcs(reinterpret_cast<const uint4*>(wb + k) + h) : make_uint4(0, 0, 0, 0);
        }
      },
      [&](int u, int64_t k) {
        uint4 xv[2] = {make_uint4(0, 0, 0, 0), make_uint4(0, 0, 0, 0)};
        if (xr) xv[0] = __ldg(reinterpret_cast<const uint4*>(xr + k)), xv[1] = __ldg(reinterpret_cast<const uint4*>(xr + k) + 1);
        const uint32_t* A = reinterpret_cast<const uint32_t*>(ra[u]);
        const uint32_t* B = reinterpret_cast<const uint32_t*>(rb[u]);
        const uint32_t* X = reinterpret_cast<const uint32_t*>(xv);
        float p[4] = {};
#pragma unroll
        for (int j = 0; j < 4; ++j) mma_e4m3(p, A[2 * j], B[2 * j], A[2 * j + 1], B[2 * j + 1], X[2 * j], X[2 * j + 1]);
        // The block's sum times its weight scale and its x row's scale, added in float32.
        const float sw = __ldg(wscale + k / kFp8Step);
        const float* xs = a.xs + ((col0 + k) / kFp8Step) * a.ldxs;
        const float s0 = m0 < a.M ? sw * __ldg(xs + m0) : 0.0f, s1 = m1 < a.M ? sw * __ldg(xs + m1) : 0.0f;
        acc[0] = fmaf(p[0], s0, acc[0]);
        acc[1] = fmaf(p[1], s1, acc[1]);
        acc[2] = fmaf(p[2], s0, acc[2]);
        acc[3] = fmaf(p[3], s1, acc[3]);
      });
  if (ksplit > 1) {
    red[w][g][m0] = acc[0], red[w][g][m1] = acc[1], red[w][g + 8][m0] = acc[2], red[w][g + 8][m1] = acc[3];
    __syncthreads();
    if (part == 0) {
      float v[4] = {};
      for (int q = 0; q < ksplit; ++q) {
        v[0] += red[w + q][g][m0], v[1] += red[w + q][g][m1];
        v[2] += red[w + q][g + 8][m0], v[3] += red[w + q][g + 8][m1];
      }
      acc[0] = v[0], acc[1] = v[1], acc[2] = v[2], acc[3] = v[3];
    }
  }
  if (active && part == 0) {
    auto put = [&](int64_t n, int m, float v) {
      if (n >= a.N || m >= a.M) return;
      float* y = a.y + m * a.ldy + n;
      *y = a.beta != 0.0f ? fmaf(a.beta, *y, v) : v;
    };
    put(na, m0, acc[0]);
    put(na, m1, acc[1]);
    put(nb, m0, acc[2]);
    put(nb, m1, acc[3]);
  }
  if (a.yq) round_output_block(a, block * (kWarps / ksplit) * kFp8Rows, kWarps / ksplit * kFp8Rows);
}

// Each block runs the product whose block range holds it, in that product's weight form: one
// form per launch (kForm), or any mix of them (kForm = kMixed: the gate in float32 and the shared
// expert in FP8, say, in one launch).
constexpr int kMixed = -1;
// Blocks per SM the registers must allow: 4 for one SIMT row (64 registers: the 512-block output
// projections in one wave), DSV4_FP8_BLOCKS where the tensor-core path may run.
template <int kM, int kForm>
constexpr int gemv_min_blocks() {
  return kM > 1 ? 2 : kForm == static_cast<int>(GemvWeights::FP8Block) || kForm == -1 ? DSV4_FP8_BLOCKS : 4;
}
template <int kM, int kForm>
__global__ void __launch_bounds__(kThreads, gemv_min_blocks<kM, kForm>())
    gemv_kernel(const __grid_constant__ GemvBatch batch) {
  __shared__ float red[kRedFloats];
  int mi = 0;
  while (mi + 1 < batch.count && static_cast<int>(blockIdx.x) >= batch.first_block[mi + 1]) ++mi;
  const GemvArgs& a = batch.mats[mi];
  const int64_t block = static_cast<int64_t>(blockIdx.x) - batch.first_block[mi];
  const int ks = batch.ksplit[mi];
  if constexpr (kForm == static_cast<int>(GemvWeights::FP8Block)) {
    gemv_fp8_block(a, block, ks, red);
  } else if constexpr (kForm != kMixed) {
    gemv_block<static_cast<GemvWeights>(kForm), kM>(a, block, ks, red);
  } else {
    switch (a.weights) {
      case GemvWeights::FP8Block: gemv_fp8_block(a, block, ks, red); break;
      case GemvWeights::BF16: gemv_block<GemvWeights::BF16, kM>(a, block, ks, red); break;
      case GemvWeights::F32: gemv_block<GemvWeights::F32, kM>(a, block, ks, red); break;
    }
  }
}

template <int kM>
auto kernel_for(const GemvArgs* mats, int count) {
  bool mixed = false;
  for (int i = 1; i < count; ++i) mixed |= mats[i].weights != mats[0].weights;
  if (mixed) return gemv_kernel<kM, kMixed>;
  switch (mats[0].weights) {
    case GemvWeights::FP8Block: return gemv_kernel<kM, static_cast<int>(GemvWeights::FP8Block)>;
    case GemvWeights::BF16: return gemv_kernel<kM, static_cast<int>(GemvWeights::BF16)>;
    default: return gemv_kernel<kM, static_cast<int>(GemvWeights::F32)>;
  }
}

void launch_gemv(const GemvArgs* mats, int count, cudaStream_t s) {
  static int sms = 0;
  if (!sms) DSV4_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  // Enough blocks to keep every SM streaming: split a row pair's (row group's) columns over up to
  // 8 warps when there are few of them (short matrices), as long as each warp keeps two column
  // steps. Decided per product from its own shape, so that a product sums the same in any launch.
  GemvBatch b{};
  b.count = count;
  b.first_block[0] = 0;
  for (int i = 0; i < count; ++i) {
    const GemvWeights wf = mats[i].weights;
    const int64_t units = (mats[i].N + rows_per_warp(wf) - 1) / rows_per_warp(wf);
    const int64_t steps = (mats[i].K + step_cols(wf) - 1) / step_cols(wf);
    const int64_t target = wf == GemvWeights::FP8Block ? DSV4_FP8_BLOCKS * sms : 2 * sms;  // blocks: the SMs' room
    int ks = 1;
    if (wf == GemvWeights::FP8Block) {  // the most splits that keep one wave
      while (ks < kWarps && (units * 2 * ks + kWarps - 1) / kWarps <= target && steps >= 4 * ks) ks *= 2;
    } else {
      while (ks < kWarps && (units * ks + kWarps - 1) / kWarps < target && steps >= 2 * ks) ks *= 2;
    }
    b.mats[i] = mats[i];
    b.ksplit[i] = ks;
    const int per_block = kWarps / ks;
    b.first_block[i + 1] = b.first_block[i] + static_cast<int>((units + per_block - 1) / per_block);
  }
  const unsigned blocks = static_cast<unsigned>(b.first_block[count]);
  if (blocks == 0) return;
  const int64_t M = mats[0].M;
  auto kernel = M <= 1   ? kernel_for<1>(mats, count)
                : M <= 2 ? kernel_for<2>(mats, count)
                : M <= 4 ? kernel_for<4>(mats, count)
                         : kernel_for<8>(mats, count);
  launch("gemv_kernel", kernel, blocks, kThreads, 0, s, b);
}

}  // namespace

bool gemv_fits(GemvWeights w, int64_t M, int64_t K) {
  const int v = vec_of(w);
  return M >= 1 && M <= kGemvMaxRows && K > 0 && K % v == 0 && (w != GemvWeights::FP8Block || K % 128 == 0);
}

void gemv_cuda(const GemvArgs& a, cudaStream_t s) { gemv_many_cuda(&a, 1, s); }

void gemv_many_cuda(const GemvArgs* mats, int count, cudaStream_t s) {
  DSV4_CHECK(count >= 1 && count <= kGemvMaxMats, "gemv", count, " products in one launch (1..", kGemvMaxMats, ")");
  for (int i = 0; i < count; ++i) {
    const GemvArgs& a = mats[i];
    DSV4_CHECK(gemv_fits(a.weights, a.M, a.K), "gemv", "M = ", a.M, ", K = ", a.K, " do not fit the few-row kernel");
    DSV4_CHECK(a.M == mats[0].M && a.K == mats[0].K, "gemv", "products in one launch share M and K");
    DSV4_CHECK(a.group_rows == 0 || (a.group_rows % 2 == 0 && a.group_stride % 16 == 0), "gemv", "groups of ",
               a.group_rows, " rows with stride ", a.group_stride, " are not supported");
    DSV4_CHECK(a.weights != GemvWeights::FP8Block || (a.group_stride % 128 == 0 && a.group_rows % kFp8Rows == 0),
               "gemv", "FP8 groups must be whole 16-row groups reading from 128-column scale blocks");
    DSV4_CHECK(!a.yq || (a.weights == GemvWeights::FP8Block && a.N % 128 == 0 && a.done && a.ys && a.beta == 0.0f),
               "gemv", "an FP8 output needs FP8 weights, whole 128-row blocks (N = ", a.N, "), counters and beta 0");
  }
  launch_gemv(mats, count, s);
}

}  // namespace dsv4::cuda
