// An experiment, not part of dsv4 (expert_fp8_stream.cu includes it): the routed experts' few-row
// products on Hopper's FP8 tensor cores. Measured slower than the bf16 register kernel of
// moe_experts.cu (bench/results/2026-11-29-cuda-12.md), so the model does not use it. The bf16 kernel (moe_experts.cu) spends most of its instructions
// turning FP4 codes into scaled bf16 pairs and the activation row into mma fragments, and runs at
// about half the HBM rate. Here the activations are rounded once to e4m3 in 1×128 blocks with
// power-of-two scales (the official FP8 inference's input rule for FP4 products, model.md §1)
// and staged in shared memory as the wgmma's B operand, and a 32-bit word of eight FP4 codes
// becomes two registers of A in seven integer instructions:
//   - an e2m1 code (s e1 e0 m) placed at e4m3 bits 7 (sign), 4 3 (exponent) and 2 (mantissa) is
//     the e4m3 of value e2m1 · 2^-6, subnormal 0.5 included: exact, no table;
//   - one wgmma m64n8k32 is one FP4 scale block (32 columns) of 64 output rows, so its float32
//     result is scaled by the rows' E8M0 factors (exact powers of two) and added in float32; the
//     activation scale (and the 2^6) multiplies each 128 columns' sum.
// A block is one warpgroup: 64 output rows of one expert (both W1 and W3 for SwiGLU) over a slice
// of K; the slices of a row tile form a thread block cluster and add their partial sums in rank
// order through distributed shared memory (deterministic).
//
// Lane (g, t) of warp w holds rows 16w + g and 16w + g + 8 and, in each scale block, code word t
// (columns 8t .. 8t + 7): its even columns are k 4t .. 4t + 3 of the wgmma, its odd columns
// k 16 + 4t .. 16 + 4t + 3. Column c of a block is therefore B's byte 128 (c % 2) + 16 n + c / 2
// for activation row n (two 8 × 16-byte core matrices along K).
#include <cooperative_groups.h>

#include "ops/cuda_device.cuh"
#include "ops/moe_experts.cuh"

namespace dsv4::cuda {

namespace {

namespace cg = cooperative_groups;
using namespace expert;
using dev::e4m3x2_rn;
using dev::fp8_scale_exp;
using dev::warp_max;
using ptx::fence_proxy_async_shared;
using ptx::wgmma_commit;
using ptx::wgmma_desc;
using ptx::wgmma_fence;
using ptx::wgmma_fence_operand;
using ptx::wgmma_wait;

// d[64×8] (+)= a[64×32] · b[32×8], e4m3 → float32; a in registers (each warp's 16 rows: a[0] row g,
// k 4t .. 4t + 3; a[1] row g + 8, the same k; a[2], a[3] the same rows at k 16 + 4t ..), b by
// descriptor; d: rows g, g + 8 × columns 2t, 2t + 1 as {d0, d1, d2, d3}. accumulate = false: d = a · b.
__device__ __forceinline__ void wgmma_m64n8k32_e4m3(float (&d)[4], const uint32_t (&a)[4], uint64_t b, bool accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %9, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n8k32.f32.e4m3.e4m3 {%0, %1, %2, %3}, {%4, %5, %6, %7}, %8, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(static_cast<uint32_t>(accumulate)));
}
// Keeps a register an asynchronous product reads alive (and unmoved) until this point.
__device__ __forceinline__ void wgmma_fence_operand(uint32_t& r) { asm volatile("" : "+r"(r)::"memory"); }

// Steps of weights a lane keeps in flight, and the blocks an SM must hold (registers).
#ifndef DSV4_EXPERT_FP8_DEPTH
#define DSV4_EXPERT_FP8_DEPTH 2
#endif
#ifndef DSV4_EXPERT_FP8_MIN_BLOCKS
#define DSV4_EXPERT_FP8_MIN_BLOCKS 4
#endif
// K slices (the cluster's blocks) of W1/W3 and of W2.
#ifndef DSV4_EXPERT_FP8_SPLIT13
#define DSV4_EXPERT_FP8_SPLIT13 4
#endif
#ifndef DSV4_EXPERT_FP8_SPLIT2
#define DSV4_EXPERT_FP8_SPLIT2 1
#endif

struct Fp8Config {
  static constexpr int kThreads = 128;            // one warpgroup
  static constexpr int kRows = 64;                // output rows of a block: M of the wgmma
  static constexpr int kCols = 8;                 // activation rows per pass: N of the wgmma
  static constexpr int kBlockK = 32;              // K of a wgmma: one FP4 scale block
  static constexpr int kStep = 128;               // columns of a step: one activation scale block
  static constexpr int kBlocks = kStep / kBlockK; // wgmmas a step and matrix
  static constexpr int kTile = kBlockK * kCols;   // bytes of B per scale block
  static constexpr int kDepth = DSV4_EXPERT_FP8_DEPTH;
};

// The e4m3 of e2m1 · 2^-6 for the low (even column) and high (odd column) nibble of each byte.
__device__ __forceinline__ uint32_t e4m3_of_low_nibbles(uint32_t q) {
  return ((q << 2) & 0x1C1C1C1Cu) | ((q << 4) & 0x80808080u);
}
__device__ __forceinline__ uint32_t e4m3_of_high_nibbles(uint32_t q) {
  return ((q >> 2) & 0x1C1C1C1Cu) | (q & 0x80808080u);
}
// Byte j of a word of E8M0 scales as the float 2^(b − 127) (b = 0: the subnormal 2^-127).
__device__ __forceinline__ float e8m0_byte(uint32_t w, int j) {  // j a constant after unrolling
  const uint32_t bits = (j < 3 ? w << (23 - 8 * j) : w >> 1) & 0x7F800000u;
  return __uint_as_float(max(bits, 0x00400000u));
}

// A lane's weights of one step: code word t of the 4 scale blocks and their 4 scale bytes, for rows
// g and g + 8 of each matrix.
template <int kMats>
struct Fp8Stage {
  uint32_t code[kMats][2][Fp8Config::kBlocks];
  uint32_t scale[kMats][2];
};

struct Fp8Rows {
  const uint8_t* codes[2][2] = {};   // [matrix][row]: the row's code word t of the slice's first block
  const uint8_t* scales[2][2] = {};  // the row's scale of the slice's first block
};

template <int kMats>
__device__ __forceinline__ void fp8_load(Fp8Stage<kMats>& st, const Fp8Rows& p, int step, bool valid) {
#pragma unroll
  for (int m = 0; m < kMats; ++m)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const bool on = valid && p.codes[m][r];
#if DSV4_EXPERT_FP8_FAKE_WIDE  // timing probe only: one 16-byte load (wrong words)
      const uint4 v = on ? __ldg(reinterpret_cast<const uint4*>(p.codes[m][r] - 4 * (threadIdx.x & 3) + step * 64 + 16 * (threadIdx.x & 3))) : make_uint4(0, 0, 0, 0);
      st.code[m][r][0] = v.x, st.code[m][r][1] = v.y, st.code[m][r][2] = v.z, st.code[m][r][3] = v.w;
#else
#pragma unroll
      for (int j = 0; j < Fp8Config::kBlocks; ++j)
        st.code[m][r][j] = on ? __ldg(reinterpret_cast<const uint32_t*>(p.codes[m][r] + step * 64 + 16 * j)) : 0u;
#endif
      st.scale[m][r] = on ? __ldg(reinterpret_cast<const uint32_t*>(p.scales[m][r] + step * 4)) : 0x7F7F7F7Fu;
    }
}

// Activation row n of the pass, columns [k0, k0 + Kc), into the B layout (xq) and its step scales
// times 2^6 (xs [step][n]); rows past the pass's end are zeros. One warp per (row, step): the
// rounding of quantize_e4m3_block128.
__device__ __forceinline__ void fp8_stage_x(const bf16* xrow, const float* xrow_f32, int k0, int steps, int n,
                                            uint8_t* xq, float* xs) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (!xrow && !xrow_f32) {  // no row: zeros
    for (int q = warp; q < steps; q += Fp8Config::kThreads / 32) {
      uint8_t* dst = xq + (4 * q + lane / 8) * Fp8Config::kTile + 16 * n + 2 * (lane % 8);
      *reinterpret_cast<uint16_t*>(dst) = 0;
      *reinterpret_cast<uint16_t*>(dst + 128) = 0;
      if (lane == 0) xs[q * Fp8Config::kCols + n] = 0.0f;
    }
    return;
  }
  for (int q = warp; q < steps; q += Fp8Config::kThreads / 32) {
    const int col = k0 + q * Fp8Config::kStep + 4 * lane;
    float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (xrow_f32) {
      v = __ldg(reinterpret_cast<const float4*>(xrow_f32 + col));
    } else if (xrow) {
      const uint2 b = __ldg(reinterpret_cast<const uint2*>(xrow + col));
      const float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&b.x));
      const float2 hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&b.y));
      v = make_float4(lo.x, lo.y, hi.x, hi.y);
    }
    float amax = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
    amax = warp_max(amax);
    const int e = fp8_scale_exp(amax);
    const float inv = ldexpf(1.0f, -e);
    // columns 4m .. 4m + 3 of scale block b (m = lane % 8): bytes 2m, 2m + 1 of both core matrices
    uint8_t* dst = xq + (4 * q + lane / 8) * Fp8Config::kTile + 16 * n + 2 * (lane % 8);
    *reinterpret_cast<uint16_t*>(dst) = e4m3x2_rn(v.x * inv, v.z * inv);
    *reinterpret_cast<uint16_t*>(dst + 128) = e4m3x2_rn(v.y * inv, v.w * inv);
    if (lane == 0) xs[q * Fp8Config::kCols + n] = ldexpf(1.0f, e + 6);
  }
}

// Block (row tile blockIdx.x / S, K slice blockIdx.x % S = cluster rank; tile blockIdx.y).
// Dynamic shared memory: B of the slice [Kc / 32][256], xs [Kc / 128][8], and the partial sums
// [kMats][64][8] the cluster adds.
template <bool kSwiglu>
__global__ void __launch_bounds__(Fp8Config::kThreads, DSV4_EXPERT_FP8_MIN_BLOCKS)
moe_gemv_fp8_kernel(const bf16* x, const float* x_f32, int k, ExpertMatrix wa, ExpertMatrix wb, const int2* tiles,
                    const int32_t* ntiles, const int32_t* offsets, float limit, const float* weight,
                    const int32_t* perm, bf16* h_out, float* y_out, int split) {
  using C = Fp8Config;
  constexpr int kMats = kSwiglu ? 2 : 1;
  extern __shared__ __align__(128) uint8_t smem[];
  dev::pdl_begin();
  const int2 tile = tiles[blockIdx.y];
  if (static_cast<int>(blockIdx.y) >= *ntiles) return;  // the whole cluster: one tile
  const int e = tile.x;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int K = wa.cols, N = wa.rows, Kc = K / split, steps = Kc / C::kStep;
  const int rank = static_cast<int>(blockIdx.x) % split, n0 = static_cast<int>(blockIdx.x) / split * C::kRows;
  const int k0 = rank * Kc;
  uint8_t* xq = smem;
  float* xs = reinterpret_cast<float*>(smem + steps * C::kBlocks * C::kTile);
  float* part = xs + steps * C::kCols;  // [kMats][64][8]

  Fp8Rows rows;
#pragma unroll
  for (int m = 0; m < kMats; ++m)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const ExpertMatrix& w = m == 0 ? wa : wb;
      const int n = n0 + 16 * warp + g + 8 * r;
      if (n >= N) continue;
      const int64_t row = static_cast<int64_t>(e) * N + n;
      rows.codes[m][r] = w.codes + row * (K / 2) + k0 / 2 + 4 * t;
      rows.scales[m][r] = w.scales + row * (K / 32) + k0 / 32;
    }
  Fp8Stage<kMats> st[C::kDepth];
  auto load_first_steps = [&] {
#pragma unroll
    for (int u = 0; u < C::kDepth; ++u) fp8_load(st[u], rows, u, u < steps);
  };
  load_first_steps();
  const uint64_t desc0 = wgmma_desc(xq, 128, 256);
  const int r_begin = offsets[e], r_end = offsets[e + 1];
  for (int r0 = r_begin; r0 < r_end; r0 += C::kCols) {
    const int nr = min(C::kCols, r_end - r0);
    if (r0 > r_begin) __syncthreads();  // the previous pass's wgmmas and sums are done with xq and part
    for (int n = 0; n < C::kCols; ++n) {
      const bf16* xrow = nullptr;
      const float* xrow_f32 = nullptr;
      if (n < nr) {
        if (kSwiglu && x_f32) xrow_f32 = x_f32 + static_cast<int64_t>(perm[r0 + n] / k) * K;
        else xrow = x + static_cast<int64_t>(r0 + n) * K;
      }
#if !DSV4_EXPERT_FP8_NO_STAGE  // timing probe: no activation staging (garbage sums)
      fp8_stage_x(xrow, xrow_f32, k0, steps, n, xq, xs);
#endif
    }
    fence_proxy_async_shared();
    __syncthreads();

    float acc[kMats][4] = {};
    float blk[2][kMats][4];  // two scale blocks' products in flight
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int m = 0; m < kMats; ++m)
#pragma unroll
        for (int c = 0; c < 4; ++c) blk[i][m][c] = 0.0f;
    for (int s0 = 0; s0 < steps; s0 += C::kDepth) {
#pragma unroll
      for (int u = 0; u < C::kDepth; ++u) {
        const int s = s0 + u;
        if (s >= steps) break;
        float step_sum[kMats][4] = {};
        uint32_t a[2][kMats][4];
        // scale block j: its wgmmas go out, then block j − 1's result is scaled and added
#pragma unroll
        for (int j = 0; j <= C::kBlocks; ++j) {
          if (j < C::kBlocks) {
#pragma unroll
            for (int m = 0; m < kMats; ++m) {
              a[j & 1][m][0] = e4m3_of_low_nibbles(st[u].code[m][0][j]);
              a[j & 1][m][1] = e4m3_of_low_nibbles(st[u].code[m][1][j]);
              a[j & 1][m][2] = e4m3_of_high_nibbles(st[u].code[m][0][j]);
              a[j & 1][m][3] = e4m3_of_high_nibbles(st[u].code[m][1][j]);
            }
#if DSV4_EXPERT_FP8_NO_MMA  // timing probe: the decoded words summed instead of multiplied
#pragma unroll
            for (int m = 0; m < kMats; ++m)
#pragma unroll
              for (int c = 0; c < 4; ++c) blk[j & 1][m][c] += __uint_as_float(a[j & 1][m][c] & 0x3FFFFFFFu);
#else
            wgmma_fence();
#pragma unroll
            for (int m = 0; m < kMats; ++m)
              wgmma_m64n8k32_e4m3(blk[j & 1][m], a[j & 1][m], desc0 + (4 * s + j) * (C::kTile / 16), false);
            wgmma_commit();
#endif
          }
          if (j == 0) continue;
#if !DSV4_EXPERT_FP8_NO_MMA
          if (j < C::kBlocks) wgmma_wait<1>();
          else wgmma_wait<0>();
#endif
          const int p = (j - 1) & 1;
#pragma unroll
          for (int m = 0; m < kMats; ++m) {
#pragma unroll
            for (int c = 0; c < 4; ++c) wgmma_fence_operand(blk[p][m][c]);
#pragma unroll
            for (int c = 0; c < 4; ++c) wgmma_fence_operand(a[p][m][c]);
            const float w0 = e8m0_byte(st[u].scale[m][0], j - 1), w1 = e8m0_byte(st[u].scale[m][1], j - 1);
            step_sum[m][0] = fmaf(w0, blk[p][m][0], step_sum[m][0]);
            step_sum[m][1] = fmaf(w0, blk[p][m][1], step_sum[m][1]);
            step_sum[m][2] = fmaf(w1, blk[p][m][2], step_sum[m][2]);
            step_sum[m][3] = fmaf(w1, blk[p][m][3], step_sum[m][3]);
          }
        }
        // the step's activation scales (columns 2t, 2t + 1), then the lane's next weights
        const float2 sx = *reinterpret_cast<const float2*>(xs + s * C::kCols + 2 * t);
#pragma unroll
        for (int m = 0; m < kMats; ++m) {
          acc[m][0] = fmaf(sx.x, step_sum[m][0], acc[m][0]);
          acc[m][1] = fmaf(sx.y, step_sum[m][1], acc[m][1]);
          acc[m][2] = fmaf(sx.x, step_sum[m][2], acc[m][2]);
          acc[m][3] = fmaf(sx.y, step_sum[m][3], acc[m][3]);
        }
        const int next = s + C::kDepth;
        fp8_load(st[u], rows, next, next < steps);
      }
    }
    if (r0 + C::kCols < r_end) load_first_steps();  // the next pass's, under the sums

    // acc[m] = rows (g, g + 8) × activation rows (2t, 2t + 1) of this slice: the cluster's slices
    // add theirs in rank order; rank ρ finishes rows [ρ·64/S, (ρ + 1)·64/S).
    const int row_l = 16 * warp + g;
#pragma unroll
    for (int m = 0; m < kMats; ++m) {
      float* pm = part + m * C::kRows * C::kCols;
      pm[row_l * C::kCols + 2 * t] = acc[m][0];
      pm[row_l * C::kCols + 2 * t + 1] = acc[m][1];
      pm[(row_l + 8) * C::kCols + 2 * t] = acc[m][2];
      pm[(row_l + 8) * C::kCols + 2 * t + 1] = acc[m][3];
    }
    cg::cluster_group cluster = cg::this_cluster();
    if (split > 1) cluster.sync();
    else __syncthreads();
    const int per_rank = C::kRows / split;
    for (int i = threadIdx.x; i < per_rank * C::kCols; i += C::kThreads) {
      const int row = rank * per_rank + i / C::kCols, col = i % C::kCols, n = n0 + row;
      if (n >= N || col >= nr) continue;
      float a = 0.0f, b = 0.0f;
      for (int q = 0; q < split; ++q) {
        const float* pq = split > 1 ? cluster.map_shared_rank(part, q) : part;
        a += pq[row * C::kCols + col];
        if (kSwiglu) b += pq[C::kRows * C::kCols + row * C::kCols + col];
      }
      const int64_t r = r0 + col;
      if (kSwiglu) h_out[r * N + n] = __float2bfloat16_rn(swiglu_value(a, b, limit) * weight[perm[r]]);
      else y_out[r * N + n] = a;
    }
    if (split > 1) cluster.sync();  // no block leaves (or rewrites part) while another reads it
  }
}

size_t fp8_smem(int Kc, int mats) {
  using C = Fp8Config;
  const int steps = Kc / C::kStep;
  return static_cast<size_t>(steps) * C::kBlocks * C::kTile + static_cast<size_t>(steps) * C::kCols * 4 +
         static_cast<size_t>(mats) * C::kRows * C::kCols * 4;
}

template <bool kSwiglu>
void launch_fp8(const bf16* x, const float* x_f32, int k, const ExpertMatrix& wa, const ExpertMatrix& wb,
                const int2* tiles, const int32_t* ntiles, int max_tiles, const int32_t* offsets, float limit,
                const float* weight, const int32_t* perm, bf16* h, float* y, int split, cudaStream_t s) {
  using C = Fp8Config;
  DSV4_CHECK(max_tiles <= 65535, "moe", "gemv: ", max_tiles, " tiles, more than a grid column holds (65535)");
  const size_t smem = fp8_smem(wa.cols / split, kSwiglu ? 2 : 1);
  auto kernel = moe_gemv_fp8_kernel<kSwiglu>;
  if (smem > 48 * 1024)
    DSV4_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  cudaLaunchAttribute attr[3];
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>((wa.rows + C::kRows - 1) / C::kRows * split), static_cast<unsigned>(max_tiles));
  cfg.blockDim = dim3(C::kThreads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cfg.attrs = attr;
  cfg.numAttrs = static_cast<unsigned>(launch_attributes(s, static_cast<unsigned>(split), attr));
  check(cudaLaunchKernelEx(&cfg, kernel, x, x_f32, k, wa, wb, tiles, ntiles, offsets, limit, weight, perm, h, y, split),
        "moe_gemv_fp8_kernel", __FILE__, __LINE__);
}

}  // namespace

// The FP8 products (few rows, decode): the activation rows (xs bf16, or the float32 token rows
// x[perm[r] / k] with xs null) and h rounded to e4m3 in 1×128 blocks with power-of-two scales,
// FP4 weights exact, each 32-column scale block's products summed by wgmma, then scaled and added
// in float32. moe_gemv_fp8_split: the K slices for w, 0 where the kernel does not apply.
int moe_gemv_fp8_split(const ExpertMatrix& w, bool swiglu) {
  using C = Fp8Config;
  if (!w.codes || w.cols % C::kStep != 0) return 0;
  int split = swiglu ? DSV4_EXPERT_FP8_SPLIT13 : DSV4_EXPERT_FP8_SPLIT2;
  while (split > 1 && w.cols % (C::kStep * split) != 0) split /= 2;
  return split;
}

void moe_gemv_fp8_swiglu_cuda(const bf16* xs, const float* x, int k, const ExpertMatrix& w1, const ExpertMatrix& w3,
                              const int2* tiles, const int32_t* ntiles, int max_tiles, const int32_t* offsets,
                              float limit, const float* weight, const int32_t* perm, bf16* h, cudaStream_t s) {
  const int split = moe_gemv_fp8_split(w1, true);
  DSV4_CHECK(split > 0 && w3.codes && w1.rows == w3.rows && w1.cols == w3.cols, "moe",
             "fp8 gemv: FP4 w1 and w3 of one shape with columns a multiple of 128 needed");
  DSV4_CHECK((xs != nullptr) != (x != nullptr), "moe", "fp8 gemv: bf16 rows or float32 token rows, one of them");
  if (max_tiles == 0) return;
  launch_fp8<true>(xs, x, k, w1, w3, tiles, ntiles, max_tiles, offsets, limit, weight, perm, h, nullptr, split, s);
}

void moe_gemv_fp8_down_cuda(const bf16* h, const ExpertMatrix& w2, const int2* tiles, const int32_t* ntiles,
                            int max_tiles, const int32_t* offsets, float* y, cudaStream_t s) {
  const int split = moe_gemv_fp8_split(w2, false);
  DSV4_CHECK(split > 0, "moe", "fp8 gemv: FP4 w2 with columns a multiple of 128 needed");
  if (max_tiles == 0) return;
  launch_fp8<false>(h, nullptr, 1, w2, w2, tiles, ntiles, max_tiles, offsets, 0.0f, nullptr, nullptr, nullptr, y, split, s);
}

}  // namespace dsv4::cuda
