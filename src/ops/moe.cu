// CUDA MoE routing and bookkeeping (contracts in moe.h / cuda_ops.h): scores, top-k with the
// tie rule, the stable grouping of assignments by expert, gather, SwiGLU and the combine.
// The expert products are in moe_experts.cu.
#include <cub/block/block_scan.cuh>

#include "cuda/check.h"
#include "cuda/launch.h"
#include "ops/cuda_device.cuh"

namespace dsv4::cuda {

namespace {

constexpr int kRouteThreads = 256;

// Block-wide argmax with the tie rule (larger value, then lower index). `sv`, `si`: 33 entries.
__device__ void block_argmax(float& v, int& i, float* sv, int* si) {
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, i, o);
    if (ov > v || (ov == v && oi < i)) v = ov, i = oi;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) sv[warp] = v, si[warp] = i;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < nwarps; ++w)
      if (sv[w] > sv[0] || (sv[w] == sv[0] && si[w] < si[0])) sv[0] = sv[w], si[0] = si[w];
  }
  __syncthreads();
  v = sv[0];
  i = si[0];
}

__global__ void moe_route_kernel(const float* logits, int E, int k, int func, const float* bias, const int32_t* tid2eid,
                                 const int32_t* ids, float routed_scale, int32_t* experts, float* weights) {
  dev::pdl_begin();
  extern __shared__ float sh[];
  float* p = sh;           // [E]
  float* biased = sh + E;  // [E]
  __shared__ float sv[33], scratch[33];
  __shared__ int si[33];
  const int64_t t = blockIdx.x;
  const float* l = logits + t * E;
  if (func == static_cast<int>(ScoringFunc::Softmax)) {
    float mx = -INFINITY;
    for (int e = threadIdx.x; e < E; e += blockDim.x) mx = fmaxf(mx, l[e]);
    mx = dev::block_max(mx, scratch);
    float sum = 0.0f;
    for (int e = threadIdx.x; e < E; e += blockDim.x) sum += (p[e] = expf(l[e] - mx));
    sum = dev::block_sum(sum, scratch);
    for (int e = threadIdx.x; e < E; e += blockDim.x) p[e] /= sum;
  } else if (func == static_cast<int>(ScoringFunc::Sigmoid)) {
    for (int e = threadIdx.x; e < E; e += blockDim.x) p[e] = 1.0f / (1.0f + expf(-l[e]));
  } else {
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
      const float x = l[e];
      p[e] = sqrtf(x > 20.0f ? x : log1pf(expf(x)));
    }
  }
  __syncthreads();
  int32_t* ex = experts + t * k;
  if (tid2eid) {
    for (int i = threadIdx.x; i < k; i += blockDim.x) ex[i] = tid2eid[static_cast<int64_t>(ids[t]) * k + i];
  } else {
    for (int e = threadIdx.x; e < E; e += blockDim.x) biased[e] = p[e] + (bias ? bias[e] : 0.0f);
    __syncthreads();
    for (int i = 0; i < k; ++i) {  // in order of decreasing biased score, ties to the lower index
      float v = -INFINITY;
      int idx = 0x7fffffff;
      for (int e = threadIdx.x; e < E; e += blockDim.x)
        if (biased[e] > v || (biased[e] == v && e < idx)) v = biased[e], idx = e;
      block_argmax(v, idx, sv, si);
      if (threadIdx.x == 0) {
        ex[i] = idx;
        biased[idx] = -INFINITY;
      }
      __syncthreads();
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float* w = weights + t * k;
    float sum = 0.0f;
    for (int i = 0; i < k; ++i) sum += (w[i] = p[ex[i]]);
    for (int i = 0; i < k; ++i) {
      if (func != static_cast<int>(ScoringFunc::Softmax)) w[i] /= sum;
      w[i] *= routed_scale;
    }
  }
}

__global__ void moe_count_kernel(const int32_t* experts, int64_t n, int32_t* counts) {
  dev::pdl_begin();
  const int64_t a = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (a < n) atomicAdd(&counts[experts[a]], 1);
}

constexpr int kOffsetThreads = 1024;

// One block: offsets (exclusive scan of the counts) and the tile list (expert e's tiles follow
// those of the experts before it).
__global__ void moe_offsets_kernel(const int32_t* counts, int E, int tile_rows, int32_t* offsets, int2* tiles,
                                   int32_t* ntiles) {
  dev::pdl_begin();
  using Scan = cub::BlockScan<int, kOffsetThreads>;
  __shared__ typename Scan::TempStorage tmp;
  const int e = threadIdx.x;
  const int cnt = e < E ? counts[e] : 0;
  const int nt = (cnt + tile_rows - 1) / tile_rows;
  int off, tile0, total_rows, total_tiles;
  Scan(tmp).ExclusiveSum(cnt, off, total_rows);
  __syncthreads();
  Scan(tmp).ExclusiveSum(nt, tile0, total_tiles);
  if (e < E) {
    offsets[e] = off;
    for (int i = 0; i < nt; ++i) tiles[tile0 + i] = make_int2(e, off + i * tile_rows);
  }
  if (e == 0) {
    offsets[E] = total_rows;
    *ntiles = total_tiles;
  }
}

// Few assignments (n ≤ kThreads, E ≤ kThreads, a block of kThreads): counts, offsets, tiles, perm
// and inv from the experts in ex [kThreads] (shared; -1 past n). The rank of assignment a within
// its expert counts the earlier assignments of that expert (stable).
template <int kThreads>
__device__ void group_small(const int* ex, int n, int E, int tile_rows, int32_t* counts, int32_t* offsets,
                            int32_t* perm, int32_t* inv, int2* tiles, int32_t* ntiles) {
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ typename Scan::TempStorage tmp;
  __shared__ int cnt[kThreads], off[kThreads];
  const int t = threadIdx.x;
  cnt[t] = 0;
  __syncthreads();
  const int e_mine = ex[t];
  if (t < n) atomicAdd(&cnt[e_mine], 1);
  __syncthreads();
  const int c = t < E ? cnt[t] : 0;
  const int nt = (c + tile_rows - 1) / tile_rows;
  int o, tile0, total_rows, total_tiles;
  Scan(tmp).ExclusiveSum(c, o, total_rows);
  __syncthreads();
  Scan(tmp).ExclusiveSum(nt, tile0, total_tiles);
  off[t] = o;
  if (t < E) {
    counts[t] = c;
    offsets[t] = o;
    for (int i = 0; i < nt; ++i) tiles[tile0 + i] = make_int2(t, o + i * tile_rows);
  }
  if (t == 0) {
    offsets[E] = total_rows;
    *ntiles = total_tiles;
  }
  __syncthreads();
  if (t < n) {
    int rank = 0;
    for (int a = 0; a < t; ++a) rank += ex[a] == e_mine;
    perm[off[e_mine] + rank] = t;
    inv[t] = off[e_mine] + rank;
  }
}

__global__ void moe_group_small_kernel(const int32_t* experts, int n, int E, int tile_rows, int32_t* counts,
                                       int32_t* offsets, int32_t* perm, int32_t* inv, int2* tiles, int32_t* ntiles) {
  dev::pdl_begin();
  __shared__ int ex[kOffsetThreads];
  ex[threadIdx.x] = static_cast<int>(threadIdx.x) < n ? experts[threadIdx.x] : -1;
  __syncthreads();
  group_small<kOffsetThreads>(ex, n, E, tile_rows, counts, offsets, perm, inv, tiles, ntiles);
}

// ---- few rows: routing and grouping in one block -----------------------------------------------
// moe_route_kernel's outputs for every row, then moe_group_small_kernel's, bit for bit: a warp per
// row (rows w, w + 32, ...), lane l holding experts l + 32 j (j < kFewPerLane) in registers. The
// sums and maxima of the scores are moe_route_kernel's block reductions (kRouteThreads threads)
// replayed in the warp: lane l stands for the threads l + 32 v, v < kRouteWarps, so every float32
// addition happens in the same order; the top-k argmax is a total order (value, then index), whose
// result does not depend on the reduction order.
constexpr int kRouteWarps = kRouteThreads / 32;
constexpr int kFewRows = 64, kFewPerLane = 8;  // T ≤ 64 rows, E ≤ 256 experts (registers: 64 at 1024 threads)
static_assert(kFewPerLane % kRouteWarps == 0, "thread v of the route block holds the lanes' j ≡ v mod 8");

// dev::block_sum / block_max of the kRouteThreads-thread block over the values part[v] of thread
// lane + 32 v: each of its warps' shuffle tree, then warp 0's over the warp totals.
template <class Op>
__device__ float route_block_reduce(const float (&part)[kRouteWarps], float identity, Op op) {
  const int lane = threadIdx.x & 31;
  float total = identity;
#pragma unroll
  for (int v = 0; v < kRouteWarps; ++v) {
    float x = part[v];
    for (int o = 16; o > 0; o >>= 1) x = op(x, __shfl_xor_sync(0xffffffffu, x, o));
    if (lane == v) total = x;
  }
  for (int o = 16; o > 0; o >>= 1) total = op(total, __shfl_xor_sync(0xffffffffu, total, o));
  return total;
}

// x[j] of the lane holding expert e (every lane calls it).
__device__ __forceinline__ float lane_pick(const float (&x)[kFewPerLane], int e) {
  float v = 0.0f;
#pragma unroll
  for (int j = 0; j < kFewPerLane; ++j)
    if (j == e / 32) v = x[j];
  return __shfl_sync(0xffffffffu, v, e % 32);
}

// A row's scores in a warp: lane l holds p[j] of expert l + 32 j, moe_route_kernel's values bit for
// bit (its block reductions replayed by route_block_reduce). Inlined with a constant `func`
// (moe_route_one_kernel), only that function's code is compiled.
__device__ __forceinline__ void few_scores(const float* l, int E, int func, float (&p)[kFewPerLane]) {
  const int lane = threadIdx.x & 31;
  float x[kFewPerLane];
#pragma unroll
  for (int j = 0; j < kFewPerLane; ++j) x[j] = lane + 32 * j < E ? l[lane + 32 * j] : 0.0f;
  if (func == static_cast<int>(ScoringFunc::Softmax)) {
    float part[kRouteWarps];
#pragma unroll
    for (int v = 0; v < kRouteWarps; ++v) part[v] = -INFINITY;
#pragma unroll
    for (int j = 0; j < kFewPerLane; ++j)
      if (lane + 32 * j < E) part[j % kRouteWarps] = fmaxf(part[j % kRouteWarps], x[j]);
    const float mx = route_block_reduce(part, -INFINITY, [](float a, float b) { return fmaxf(a, b); });
#pragma unroll
    for (int v = 0; v < kRouteWarps; ++v) part[v] = 0.0f;
#pragma unroll
    for (int j = 0; j < kFewPerLane; ++j)
      if (lane + 32 * j < E) part[j % kRouteWarps] += (p[j] = expf(x[j] - mx));
    const float sum = route_block_reduce(part, 0.0f, [](float a, float b) { return a + b; });
#pragma unroll
    for (int j = 0; j < kFewPerLane; ++j) p[j] /= sum;
  } else if (func == static_cast<int>(ScoringFunc::Sigmoid)) {
#pragma unroll
    for (int j = 0; j < kFewPerLane; ++j) p[j] = 1.0f / (1.0f + expf(-x[j]));
  } else {
#pragma unroll
    for (int j = 0; j < kFewPerLane; ++j) p[j] = sqrtf(x[j] > 20.0f ? x[j] : log1pf(expf(x[j])));
  }
}

// The score bias of lane l's experts l + 32 j (0 without a bias): a weight, loaded before the
// PDL wait.
__device__ __forceinline__ void few_bias(const float* bias, int E, float (&bias_r)[kFewPerLane]) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int j = 0; j < kFewPerLane; ++j) bias_r[j] = bias && lane + 32 * j < E ? bias[lane + 32 * j] : 0.0f;
}
// The biased scores the top-k ranks (-inf past the experts).
__device__ __forceinline__ void few_biased(const float (&p)[kFewPerLane], const float (&bias_r)[kFewPerLane], int E,
                                           float (&biased)[kFewPerLane]) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int j = 0; j < kFewPerLane; ++j) biased[j] = lane + 32 * j < E ? p[j] + bias_r[j] : -INFINITY;
}

// An order-preserving key of a biased score: a greater score has a greater key (-0 as +0; NaN
// lowest, with -inf just above it).
__device__ __forceinline__ uint32_t score_key(float v) {
  const uint32_t b = __float_as_uint(v + 0.0f);
  return v != v ? 0u : (b & 0x80000000u) ? ~b : b | 0x80000000u;
}
// Sorts a lane's 8 (key, index, score) triples by key down, index up (Batcher's 19 comparators).
__device__ __forceinline__ void sort8_desc(uint32_t (&key)[kFewPerLane], int (&idx)[kFewPerLane],
                                          float (&val)[kFewPerLane]) {
  static_assert(kFewPerLane == 8, "an 8-input network");
  auto cx = [&](int a, int b) {
    const bool swap = key[b] > key[a] || (key[b] == key[a] && idx[b] < idx[a]);
    const uint32_t ka = key[a], kb = key[b];
    const int ia = idx[a], ib = idx[b];
    const float va = val[a], vb = val[b];
    key[a] = swap ? kb : ka, key[b] = swap ? ka : kb;
    idx[a] = swap ? ib : ia, idx[b] = swap ? ia : ib;
    val[a] = swap ? vb : va, val[b] = swap ? va : vb;
  };
  cx(0, 1), cx(2, 3), cx(4, 5), cx(6, 7);
  cx(0, 2), cx(1, 3), cx(4, 6), cx(5, 7);
  cx(1, 2), cx(5, 6);
  cx(0, 4), cx(1, 5), cx(2, 6), cx(3, 7);
  cx(2, 4), cx(3, 5);
  cx(1, 2), cx(3, 4), cx(5, 6);
}

// The k highest biased scores of a warp's row (lane l: experts l + 32 j) in order, the greatest
// first, ties to the lower index: on(i, e, p_e) for the i-th, in every lane. Each lane sorts its
// eight, then a round is one reduction over the lanes' heads (a second only where heads tie), two
// shuffles, and the winning lane's pop: ~3x faster than an argmax tree a round (route stamps,
// bench/results/2026-11-30-cuda-27.md), and the argmax's total order: the same experts.
template <class On>
__device__ __forceinline__ void few_topk(const float (&biased)[kFewPerLane], const float (&p)[kFewPerLane], int k,
                                         On&& on) {
  const int lane = threadIdx.x & 31;
  uint32_t key[kFewPerLane];
  int idx[kFewPerLane];
  float pj[kFewPerLane];
#pragma unroll
  for (int j = 0; j < kFewPerLane; ++j) key[j] = score_key(biased[j]), idx[j] = lane + 32 * j, pj[j] = p[j];
  sort8_desc(key, idx, pj);
#pragma unroll 1
  for (int i = 0; i < k; ++i) {
    const uint32_t m = __reduce_max_sync(0xffffffffu, key[0]);
    const uint32_t at_max = __ballot_sync(0xffffffffu, key[0] == m);
    int src = __ffs(at_max) - 1;
    if (at_max & (at_max - 1u))  // heads tie: the lower expert index (its lane: index mod 32)
      src = static_cast<int>(__reduce_min_sync(0xffffffffu, key[0] == m ? static_cast<uint32_t>(idx[0]) : ~0u) % 32);
    on(i, __shfl_sync(0xffffffffu, idx[0], src), __shfl_sync(0xffffffffu, pj[0], src));
    const bool pop = lane == src;
#pragma unroll
    for (int j = 0; j + 1 < kFewPerLane; ++j) {
      key[j] = pop ? key[j + 1] : key[j];
      idx[j] = pop ? idx[j + 1] : idx[j];
      pj[j] = pop ? pj[j + 1] : pj[j];
    }
    if (pop) key[kFewPerLane - 1] = 0u, idx[kFewPerLane - 1] = 0x7fffffff;
  }
}

// kThreads: 256 where the experts and the assignments fit (a decode step up to 42 rows of 6 of 256
// experts), so the grouping's scans and barriers span 8 warps, not 32; else kOffsetThreads.
template <int kThreads>
__global__ void __launch_bounds__(kThreads)
moe_route_group_kernel(const float* logits, int T, int E, int k, int func, const float* bias, const int32_t* tid2eid,
                       const int32_t* ids, float routed_scale, int tile_rows, int32_t* experts, float* weights,
                       int32_t* counts, int32_t* offsets, int32_t* perm, int32_t* inv, int2* tiles, int32_t* ntiles) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n = T * k;
  // The score bias is a weight: loaded before the wait, not after the scores.
  float bias_r[kFewPerLane];
  few_bias(bias, E, bias_r);
  dev::pdl_begin();
  __shared__ int ex_all[kThreads];
  ex_all[threadIdx.x] = -1;
  __syncthreads();
  for (int t = warp; t < T; t += kThreads / 32) {
    float p[kFewPerLane];
    few_scores(logits + static_cast<int64_t>(t) * E, E, func, p);
    int* ex = ex_all + t * k;
    if (tid2eid) {
      for (int i = lane; i < k; i += 32) ex[i] = tid2eid[static_cast<int64_t>(ids[t]) * k + i];
    } else {
      float biased[kFewPerLane];
      few_biased(p, bias_r, E, biased);
      few_topk(biased, p, k, [&](int i, int e, float) {
        if (lane == 0) ex[i] = e;
      });
    }
    __syncwarp();
    // The weights summed in order in every lane, then lane i writes weight i (pe / sum · scale,
    // moe_route_kernel's operations): no read back from memory.
    float* w = weights + static_cast<int64_t>(t) * k;
    float sum = 0.0f;
    for (int i = 0; i < k; ++i) sum += lane_pick(p, ex[i]);
    for (int i0 = 0; i0 < k; i0 += 32) {
      float mine = 0.0f;
      for (int i = i0; i < min(k, i0 + 32); ++i) {
        const float pe = lane_pick(p, ex[i]);
        if (lane == i - i0) mine = pe;
      }
      if (i0 + lane < k) {
        if (func != static_cast<int>(ScoringFunc::Softmax)) mine /= sum;
        w[i0 + lane] = mine * routed_scale;
      }
    }
    for (int i = lane; i < k; i += 32) experts[static_cast<int64_t>(t) * k + i] = ex[i];
  }
  __syncthreads();
  group_small<kThreads>(ex_all, n, E, tile_rows, counts, offsets, perm, inv, tiles, ntiles);
}

// One row (a batch-1 decode step), E ≤ 256, k ≤ 32, tile_rows ≥ k: moe_route_group_kernel's
// outputs, bit for bit, by one warp with no block barrier and no scan. Each top-k round leaves every
// lane with the winner and its score, so lane i keeps assignment i and all lanes add the scores in
// order; the grouping counts over the k experts in registers: expert e = l + 32 j is lane l's j-th,
// tile t the t-th expert present (one tile each).
// The kernel runs once a layer on a cold SM: its instructions come from L2 as it goes, so it is
// compiled for one scoring function and routing kind (kFunc, kHash) with its loops over the k
// assignments rolled.
template <int kFunc, bool kHash>
__global__ void __launch_bounds__(32)
moe_route_one_kernel(const float* logits, int E, int k, const float* bias, const int32_t* tid2eid,
                     const int32_t* ids, float routed_scale, int32_t* experts, float* weights, int32_t* counts,
                     int32_t* offsets, int32_t* perm, int32_t* inv, int2* tiles, int32_t* ntiles) {
  const int lane = threadIdx.x;
  float bias_r[kFewPerLane];
  few_bias(bias, E, bias_r);
  // A hash layer's experts (lane i: assignment i) need no score: the token id is the batch
  // descriptor's and tid2eid a weight, so both trips come before the wait (launch.h).
  const int hash_e = kHash && lane < k ? tid2eid[static_cast<int64_t>(ids[0]) * k + lane] : 0;
  dev::pdl_begin();
  float p[kFewPerLane];
  few_scores(logits, E, kFunc, p);
  int my_e = 0;
  float my_p = 0.0f, sum = 0.0f;
  if (kHash) {
#pragma unroll 1
    for (int i = 0; i < k; ++i) {
      const int e = __shfl_sync(0xffffffffu, hash_e, i);
      const float pe = lane_pick(p, e);
      sum += pe;
      if (lane == i) my_e = e, my_p = pe;
    }
  } else {
    float biased[kFewPerLane];
    few_biased(p, bias_r, E, biased);
    few_topk(biased, p, k, [&](int i, int e, float pv) {  // in order: the sum's order
      sum += pv;
      if (lane == i) my_e = e, my_p = pv;
    });
  }
  // Every lane sees all k experts: its experts' counts and offsets, its assignment's place.
  int cnt[kFewPerLane] = {}, below[kFewPerLane] = {}, place = 0;
#pragma unroll 1
  for (int i = 0; i < k; ++i) {
    const int e = __shfl_sync(0xffffffffu, my_e, i);
#pragma unroll
    for (int j = 0; j < kFewPerLane; ++j) {
      cnt[j] += e == lane + 32 * j;
      below[j] += e < lane + 32 * j;
    }
    place += e < my_e || (e == my_e && i < lane);
  }
  int tile0 = 0;
#pragma unroll
  for (int j = 0; j < kFewPerLane; ++j) {
    const int e = lane + 32 * j;
    const uint32_t present = __ballot_sync(0xffffffffu, e < E && cnt[j] > 0);
    if (e < E) {
      counts[e] = cnt[j];
      offsets[e] = below[j];
      if (cnt[j] > 0) tiles[tile0 + __popc(present & ((1u << lane) - 1u))] = make_int2(e, below[j]);
    }
    tile0 += __popc(present);
  }
  if (lane == 0) offsets[E] = k, *ntiles = tile0;
  if (lane < k) {
    experts[lane] = my_e;
    if (kFunc != static_cast<int>(ScoringFunc::Softmax)) my_p /= sum;
    weights[lane] = my_p * routed_scale;
    perm[place] = lane;
    inv[lane] = place;
  }
}

// moe_route_one_kernel's instance for scoring function f, hash or learned routing.
using RouteOneKernel = decltype(&moe_route_one_kernel<0, false>);
template <int kFunc>
RouteOneKernel route_one_for(bool hash) {
  return hash ? moe_route_one_kernel<kFunc, true> : moe_route_one_kernel<kFunc, false>;
}
RouteOneKernel route_one_for(ScoringFunc f, bool hash) {
  switch (f) {
    case ScoringFunc::Softmax: return route_one_for<static_cast<int>(ScoringFunc::Softmax)>(hash);
    case ScoringFunc::Sigmoid: return route_one_for<static_cast<int>(ScoringFunc::Sigmoid)>(hash);
    default: return route_one_for<static_cast<int>(ScoringFunc::SqrtSoftplus)>(hash);
  }
}

constexpr int kScatterThreads = 256;

// One block per expert: its assignments in order, by a block scan over all assignments.
__global__ void moe_scatter_kernel(const int32_t* experts, int64_t n, const int32_t* offsets, int32_t* perm,
                                   int32_t* inv) {
  dev::pdl_begin();
  using Scan = cub::BlockScan<int, kScatterThreads>;
  __shared__ typename Scan::TempStorage tmp;
  const int e = blockIdx.x;
  int base = offsets[e];
  for (int64_t a0 = 0; a0 < n; a0 += blockDim.x) {
    const int64_t a = a0 + threadIdx.x;
    const int flag = (a < n && experts[a] == e) ? 1 : 0;
    int rank, total;
    Scan(tmp).ExclusiveSum(flag, rank, total);
    __syncthreads();
    if (flag) {
      perm[base + rank] = static_cast<int32_t>(a);
      inv[a] = base + rank;
    }
    base += total;
  }
}

__global__ void moe_gather_kernel(const float* x, int64_t D, const int32_t* perm, int64_t n, int k, float* xs,
                                  bf16* xb) {
  dev::pdl_begin();
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n * D) return;
  const int64_t r = i / D;
  const float v = x[static_cast<int64_t>(perm[r] / k) * D + i % D];
  if (xs) xs[i] = v;
  else xb[i] = __float2bfloat16_rn(v);
}

__global__ void swiglu_kernel(const float* g, const float* u, int64_t rows, int64_t F, float limit, const float* weight,
                              const int32_t* perm, float* h) {
  dev::pdl_begin();
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= rows * F) return;
  float gi = g[i], ui = u[i];
  if (limit > 0.0f) {
    ui = fminf(fmaxf(ui, -limit), limit);
    gi = fminf(gi, limit);
  }
  float v = gi / (1.0f + expf(-gi)) * ui;
  if (weight) v *= weight[perm ? perm[i / F] : i / F];
  h[i] = v;
}

// swiglu_kernel's values (no weight) and their FP8 1×128 rounding for the next GEMM: one warp
// per (row, block of 128).
__global__ void swiglu_quant_kernel(const float* g, const float* u, int64_t rows, int64_t F, float limit, float* h,
                                    uint8_t* q, float* qs) {
  dev::pdl_begin_early();
  const int64_t w = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  const int64_t nb = F / 128;
  if (w >= rows * nb) return;
  const int64_t r = w / nb, b = w % nb, i0 = r * F + b * 128 + lane * 4;
  const float4 g4 = *reinterpret_cast<const float4*>(g + i0), u4 = *reinterpret_cast<const float4*>(u + i0);
  auto one = [&](float gi, float ui) {
    if (limit > 0.0f) {
      ui = fminf(fmaxf(ui, -limit), limit);
      gi = fminf(gi, limit);
    }
    return gi / (1.0f + expf(-gi)) * ui;
  };
  const float4 v = make_float4(one(g4.x, u4.x), one(g4.y, u4.y), one(g4.z, u4.z), one(g4.w, u4.w));
  *reinterpret_cast<float4*>(h + i0) = v;
  const float s = dev::quantize_e4m3_block128(v, q + r * F + b * 128, lane);
  if (lane == 0) qs[b * rows + r] = s;
}

__global__ void moe_combine_kernel(const float* ys, const int32_t* inv, const float* shared, int64_t T, int k, int64_t D,
                                   float* out) {
  dev::pdl_begin();
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= T * D) return;
  const int64_t t = i / D, d = i % D;
  float v = 0.0f;
  for (int j = 0; j < k; ++j) v += ys[static_cast<int64_t>(inv ? inv[t * k + j] : t * k + j) * D + d];
  out[i] = shared[i] + v;
}

unsigned grid_for(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

}  // namespace

void moe_route_cuda(const float* logits, int64_t T, int E, int k, ScoringFunc f, const float* bias,
                    const int32_t* tid2eid, const int32_t* ids, float routed_scale, int32_t* experts, float* weights,
                    cudaStream_t s) {
  if (T == 0) return;
  launch("moe_route_kernel", moe_route_kernel, static_cast<unsigned>(T), kRouteThreads, 2 * E * sizeof(float), s, 
      logits, E, k, static_cast<int>(f), bias, tid2eid, ids, routed_scale, experts, weights);
}

void moe_group_cuda(const int32_t* experts, int64_t T, int k, int E, int32_t* counts, int32_t* offsets, int32_t* perm,
                    int32_t* inv, int tile_rows, int2* tiles, int32_t* ntiles, cudaStream_t s) {
  const int64_t n = T * static_cast<int64_t>(k);
  if (n == 0) return;
  DSV4_CHECK(E <= kOffsetThreads, "moe", E, " routed experts: at most ", kOffsetThreads, " supported");
  if (n <= kOffsetThreads) {  // decode: one launch
    launch("moe_group_small_kernel", moe_group_small_kernel, 1, kOffsetThreads, 0, s, experts, static_cast<int>(n), E, tile_rows, counts, offsets,
                                                        perm, inv, tiles, ntiles);
    return;
  }
  DSV4_CUDA_CHECK(cudaMemsetAsync(counts, 0, E * sizeof(int32_t), s));
  launch("moe_count_kernel", moe_count_kernel, grid_for(n, 256), 256, 0, s, experts, n, counts);
  launch("moe_offsets_kernel", moe_offsets_kernel, 1, kOffsetThreads, 0, s, counts, E, tile_rows, offsets, tiles, ntiles);
  launch("moe_scatter_kernel", moe_scatter_kernel, E, kScatterThreads, 0, s, experts, n, offsets, perm, inv);
}

void moe_route_group_cuda(const float* logits, int64_t T, int E, int k, ScoringFunc f, const float* bias,
                          const int32_t* tid2eid, const int32_t* ids, float routed_scale, int32_t* experts,
                          float* weights, int32_t* counts, int32_t* offsets, int32_t* perm, int32_t* inv, int tile_rows,
                          int2* tiles, int32_t* ntiles, cudaStream_t s) {
  if (T == 0) return;
  if (T > kFewRows || E > 32 * kFewPerLane || T * k > kOffsetThreads) {
    moe_route_cuda(logits, T, E, k, f, bias, tid2eid, ids, routed_scale, experts, weights, s);
    moe_group_cuda(experts, T, k, E, counts, offsets, perm, inv, tile_rows, tiles, ntiles, s);
    return;
  }
  if (T == 1 && E <= 32 * kFewPerLane && k <= 32 && tile_rows >= k) {  // a batch-1 decode step
    const auto one = route_one_for(f, tid2eid != nullptr);
    launch("moe_route_one_kernel", one, 1, 32, 0, s, logits, E, k, bias, tid2eid, ids, routed_scale, experts, weights,
           counts, offsets, perm, inv, tiles, ntiles);
    return;
  }
  constexpr int kSmall = 256;
  const bool small = E <= kSmall && T * k <= kSmall;
  launch("moe_route_group_kernel", small ? moe_route_group_kernel<kSmall> : moe_route_group_kernel<kOffsetThreads>, 1,
         small ? kSmall : kOffsetThreads, 0, s, logits, static_cast<int>(T), E, k, static_cast<int>(f), bias, tid2eid,
         ids, routed_scale, tile_rows, experts, weights, counts, offsets, perm, inv, tiles, ntiles);
}

void moe_gather_cuda(const float* x, int64_t D, const int32_t* perm, int64_t n, int k, float* xs_f32, bf16* xs_bf16,
                     cudaStream_t s) {
  if (n == 0) return;
  launch("moe_gather_kernel", moe_gather_kernel, grid_for(n * D, 256), 256, 0, s, x, D, perm, n, k, xs_f32, xs_bf16);
}

void swiglu_cuda(const float* g, const float* u, int64_t rows, int64_t F, float limit, const float* weight,
                 const int32_t* perm, float* h, cudaStream_t s) {
  if (rows * F == 0) return;
  launch("swiglu_kernel", swiglu_kernel, grid_for(rows * F, 256), 256, 0, s, g, u, rows, F, limit, weight, perm, h);
}

void swiglu_quant_cuda(const float* g, const float* u, int64_t rows, int64_t F, float limit, float* h, uint8_t* q,
                       float* qs, cudaStream_t s) {
  DSV4_CHECK(F % 128 == 0, "swiglu_quant", "F = ", F, " is not a multiple of 128");
  if (rows * F == 0) return;
  launch("swiglu_quant_kernel", swiglu_quant_kernel, grid_for(rows * (F / 128) * 32, 256), 256, 0, s, g, u, rows, F, limit, h, q, qs);
}

void moe_combine_cuda(const float* ys, const int32_t* inv, const float* shared, int64_t T, int k, int64_t D, float* out,
                      cudaStream_t s) {
  if (T * D == 0) return;
  launch("moe_combine_kernel", moe_combine_kernel, grid_for(T * D, 256), 256, 0, s, ys, inv, shared, T, k, D, out);
}

}  // namespace dsv4::cuda
