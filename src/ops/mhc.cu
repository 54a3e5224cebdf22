// CUDA mHC (contracts in mhc.h / cuda_ops.h): float32 throughout, as the spec requires.
// The mix product fn · x comes from a float32 GEMM (many tokens) or from hc_mix_kernel's
// column-slice partials (few tokens); hc_pre_kernel then does the rest per token. Decode runs
// both in one launch instead: hc_pre_fused_kernel, a thread block cluster per token.
#include <cooperative_groups.h>

#include <algorithm>

#include "cuda/check.h"
#include "cuda/launch.h"
#include "ops/cuda_device.cuh"
#include "ops/cuda_ptx.cuh"

namespace dsv4::cuda {

namespace {

namespace cg = cooperative_groups;

constexpr int kMaxStreams = 5;  // comb (n × n) lives in one warp
// The few-token mix product (and the fused kernel): n ≤ kMixMaxStreams, (2 + n) · n rows.
constexpr int kMixThreads = 256, kMixMaxStreams = 4, kMixMaxRows = (2 + kMixMaxStreams) * kMixMaxStreams;

__device__ __forceinline__ float sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }

static_assert(kMaxStreams * kMaxStreams <= 32, "comb fits one warp");
static_assert(kHcMixRow == kMixMaxRows + 1, "hc_comb_cuda's mix row: the mix columns, then the sum of squares");

// comb of one token by one warp (model.md §3) from its logits: lane j·n + k holds comb[j][k]
// (lanes ≥ n·n: nothing). Row and column sums by xor shuffles when n is a power of two (a row's
// lanes are neighbours, a column's are n apart), else through shared memory cs [32] in index
// order (as the CPU sums them). A chain of 2·iters dependent steps.
__device__ __forceinline__ float sinkhorn_warp(float logit, int n, float hc_eps, int iters, float* cs) {
  const int lane = threadIdx.x & 31;
  const bool on = lane < n * n, pow2 = (n & (n - 1)) == 0;
  const int j = lane / n, k = lane % n;
  float c = on ? logit : 0.0f;
  // The sum over this lane's row (first = j·n, step 1, xor 1 .. n/2) or column (first = k,
  // step n, xor n .. n²/2).
  auto line_sum = [&](float v, int first, int step) {
    if (pow2) {
      for (int o = step; o < n * step; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      return v;
    }
    cs[lane] = v;
    __syncwarp();
    float sum = 0.0f;
    if (on)
      for (int i = 0; i < n; ++i) sum += cs[first + i * step];
    __syncwarp();
    return sum;
  };
  auto row_sum = [&](float v) { return line_sum(v, j * n, 1); };
  auto col_sum = [&](float v) { return line_sum(v, k, n); };
  cs[lane] = c;
  __syncwarp();
  float mx = -INFINITY;
  if (on)
    for (int i = 0; i < n; ++i) mx = fmaxf(mx, cs[j * n + i]);
  __syncwarp();
  c = on ? expf(c - mx) : 0.0f;
  c = c / row_sum(c) + hc_eps;
  for (int it = 0; it < iters; ++it) {
    if (it > 0) c = c / (row_sum(c) + hc_eps);
    c = c / (col_sum(c) + hc_eps);
  }
  return c;
}

// One block per token (at least two warps). Shared: y [D], then the mix partials.
// Warp 0 computes pre and post, then normalizes comb (sinkhorn_warp) while the other warps mix
// the streams into y and normalize it: the two overlap.
__global__ void hc_pre_kernel(const float* X, const float* mix, int parts, int64_t T, int n, int64_t D,
                              const float* base, const float* scale, float eps, float hc_eps, int iters, bool head,
                              const float* norm, float* a, float* post, float* comb, uint8_t* q, float* qs) {
  dev::pdl_begin();
  extern __shared__ float y[];
  __shared__ float scratch[33];
  __shared__ float pre[kMaxStreams];
  __shared__ float mixs[(2 + kMaxStreams) * kMaxStreams];
  __shared__ float cs[32];
  __shared__ float colsum[(2 + kMaxStreams) * kMaxStreams + 1];
  const int64_t t = blockIdx.x, nD = n * D;
  const float* x = X + t * nD;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  // hc_mix's partials of this token (each slice's mix rows and its sum of squares), all at once
  // into shared memory (behind y [D]); or the GEMM's mix row (parts = 0).
  const int rows = head ? n : (2 + n) * n, width = parts > 0 ? rows + 1 : rows, np = parts > 0 ? parts : 1;
  float* mp = y + D;
  for (int i = threadIdx.x; i < np * width; i += blockDim.x) mp[i] = mix[((i / width) * T + t) * width + i % width];
  const bool vec = D % 4 == 0;
  float ss = 0.0f;
  if (parts == 0) {
    if (vec) {
      const float4* x4 = reinterpret_cast<const float4*>(x);
#pragma unroll 8
      for (int64_t i = threadIdx.x; i < nD / 4; i += blockDim.x) {
        const float4 v = x4[i];
        ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
      }
    } else {
      for (int64_t i = threadIdx.x; i < nD; i += blockDim.x) ss += x[i] * x[i];
    }
    ss = dev::block_sum(ss, scratch);  // its barriers also publish mp
  } else {
    __syncthreads();
  }
  // Column sums of the partials, one warp per column (the mix rows, then Σ x²).
  for (int c = warp; c < width; c += nwarps) {
    float v = 0.0f;
    for (int p = lane; p < np; p += 32) v += mp[p * width + c];
    v = dev::warp_sum(v);
    if (lane == 0) colsum[c] = v;
  }
  __syncthreads();
  if (parts > 0) ss = colsum[rows];
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(nD) + eps);
  if (warp == 0) {
    for (int i = lane; i < rows; i += 32) mixs[i] = colsum[i];
    __syncwarp();
    if (lane < n) {
      pre[lane] = sigmoid(mixs[lane] * inv * scale[0] + base[lane]) + hc_eps;
      if (!head) post[t * n + lane] = 2.0f * sigmoid(mixs[n + lane] * inv * scale[1] + base[n + lane]);
    }
  }
  __syncthreads();

  if (warp == 0) {
    if (head) return;
    const float logit = lane < n * n ? mixs[2 * n + lane] * inv * scale[2] + base[2 * n + lane] : 0.0f;
    const float c = sinkhorn_warp(logit, n, hc_eps, iters, cs);
    if (lane < n * n) comb[t * n * n + lane] = c;
    return;
  }

  // Warps 1..: y = Σ_j pre_j X[j], its RMS over their own barrier (warp 0 is busy), a = norm ⊙ y / rms.
  const int tid = threadIdx.x - 32, workers = blockDim.x - 32;
  float ys = 0.0f;
  if (vec) {
#pragma unroll 2
    for (int64_t d = tid; d < D / 4; d += workers) {
      float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
      for (int jj = 0; jj < kMaxStreams; ++jj) {
        if (jj >= n) break;
        const float4 xj = reinterpret_cast<const float4*>(x + jj * D)[d];
        const float pj = pre[jj];
        v.x += pj * xj.x, v.y += pj * xj.y, v.z += pj * xj.z, v.w += pj * xj.w;
      }
      reinterpret_cast<float4*>(y)[d] = v;
      ys += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
  } else {
    for (int64_t d = tid; d < D; d += workers) {
      float v = 0.0f;
      for (int jj = 0; jj < n; ++jj) v += pre[jj] * x[jj * D + d];
      y[d] = v;
      ys += v * v;
    }
  }
  ys = dev::warp_sum(ys);
  if (lane == 0) scratch[warp] = ys;
  asm volatile("bar.sync 1, %0;" ::"r"(workers) : "memory");
  float total = 0.0f;
  for (int w = 1; w < nwarps; ++w) total += scratch[w];
  const float inv2 = 1.0f / sqrtf(total / static_cast<float>(D) + eps);
  if (q) {  // one worker warp per 128 outputs: a, then its FP8 rounding (quantize_fp8_1x128_cuda's rule)
    for (int64_t b = warp - 1; b < D / 128; b += nwarps - 1) {
      const int64_t d = b * 128 + lane * 4;
      const float4 yv = *reinterpret_cast<const float4*>(y + d), nv = *reinterpret_cast<const float4*>(norm + d);
      const float4 v = make_float4(nv.x * (yv.x * inv2), nv.y * (yv.y * inv2), nv.z * (yv.z * inv2), nv.w * (yv.w * inv2));
      *reinterpret_cast<float4*>(a + t * D + d) = v;
      const float sc = dev::quantize_e4m3_block128(v, q + t * D + b * 128, lane);
      if (lane == 0) qs[b * T + t] = sc;
    }
    return;
  }
#pragma unroll 4
  for (int64_t d = tid; d < D; d += workers) a[t * D + d] = norm[d] * (y[d] * inv2);
}

// Column slice `blockIdx.x` of the mix product for token blockIdx.y: parts [S][T][N + 1] with
// parts[s][t][i] = Σ_{c in slice s} fn[i, c] · X[t, c] and parts[s][t][N] = Σ_{c in slice s} X[t, c]².
// Each thread keeps N + 1 partial sums.
__global__ void __launch_bounds__(kMixThreads) hc_mix_kernel(const float* X, const float* fn, int64_t T, int64_t K, int N,
                                                             float* parts) {
  dev::pdl_begin();
  __shared__ float red[kMixThreads / 32][kMixMaxRows + 1];
  const int64_t t = blockIdx.y, slice = (K + gridDim.x - 1) / gridDim.x;
  const int64_t c0 = blockIdx.x * slice, c1 = min(K, c0 + slice);
  float acc[kMixMaxRows + 1] = {};  // the mix rows, then Σ x² (hc_pre's RMS)
  for (int64_t c = c0 + threadIdx.x; c < c1; c += kMixThreads) {
    const float x = X[t * K + c];
#pragma unroll
    for (int i = 0; i < kMixMaxRows; ++i)
      if (i < N) acc[i] = fmaf(fn[i * K + c], x, acc[i]);
    acc[kMixMaxRows] += x * x;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int i = 0; i <= kMixMaxRows; ++i) {
    if (i >= N && i < kMixMaxRows) continue;
    const float v = dev::warp_sum(acc[i]);
    if (lane == 0) red[warp][i] = v;
  }
  __syncthreads();
  if (threadIdx.x <= N) {
    const int i = threadIdx.x < N ? threadIdx.x : kMixMaxRows;
    float v = 0.0f;
    for (int w = 0; w < kMixThreads / 32; ++w) v += red[w][i];
    parts[(blockIdx.x * T + t) * (N + 1) + threadIdx.x] = v;
  }
}

// ---- hc_mix + hc_pre fused, few tokens (decode) -------------------------------------------------
//
// One thread block cluster per token. Block `rank` owns the columns [d0, d0 + Ds) of every stream
// (D in 128-column units, split as evenly as floor division gives):
//   - before pdl_begin, its share of fn (the columns j·D + d0 .. of every row) and of norm are
//     loaded: weights, so that load overlaps the previous kernel's tail. fn goes to registers when
//     each thread has one item of the slice (decode at D = 4096), else to shared memory by cp.async;
//   - its partial mix row and Σ x² (column sums over the block, side by side) are pushed into every
//     block's shared memory (distributed shared memory), one cluster barrier, then each warp sums
//     the partials in rank order: the same bits in every warp of every block, every run;
//   - every block computes pre; block 0's warp 0 also post and comb (the Sinkhorn, which no other
//     warp or block waits for); the other warps make y of the slice, its Σ y² goes around the
//     cluster like the mix, then a = norm ⊙ y / rms and its FP8 blocks.
// Partials are pushed, never pulled, so no block waits for the others before it leaves.
struct FusedConfig {
  static constexpr int kThreads = 256, kWarps = kThreads / 32;
  static constexpr int kMaxCluster = 8;          // the portable cluster size
  static constexpr int kMaxClusterWide = 16;     // non-portable, where the GPU co-schedules it (H100/H200)
  static constexpr int kUnit = 128;              // columns of one FP8 block: a block owns whole units
  static constexpr int kCols = kMixMaxRows + 1;  // the mix rows, then Σ x² (column kMixMaxRows)
  static_assert(kUnit == 4 * 32, "one warp covers a unit with 16-byte accesses");
  static_assert(kMaxClusterWide <= 32 && kCols <= 32, "one lane per block of the cluster, one per mix column");
};

// Four floats rounded to bf16, stored as one 8-byte word.
__device__ __forceinline__ void store_bf16x4(bf16* p, const float4& v) {
  *reinterpret_cast<uint2*>(p) = make_uint2(ptx::pack_bf16x2(v.x, v.y), ptx::pack_bf16x2(v.z, v.w));
}
__device__ __forceinline__ void cluster_arrive_relaxed() { asm volatile("barrier.cluster.arrive.relaxed;" ::: "memory"); }
__device__ __forceinline__ void cluster_arrive() { asm volatile("barrier.cluster.arrive.release;" ::: "memory"); }
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.acquire;" ::: "memory"); }

// hc_post_kernel's X' [t, :, d0 + 4g] for the slice's groups g < G (moe_combine_kernel's o first
// where p.moe.ys is given), with their operations in their order: the same bits. Into p.Xout and
// x_s [n][G].
__device__ __forceinline__ void hc_post_slice(const HcPostArgs& p, int64_t t, int n, int D, int d0, int G, float4* x_s) {
  const int64_t nD = static_cast<int64_t>(n) * D;
  const float* post = p.post + t * n;
  const float* comb = p.comb + t * n * n;
  // post and comb in registers first, their loads beside the streams': one round trip, not one per
  // stream k of the loop below (~0.3 µs of the fused kernel, 2026-11-30-cuda-19.md).
  constexpr int kN = kMixMaxStreams;
  float post_r[kN], comb_r[kN][kN];
#pragma unroll
  for (int k = 0; k < kN; ++k) {
    post_r[k] = k < n ? post[k] : 0.0f;
#pragma unroll
    for (int j = 0; j < kN; ++j) comb_r[j][k] = j < n && k < n ? comb[j * n + k] : 0.0f;
  }
  for (int g = threadIdx.x; g < G; g += blockDim.x) {
    const int64_t d = d0 + 4 * g;
    // The streams' X first: their loads travel with the expert rows' indices (a round trip less:
    // B=1 4K 3.22 -> 3.20 ms, 2026-11-29-cuda-11.md).
    float4 xp[kMaxStreams];
#pragma unroll
    for (int j = 0; j < kMaxStreams; ++j)
      if (j < n) xp[j] = *reinterpret_cast<const float4*>(p.X + t * nD + j * D + d);
    float4 o;
    if (p.moe.ys) {
      // The expert rows' indices (without inv the rows are in assignment order: no index loads),
      // then the rows, each a batch of loads in flight (a loop of dependent pairs waited two round
      // trips per expert); added in expert order.
      constexpr int kBatch = 8;
      const int k = p.moe.k;
      const float4 sh = *reinterpret_cast<const float4*>(p.moe.shared + t * D + d);
      float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      for (int i0 = 0; i0 < k; i0 += kBatch) {
        int row[kBatch];
        float4 y[kBatch];
#pragma unroll
        for (int i = 0; i < kBatch; ++i)
          row[i] = i0 + i >= k ? 0 : p.moe.inv ? p.moe.inv[t * k + i0 + i] : static_cast<int>(t * k + i0 + i);
#pragma unroll
        for (int i = 0; i < kBatch; ++i)
          if (i0 + i < k) y[i] = *reinterpret_cast<const float4*>(p.moe.ys + static_cast<int64_t>(row[i]) * D + d);
#pragma unroll
        for (int i = 0; i < kBatch; ++i)
          if (i0 + i < k) v.x += y[i].x, v.y += y[i].y, v.z += y[i].z, v.w += y[i].w;
      }
      o = make_float4(sh.x + v.x, sh.y + v.y, sh.z + v.z, sh.w + v.w);
    } else {
      o = *reinterpret_cast<const float4*>(p.o + t * D + d);
    }
#pragma unroll
    for (int k = 0; k < kN; ++k) {
      if (k >= n) break;
      const float pk = post_r[k];
      float4 v = make_float4(pk * o.x, pk * o.y, pk * o.z, pk * o.w);
#pragma unroll
      for (int j = 0; j < kN; ++j)
        if (j < n) {
          const float c = comb_r[j][k];
          v = make_float4(fmaf(c, xp[j].x, v.x), fmaf(c, xp[j].y, v.y), fmaf(c, xp[j].z, v.z), fmaf(c, xp[j].w, v.w));
        }
      *reinterpret_cast<float4*>(p.Xout + t * nD + k * D + d) = v;
      x_s[k * G + g] = v;
    }
  }
}

// Dynamic shared memory: fn's share [rows][n][Ds] (at least kCols × kThreads floats: the column sums
// reuse it), norm's [Ds], X[t]'s [n][Ds], y [Ds] (as float4 groups).
// With step.Xout: X[t]'s slice is made first from the previous sub-layer's (hc_post_slice), X = step.Xout.
__global__ void __launch_bounds__(FusedConfig::kThreads)
    hc_pre_fused_kernel(const float* X, const float* fn, int64_t T, int n, int D, const float* base, const float* scale,
                        float eps, float hc_eps, int iters, bool head, const float* norm, float* a, float* post,
                        float* comb, uint8_t* q, float* qs, float* mix_out, HcPostArgs step, bf16* ab) {
  using C = FusedConfig;
  __shared__ float gather[C::kMaxClusterWide][C::kCols];    // pushed by block r: its partial mix
  __shared__ float ygather[C::kMaxClusterWide][C::kWarps];  // pushed by block r: its warps' Σ y²
  __shared__ float cs[32];
  extern __shared__ float4 smem4[];
  const cg::cluster_group cluster = cg::this_cluster();
  const int nblocks = static_cast<int>(cluster.num_blocks()), rank = static_cast<int>(cluster.block_rank());
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t t = blockIdx.x / nblocks, nD = static_cast<int64_t>(n) * D;
  const int units = D / C::kUnit, u0 = rank * units / nblocks, u1 = (rank + 1) * units / nblocks;
  const int d0 = u0 * C::kUnit, G = (u1 - u0) * (C::kUnit / 4);  // float4 groups of the slice
  const int rows = head ? n : (2 + n) * n, items = n * G;        // item j·G + g: stream j, group g
  float4* fn_s = smem4;                                                     // [rows][items]
  float4* norm_s = fn_s + max(rows * items, C::kCols * C::kThreads / 4);  // [G] (fn_s: also colred's)
  float4* x_s = norm_s + G;              // [items]
  float4* y_s = x_s + items;             // [G]

  cluster_arrive_relaxed();  // pushes into a block's shared memory wait until it has started
  // fn's share, item i (stream j, group g) of every row: with one item a thread (the decode shape:
  // D = 4096 on 16 blocks) straight into registers, else into shared memory (one division per
  // item, not three per copy: by our count, the copies' address arithmetic was a large share of
  // this kernel's instructions). Both before the wait.
  const bool fn_regs = items <= C::kThreads;
  float4 fn_r[kMixMaxRows];
  if (fn_regs) {
    if (threadIdx.x < items) {
      const int i = threadIdx.x, j = i / G, g = i - j * G;
      const float4* src = reinterpret_cast<const float4*>(fn + static_cast<int64_t>(j) * D + d0 + 4 * g);
#pragma unroll
      for (int r = 0; r < kMixMaxRows; ++r) fn_r[r] = r < rows ? __ldg(src + r * (nD / 4)) : make_float4(0, 0, 0, 0);
    }
  } else {
    for (int i = threadIdx.x; i < items; i += C::kThreads) {
      const int j = i / G, g = i - j * G;
      const float* src = fn + static_cast<int64_t>(j) * D + d0 + 4 * g;
      for (int r = 0; r < rows; ++r) ptx::cp_async<16>(fn_s + r * items + i, src + r * nD);
    }
  }
  for (int g = threadIdx.x; g < G; g += C::kThreads) ptx::cp_async<16>(norm_s + g, norm + d0 + 4 * g);
  ptx::cp_async_commit();
  const float base_l = lane < rows ? base[lane] : 0.0f;  // lane c: base of mix column c
  const float scale0 = scale[0], scale1 = head ? 0.0f : scale[1], scale2 = head ? 0.0f : scale[2];
  dev::pdl_begin_early();

  if (step.Xout) {
    hc_post_slice(step, t, n, D, d0, G, x_s);
  } else {
    const float* x = X + t * nD;
    for (int i = threadIdx.x; i < items; i += C::kThreads)
      x_s[i] = reinterpret_cast<const float4*>(x + static_cast<int64_t>(i / G) * D + d0)[i % G];
  }
  ptx::cp_async_wait<0>();
  __syncthreads();
  // The slice's mix product and Σ x², per thread, then over the block.
  float acc[C::kCols] = {};
  auto mix_item = [&](const float4 xv, auto&& fn_row) {
#pragma unroll
    for (int r = 0; r < kMixMaxRows; ++r)
      if (r < rows) {
        const float4 f = fn_row(r);
        acc[r] = fmaf(f.w, xv.w, fmaf(f.z, xv.z, fmaf(f.y, xv.y, fmaf(f.x, xv.x, acc[r]))));
      }
    acc[kMixMaxRows] = fmaf(xv.w, xv.w, fmaf(xv.z, xv.z, fmaf(xv.y, xv.y, fmaf(xv.x, xv.x, acc[kMixMaxRows]))));
  };
  if (fn_regs) {
    if (threadIdx.x < items) mix_item(x_s[threadIdx.x], [&](int r) { return fn_r[r]; });
  } else {
    for (int i = threadIdx.x; i < items; i += C::kThreads)
      mix_item(x_s[i], [&](int r) { return fn_s[r * items + i]; });
  }
  // The block's column sums: warp w adds columns w, w + 8, ... (lane l: threads l + 32i in i order,
  // then a butterfly), all at once. 25 warp sums one after another took ~2 µs, with the pushes of
  // their totals; these take ~0.5 (clock64 stamps in the model, 2026-11-30-cuda-19.md).
  constexpr int kPerWarp = (C::kCols + C::kWarps - 1) / C::kWarps;
  auto colred = reinterpret_cast<float(*)[C::kThreads]>(fn_s);  // [kCols][kThreads], once fn is read
  __syncthreads();
#pragma unroll
  for (int c = 0; c < C::kCols; ++c) colred[c][threadIdx.x] = acc[c];
  __syncthreads();
  float tot[kPerWarp];
#pragma unroll
  for (int u = 0; u < kPerWarp; ++u) {
    const int c = warp + C::kWarps * u;
    float v = 0.0f;
    if (c < C::kCols)
#pragma unroll
      for (int i = 0; i < C::kWarps; ++i) v += colred[c][lane + 32 * i];
    tot[u] = v;
  }
#pragma unroll
  for (int u = 0; u < kPerWarp; ++u) tot[u] = dev::warp_sum(tot[u]);
  cluster_wait();  // every block has started
  if (lane < nblocks)
#pragma unroll
    for (int u = 0; u < kPerWarp; ++u) {
      const int c = warp + C::kWarps * u;
      if (c < C::kCols) *cluster.map_shared_rank(&gather[rank][c], lane) = tot[u];
    }
  cluster_arrive();
  cluster_wait();
  // Lane c: mix column c over the blocks in rank order; every lane then has pre (and the RMS of x).
  float m = 0.0f;
  if (lane < rows || lane == kMixMaxRows)
#pragma unroll
    for (int r = 0; r < C::kMaxClusterWide; ++r)
      if (r < nblocks) m += gather[r][lane];
  const float inv = 1.0f / sqrtf(__shfl_sync(0xffffffffu, m, kMixMaxRows) / static_cast<float>(nD) + eps);

  if (warp == 0) {  // no Σ y² to give: arrives at once; block 0 normalizes comb meanwhile
    cluster_arrive_relaxed();
    if (rank == 0 && !head && mix_out) {  // or leaves post and comb to hc_comb_cuda (off the critical path)
      if (lane < rows || lane == kMixMaxRows) mix_out[t * (kMixMaxRows + 1) + lane] = m;
    } else if (rank == 0 && !head) {
      const int lp = (n + lane) & 31, lc = (2 * n + lane) & 31;  // lane's post and comb columns
      const float mp = __shfl_sync(0xffffffffu, m, lp), bp = __shfl_sync(0xffffffffu, base_l, lp);
      const float mc = __shfl_sync(0xffffffffu, m, lc), bc = __shfl_sync(0xffffffffu, base_l, lc);
      if (lane < n) post[t * n + lane] = 2.0f * sigmoid(mp * inv * scale1 + bp);
      const float c = sinkhorn_warp(lane < n * n ? mc * inv * scale2 + bc : 0.0f, n, hc_eps, iters, cs);
      if (lane < n * n) comb[t * n * n + lane] = c;
    }
    cluster_wait();
    return;
  }

  // Warps 1..: y = Σ_j pre_j X[j] on the slice; Σ y² around the cluster; a = norm ⊙ y / rms.
  // Lane j computes pre_j (one sigmoid's latency, not n), then every lane has them all.
  const float pre_l = sigmoid(m * inv * scale0 + base_l) + hc_eps;
  float pre[kMaxStreams];
#pragma unroll
  for (int j = 0; j < kMaxStreams; ++j) pre[j] = __shfl_sync(0xffffffffu, pre_l, j);
  const int wt = threadIdx.x - 32, workers = C::kThreads - 32;
  float ys = 0.0f;
  for (int g = wt; g < G; g += workers) {
    float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
    for (int j = 0; j < kMaxStreams; ++j) {
      if (j >= n) break;
      const float4 xj = x_s[j * G + g];
      v.x += pre[j] * xj.x, v.y += pre[j] * xj.y, v.z += pre[j] * xj.z, v.w += pre[j] * xj.w;
    }
    y_s[g] = v;
    ys += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
  }
  ys = dev::warp_sum(ys);
  if (lane < nblocks) *cluster.map_shared_rank(&ygather[rank][warp], lane) = ys;
  cluster_arrive();
  cluster_wait();
  float total = 0.0f;
  if (lane < nblocks)
    for (int w = 1; w < C::kWarps; ++w) total += ygather[lane][w];
  total = dev::warp_sum(total);  // a butterfly: the same bits in every lane
  const float inv2 = 1.0f / sqrtf(total / static_cast<float>(D) + eps);
  float4* a4 = reinterpret_cast<float4*>(a + t * D + d0);
  if (q) {  // one worker warp per 128 outputs: a, then its FP8 rounding (quantize_fp8_1x128_cuda's rule)
    for (int k = warp - 1; k < G / 32; k += C::kWarps - 1) {
      const int g = k * 32 + lane;
      const float4 yv = y_s[g], nv = norm_s[g];
      const float4 v = make_float4(nv.x * (yv.x * inv2), nv.y * (yv.y * inv2), nv.z * (yv.z * inv2), nv.w * (yv.w * inv2));
      a4[g] = v;
      if (ab) store_bf16x4(ab + t * D + d0 + 4 * g, v);
      const float sc = dev::quantize_e4m3_block128(v, q + t * D + d0 + k * C::kUnit, lane);
      if (lane == 0) qs[(u0 + k) * T + t] = sc;
    }
    return;
  }
  for (int g = wt; g < G; g += workers) {
    const float4 yv = y_s[g], nv = norm_s[g];
    const float4 v = make_float4(nv.x * (yv.x * inv2), nv.y * (yv.y * inv2), nv.z * (yv.z * inv2), nv.w * (yv.w * inv2));
    a4[g] = v;
    if (ab) store_bf16x4(ab + t * D + d0 + 4 * g, v);
  }
}

__global__ void hc_post_kernel(const float* X, const float* o, const float* post, const float* comb, int64_t T, int n,
                               int64_t D, float* Xout) {
  dev::pdl_begin();
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= T * n * D) return;
  const int64_t d = i % D, k = (i / D) % n, t = i / (n * D);
  float v = post[t * n + k] * o[t * D + d];
  for (int j = 0; j < n; ++j) v = fmaf(comb[t * n * n + j * n + k], X[(t * n + j) * D + d], v);  // as hc_post_slice
  Xout[i] = v;
}

// post and comb of token blockIdx.x from the summed mix row hc_pre_fused_kernel left (one warp),
// with the same formulas and bits as its block 0 would compute them.
__global__ void hc_comb_kernel(const float* mix_row, int n, int64_t D, const float* base, const float* scale, float eps,
                               float hc_eps, int iters, float* post, float* comb) {
  dev::pdl_begin();
  __shared__ float cs[32];
  const int lane = threadIdx.x & 31, rows = (2 + n) * n;
  const int64_t t = blockIdx.x;
  const float* row = mix_row + t * (kMixMaxRows + 1);
  const float m = lane < rows || lane == kMixMaxRows ? row[lane] : 0.0f;
  const float base_l = lane < rows ? base[lane] : 0.0f;
  const float inv =
      1.0f / sqrtf(__shfl_sync(0xffffffffu, m, kMixMaxRows) / static_cast<float>(static_cast<int64_t>(n) * D) + eps);
  const int lp = (n + lane) & 31, lc = (2 * n + lane) & 31;  // lane's post and comb columns
  const float mp = __shfl_sync(0xffffffffu, m, lp), bp = __shfl_sync(0xffffffffu, base_l, lp);
  const float mc = __shfl_sync(0xffffffffu, m, lc), bc = __shfl_sync(0xffffffffu, base_l, lc);
  if (lane < n) post[t * n + lane] = 2.0f * sigmoid(mp * inv * scale[1] + bp);
  const float c = sinkhorn_warp(lane < n * n ? mc * inv * scale[2] + bc : 0.0f, n, hc_eps, iters, cs);
  if (lane < n * n) comb[t * n * n + lane] = c;
}

// The cluster per token: 16 blocks where the GPU co-schedules such a cluster (non-portable;
// H100/H200), else the portable 8, at most one block per 128 columns; 0 where none runs.
// Asked once per (n, D), with the shared-memory opt-in of the sub-layer mix (the larger).
struct FusedPlan {
  int cluster = 0;
  size_t smem = 0;
};

size_t fused_smem(int rows, int n, int64_t D, int cluster) {
  using C = FusedConfig;
  const int64_t units = D / C::kUnit, cols = (units + cluster - 1) / cluster * C::kUnit;
  const int64_t fn = std::max<int64_t>(rows * n * cols, C::kCols * C::kThreads);  // fn's share, then the column sums
  return static_cast<size_t>(fn + (n + 2) * cols) * sizeof(float);
}

FusedPlan fused_plan(int n, int64_t D) {
  using C = FusedConfig;
  static int cached_n = 0;
  static int64_t cached_D = 0;
  static FusedPlan cached;
  if (n == cached_n && D == cached_D) return cached;
  int device = 0, optin = 0;
  DSV4_CUDA_CHECK(cudaGetDevice(&device));
  DSV4_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  cudaFuncAttributes fa{};
  DSV4_CUDA_CHECK(cudaFuncGetAttributes(&fa, hc_pre_fused_kernel));
  FusedPlan plan;
  for (const int want : {C::kMaxClusterWide, C::kMaxCluster}) {
    const int cluster = static_cast<int>(std::min<int64_t>(want, D / C::kUnit));
    const size_t smem = fused_smem((2 + n) * n, n, D, cluster);
    if (cluster < 1 || smem + fa.sharedSizeBytes > static_cast<size_t>(optin)) continue;
    const int bytes = static_cast<int>(smem);
    if (cudaFuncSetAttribute(hc_pre_fused_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) != cudaSuccess) continue;
    if (cluster > C::kMaxCluster &&
        cudaFuncSetAttribute(hc_pre_fused_kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) != cudaSuccess)
      continue;
    cudaLaunchAttribute attr{};
    attr.id = cudaLaunchAttributeClusterDimension;
    attr.val.clusterDim.x = static_cast<unsigned>(cluster);
    attr.val.clusterDim.y = attr.val.clusterDim.z = 1;
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(static_cast<unsigned>(cluster));
    cfg.blockDim = dim3(C::kThreads);
    cfg.dynamicSmemBytes = smem;
    cfg.attrs = &attr;
    cfg.numAttrs = 1;
    int clusters = 0;
    if (cudaOccupancyMaxActiveClusters(&clusters, hc_pre_fused_kernel, &cfg) == cudaSuccess && clusters >= 1) {
      plan = {cluster, smem};
      break;
    }
  }
  (void)cudaGetLastError();  // a refusal above is an answer, not an error to report later
  if (plan.cluster > 0) {
    const int bytes = static_cast<int>(plan.smem);
    DSV4_CUDA_CHECK(cudaFuncSetAttribute(hc_pre_fused_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  }
  cached_n = n, cached_D = D, cached = plan;
  return plan;
}

}  // namespace

void hc_pre_cuda(const float* X, const float* mix, int64_t T, int n, int64_t D, const float* base, const float* scale,
                 float eps, float hc_eps, int sinkhorn_iters, bool head, const float* norm, float* a, float* post,
                 float* comb, cudaStream_t s, int mix_parts, uint8_t* q, float* qs) {
  DSV4_CHECK(!q || (qs && D % 128 == 0), "hc_pre", "FP8 output needs scales and D % 128 == 0 (D = ", D, ")");
  DSV4_CHECK(n >= 1 && n * n <= 32 && n <= kMaxStreams, "hc_pre", "hc_mult ", n, " outside [1, 5]");
  DSV4_CHECK(mix_parts >= 0, "hc_pre", "mix_parts ", mix_parts);
  if (T == 0) return;
  const size_t smem = (D + static_cast<size_t>(std::max(mix_parts, 1)) * ((head ? n : (2 + n) * n) + 1)) * sizeof(float);
  if (smem > 40 * 1024)  // with the static shared memory on top, near 48 KiB already needs the opt-in
    DSV4_CUDA_CHECK(cudaFuncSetAttribute(hc_pre_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  const int threads = T < 128 ? 1024 : 256;  // few tokens: one block per token must stream alone (≥ 2 warps)
  launch("hc_pre_kernel", hc_pre_kernel, static_cast<unsigned>(T), threads, smem, s, X, mix, mix_parts, T, n, D, base, scale, eps, hc_eps,
                                                            sinkhorn_iters, head, norm, a, post, comb, q, qs);
}

bool hc_mix_fits(int64_t T, int N) { return T >= 1 && T <= kHcMixMaxTokens && N >= 1 && N <= kMixMaxRows; }

void hc_mix_cuda(const float* X, const float* fn, int64_t T, int64_t K, int N, float* parts, int S, cudaStream_t s) {
  DSV4_CHECK(hc_mix_fits(T, N) && S >= 1, "hc_mix", T, " tokens, ", N, " rows, ", S, " slices do not fit");
  launch("hc_mix_kernel", hc_mix_kernel, dim3(static_cast<unsigned>(S), static_cast<unsigned>(T)), kMixThreads, 0, s, X, fn, T, K, N, parts);
}

bool hc_pre_fused_fits(int64_t T, int n, int64_t D) {
  using C = FusedConfig;
  return T >= 1 && T <= kHcMixMaxTokens && n >= 1 && n <= kMaxStreams && (2 + n) * n <= kMixMaxRows &&
         D >= C::kUnit && D % C::kUnit == 0 && D <= (1 << 24) && fused_plan(n, D).cluster > 0;
}

void hc_pre_fused_cuda(const float* X, const float* fn, int64_t T, int n, int64_t D, const float* base, const float* scale,
                       float eps, float hc_eps, int sinkhorn_iters, bool head, const float* norm, float* a, float* post,
                       float* comb, cudaStream_t s, uint8_t* q, float* qs, float* mix_out,
                       const HcPostArgs* post_first, bf16* ab) {
  DSV4_CHECK(hc_pre_fused_fits(T, n, D), "hc_pre_fused", T, " tokens, hc_mult ", n, ", D = ", D,
             " do not fit (hc_pre_fused_fits; use hc_mix_cuda + hc_pre_cuda)");
  DSV4_CHECK(!q || qs, "hc_pre_fused", "FP8 output needs scales");
  const HcPostArgs step = post_first ? *post_first : HcPostArgs{};
  if (post_first) {
    const MoeCombineArgs& m = step.moe;
    DSV4_CHECK(step.Xout == X && step.X && step.X != step.Xout && step.post && step.comb, "hc_pre_fused",
               "the hc_post done first needs X_prev, post, comb and writes X (a buffer other than X_prev)");
    DSV4_CHECK(m.ys ? m.shared && m.k >= 1 : step.o != nullptr, "hc_pre_fused",
               "the hc_post done first needs o, or the MoE combine's ys, shared and k >= 1");
    DSV4_CHECK(step.post != post && step.comb != comb, "hc_pre_fused",
               "the hc_post done first reads post and comb while this launch writes its own: use other buffers");
  }
  const FusedPlan plan = fused_plan(n, D);
  const size_t smem = fused_smem(head ? n : (2 + n) * n, n, D, plan.cluster);
  cudaLaunchAttribute attr[3];
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(T * plan.cluster));
  cfg.blockDim = dim3(FusedConfig::kThreads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cfg.attrs = attr;
  cfg.numAttrs = static_cast<unsigned>(launch_attributes(s, static_cast<unsigned>(plan.cluster), attr));  // as cuda::launch
  const cudaError_t e = cudaLaunchKernelEx(&cfg, hc_pre_fused_kernel, X, fn, T, n, static_cast<int>(D), base, scale, eps,
                                           hc_eps, sinkhorn_iters, head, norm, a, post, comb, q, qs, mix_out, step, ab);
  DSV4_CHECK(e == cudaSuccess, "hc_pre_fused", "launch of ", T, " clusters × ", plan.cluster, " blocks (", smem,
             " B shared) failed: ", cudaGetErrorString(e));
}

void hc_comb_cuda(const float* mix_row, int64_t T, int n, int64_t D, const float* base, const float* scale, float eps,
                  float hc_eps, int sinkhorn_iters, float* post, float* comb, cudaStream_t s) {
  DSV4_CHECK(n >= 1 && (2 + n) * n <= kMixMaxRows, "hc_comb", "hc_mult ", n, " outside [1, 4]");
  if (T == 0) return;
  launch("hc_comb_kernel", hc_comb_kernel, static_cast<unsigned>(T), 32, 0, s, mix_row, n, D, base, scale, eps, hc_eps,
         sinkhorn_iters, post, comb);
}

void hc_post_cuda(const float* X, const float* o, const float* post, const float* comb, int64_t T, int n, int64_t D,
                  float* Xout, cudaStream_t s) {
  const int64_t total = T * n * D;
  if (total == 0) return;
  launch("hc_post_kernel", hc_post_kernel, static_cast<unsigned>((total + 255) / 256), 256, 0, s, X, o, post, comb, T, n, D, Xout);
}

}  // namespace dsv4::cuda
