// CUDA top-k of the lightning indexer (contract in cuda_ops.h): per row the K highest scores
// with the spec's tie rule (among equal scores the lower index wins), as entry indices in index
// order. Built for decode at 1M tokens: one row of 262144 scores, K = 512. Rows of at most
// kLeanKeys (8192) scores take a one-block path from registers instead (topk_lean).
//
// A radix select of the K-th largest order key by a thread block cluster of 1..16 blocks per
// row. Block b of it keeps the slice [b·L, (b+1)·L) of the row in shared memory; its warps own
// consecutive sub-slices, so block, warp and lane order is index order.
//   1. One pass loads the slice and counts its keys by their top 12 bits (sign, exponent, three
//      mantissa bits). The blocks add their counts into rank 0's histogram (distributed shared
//      memory), and every block finds the bucket that holds the K-th key. In decode the scores
//      kernel has made that histogram as it wrote the scores (indexer_scores_cuda's `digits`):
//      the blocks then only load their slices and copy it.
//   2. That bucket usually holds a few hundred keys of the 262144. The blocks copy those keys
//      into rank 0, and rank 0 alone finishes the select on them (three more digits, block
//      barriers only). When the bucket holds more than kMaxCandidates keys (rows of equal or
//      nearly equal scores), the whole cluster instead counts the remaining 8-bit digits over
//      its slices, meeting once a digit.
//   3. A counting pass and an output pass over the slices: every key above the threshold is
//      taken, and of the keys equal to it the first `remaining` in index order (ranks over
//      blocks, warps and lanes).
// Each pass over the slice costs a few instructions a key, and the cluster meets four or five times:
// each result another block needs is pushed into its shared memory, never read from afar after the
// last meeting.
// No global scratch and only integer atomics in shared memory: the result does not depend on
// the order in which they land, and the kernel is safe in a captured graph.
#include <cooperative_groups.h>

#include <algorithm>

#include "cuda/check.h"
#include "cuda/launch.h"
#include "ops/cuda_device.cuh"
#include "ops/cuda_ops.h"

namespace dsv4::cuda {

namespace {

namespace cg = cooperative_groups;

struct TopkConfig {
  static constexpr int kThreads = 1024, kWarps = kThreads / 32;
  static constexpr int kMaxCluster = 8;           // the portable cluster size
  // Non-portable, where the GPU co-schedules it (H100/H200). A 1M-token row took 18.1 µs with 16
  // blocks, 24.6 with 8 (scripts/experiments/indexer_stream.cu).
  static constexpr int kMaxClusterWide = 16;
  static constexpr int kTopBits = kTopkDigitBits, kTopBuckets = kTopkDigits;  // the first digit
  static constexpr int kDigitBits = 8, kBuckets = 1 << kDigitBits;  // the later ones (the last has 4 bits)
  static constexpr int kMaxCandidates = 8192;     // keys of the first digit's bucket gathered in rank 0
  static constexpr int kMaxCachedKeys = 32 * 1024;  // a slice's keys in shared memory: 128 KiB
  static constexpr int kMinSliceKeys = 4096;      // shorter slices do not pay for a cluster's barriers
  // Keys a thread loads before it uses the first: a 1M-token slice of 16384 keys arrives in one
  // L2 round trip, not four (64 registers either way).
  static constexpr int kLoadBatch = 16;
  // Dynamic shared memory after the cached keys (words): the block's first-digit histogram (later
  // the cluster rounds' two histograms), rank 0's cluster histogram, rank 0's candidates (later the
  // cluster rounds' totals).
  static constexpr int kFixedWords = 2 * kTopBuckets + kMaxCandidates;
  static_assert(kWarps == 32 && kMaxClusterWide <= 32, "one warp scans the warps and the blocks");
  static_assert(2 * kBuckets <= kTopBuckets && kBuckets <= kMaxCandidates, "the rounds reuse the first digit's space");
};
using C = TopkConfig;

// Adds the lanes' buckets to a shared histogram; called by whole warps. A warp whose keys share
// one bucket (the common case in the first digit: scores of one magnitude) adds once.
__device__ __forceinline__ void count_bucket(uint32_t* hist, uint32_t bucket, bool valid) {
  const uint32_t lanes = __ballot_sync(0xffffffffu, valid);
  if (!lanes) return;
  const uint32_t first = __shfl_sync(0xffffffffu, bucket, __ffs(lanes) - 1);
  if (__all_sync(0xffffffffu, !valid || bucket == first)) {
    if ((threadIdx.x & 31) == static_cast<unsigned>(__ffs(lanes) - 1)) atomicAdd(&hist[first], __popc(lanes));
  } else if (valid) {
    atomicAdd(&hist[bucket], 1u);
  }
}

// Inclusive prefix sum over the lanes of a warp.
__device__ __forceinline__ int inclusive_scan(int v) {
  const int lane = threadIdx.x % 32;
  for (int o = 1; o < 32; o <<= 1) {
    const int u = __shfl_up_sync(0xffffffffu, v, o);
    if (lane >= o) v += u;
  }
  return v;
}

// The select's state after some digits: the threshold's top bits (prefix under mask) and how many
// keys sharing them are still to take. take() applies one digit's find_bucket result and says
// whether its bucket is taken whole (then the later digits need not be told apart).
struct Threshold {
  uint32_t prefix, mask;
  int remaining;
  __device__ bool take(const int* result, int shift, int bits) {
    prefix |= static_cast<uint32_t>(result[0]) << shift;
    mask |= ((1u << bits) - 1u) << shift;
    remaining -= result[1];
    return result[2] == remaining;
  }
};

// By one warp: the bucket of counts[top − chunk, top) (above: the keys in the buckets from top
// up) that holds the `remaining`-th key from the top, if it lies there (result as find_bucket's).
// Its lanes take runs of buckets from the top; the rest is one scan.
__device__ __forceinline__ void warp_find(const uint32_t* counts, int top, int chunk, int above, int remaining,
                                          int* result) {
  const int lane = threadIdx.x % 32, run = (chunk + 31) / 32;
  int rs = 0;
  for (int j = 0; j < run; ++j) {
    const int k = lane * run + j, b = top - 1 - k;
    if (k < chunk && b >= 0) rs += static_cast<int>(counts[b]);
  }
  above += inclusive_scan(rs) - rs;
  if (above < remaining && remaining <= above + rs) {
    for (int j = 0; j < run; ++j) {
      const int b = top - 1 - (lane * run + j), c = static_cast<int>(counts[b]);
      if (above + c >= remaining) {
        result[0] = b, result[1] = above, result[2] = c;
        break;
      }
      above += c;
    }
  }
}

// The bucket that holds the `remaining`-th key counting from the top bucket of counts[0, n):
// result[0] = the bucket, [1] = the keys in the
// buckets above it, [2] = the keys in it. Called by the whole block; 1 ≤ remaining ≤ Σ counts.
__device__ void find_bucket(const uint32_t* counts, int n, int remaining, int* warp_sum, int* result) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int chunk = (n + C::kWarps - 1) / C::kWarps;  // warp w: buckets [n − (w + 1)·chunk, n − w·chunk)
  int sum = 0;
  for (int j = lane; j < chunk; j += 32) {
    const int b = n - warp * chunk - 1 - j;
    if (b >= 0) sum += static_cast<int>(counts[b]);
  }
  sum = __reduce_add_sync(0xffffffffu, sum);
  if (lane == 0) warp_sum[warp] = sum;
  __syncthreads();
  if (warp == 0) {
    const int v = warp_sum[lane], incl = inclusive_scan(v);
    const int w = __ffs(__ballot_sync(0xffffffffu, incl - v < remaining && remaining <= incl)) - 1;
    const int above_w = __shfl_sync(0xffffffffu, incl - v, w);
    warp_find(counts, n - w * chunk, chunk, above_w, remaining, result);  // warp w's chunk
  }
  __syncthreads();
}

// Lane u holds unit u's keys above (g) and at (e) the threshold, the units (blocks or warps) in
// index order, their ties starting at tie_base and their outputs at out_base: unit u's first tie
// and first output (the units before it take all their keys above and the first `remaining` ties).
__device__ __forceinline__ int2 unit_bases(int g, int e, int remaining, int tie_base, int out_base) {
  const int tie0 = tie_base + inclusive_scan(e) - e;
  const int sel = g + max(0, min(e, remaining - tie0));
  return make_int2(tie0, out_base + inclusive_scan(sel) - sel);
}

// A warp's next 32 keys in index order (m: the lane's key under th.mask, index its entry): the
// keys above the threshold are taken, and the ties while fewer than th.remaining came before
// (ranked by ballots), written compacted from out[o]; tie and o advance.
__device__ __forceinline__ void take_keys(uint32_t m, bool valid, int index, const Threshold& th, int& tie, int& o,
                                          int32_t* out) {
  const uint32_t lanes_below = (1u << (threadIdx.x % 32)) - 1u;
  const bool above = valid && m > th.prefix, at = valid && m == th.prefix;
  const uint32_t at_mask = __ballot_sync(0xffffffffu, at);
  const bool take = above || (at && tie + __popc(at_mask & lanes_below) < th.remaining);
  const uint32_t take_mask = __ballot_sync(0xffffffffu, take);
  if (take) out[o + __popc(take_mask & lanes_below)] = index;
  tie += __popc(at_mask);
  o += __popc(take_mask);
}

// ---- short rows ------------------------------------------------------------------------------
// A row of at most kLeanKeys keys (contexts up to 32K tokens at ratio 4) is selected by one block
// from registers: warp w holds the keys [w·256, w·256 + 256), lane l of it key w·256 + 32j + l in
// its j-th register, so block, warp, register and lane order is index order. No cluster barrier,
// no distributed shared memory, no copy of the keys: the first digit (given, or counted here),
// the later digits on the keys still tied with the threshold (warp 0 finding each digit's bucket),
// then one count and one output pass. At 4K tokens (1024 keys) alone: 12.2 -> 8.8 µs against the
// cluster path (2026-11-30-cuda-14.md), most of that path's time being barriers.
constexpr int kLeanPer = 8, kLeanKeys = kLeanPer * C::kThreads;
constexpr int kLeanHistWords = C::kTopBuckets + 3 * C::kBuckets;  // first digit, then a histogram per later digit
static_assert(C::kTopBuckets == 4 * C::kThreads, "a thread owns four first-digit buckets");
static_assert(kLeanHistWords <= C::kFixedWords, "the lean path's histograms fit the kernel's fixed shared memory");

__device__ void topk_lean(const float* s, int count, int K, int32_t* out, uint32_t* row_digits, uint32_t* hist) {
  __shared__ int wsum[C::kWarps], wgt[C::kWarps], weq[C::kWarps], result[3];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int first = warp * 32 * kLeanPer + lane;  // index of the thread's key j: first + 32 j
  uint32_t* later = hist + C::kTopBuckets;        // [3][kBuckets]: the later digits' histograms
  float v[kLeanPer];
#pragma unroll
  for (int j = 0; j < kLeanPer; ++j) v[j] = first + 32 * j < count ? s[first + 32 * j] : 0.0f;
  uint4 given = make_uint4(0, 0, 0, 0);
  if (row_digits) {  // this thread's four counters, read and set back to zero for the next scores
    uint4* d = reinterpret_cast<uint4*>(row_digits) + threadIdx.x;
    given = *d;
    *d = make_uint4(0, 0, 0, 0);
  }
  for (int b = threadIdx.x; b < 3 * C::kBuckets; b += C::kThreads) later[b] = 0;
  uint32_t key[kLeanPer];
#pragma unroll
  for (int j = 0; j < kLeanPer; ++j) key[j] = dev::order_key(v[j]);
  auto valid = [&](int j) { return first + 32 * j < count; };
  constexpr int kShift0 = 32 - C::kTopBits;
  if (!row_digits) {
    reinterpret_cast<uint4*>(hist)[threadIdx.x] = make_uint4(0, 0, 0, 0);
    __syncthreads();
#pragma unroll
    for (int j = 0; j < kLeanPer; ++j) count_bucket(hist, key[j] >> kShift0, valid(j));
    __syncthreads();
    given = reinterpret_cast<const uint4*>(hist)[threadIdx.x];
  }
  // 1. The first digit's bucket: keys in the buckets above each thread's four (a suffix scan over
  // lanes, then over warps), and the one thread whose buckets hold the K-th key.
  const uint32_t c[4] = {given.x, given.y, given.z, given.w};
  const int mine = static_cast<int>(c[0] + c[1] + c[2] + c[3]);
  int suffix = mine;  // over lanes ≥ this one
  for (int o = 1; o < 32; o <<= 1) {
    const int u = __shfl_down_sync(0xffffffffu, suffix, o);
    if (lane + o < 32) suffix += u;
  }
  if (lane == 0) wsum[warp] = suffix;
  __syncthreads();
  const int later_warps = __reduce_add_sync(0xffffffffu, lane > warp ? wsum[lane] : 0);
  int above = later_warps + suffix - mine;
  if (above < K && K <= above + mine) {
    for (int q = 3; q >= 0; --q) {
      if (above + static_cast<int>(c[q]) >= K) {
        result[0] = 4 * threadIdx.x + q, result[1] = above, result[2] = static_cast<int>(c[q]);
        break;
      }
      above += static_cast<int>(c[q]);
    }
  }
  __syncthreads();
  Threshold th{static_cast<uint32_t>(result[0]) << kShift0, ~0u << kShift0, K - result[1]};
  // 2. The later digits on the keys that share the threshold's top bits, until a bucket is taken
  // whole (distinct scores: after the second digit).
  if (result[2] != th.remaining) {
    for (int done = C::kTopBits, round = 0; done < 32; ++round) {
      const int bits = min(C::kDigitBits, 32 - done), shift = 32 - done - bits, nb = 1 << bits;
      uint32_t* h = later + round * C::kBuckets;
#pragma unroll
      for (int j = 0; j < kLeanPer; ++j)
        count_bucket(h, (key[j] >> shift) & (nb - 1), valid(j) && (key[j] & th.mask) == th.prefix);
      __syncthreads();
      if (warp == 0) warp_find(h, nb, nb, 0, th.remaining, result);
      __syncthreads();
      done += bits;
      if (th.take(result, shift, bits)) break;
    }
  }
  // 3. Keys above the threshold and at it per warp, then each warp's first tie and output.
  int gt = 0, eq = 0;
#pragma unroll
  for (int j = 0; j < kLeanPer; ++j) {
    const uint32_t m = key[j] & th.mask;
    gt += __popc(__ballot_sync(0xffffffffu, valid(j) && m > th.prefix));
    eq += __popc(__ballot_sync(0xffffffffu, valid(j) && m == th.prefix));
  }
  if (lane == 0) wgt[warp] = gt, weq[warp] = eq;
  __syncthreads();
  const int2 base = unit_bases(wgt[lane], weq[lane], th.remaining, 0, 0);
  int tie = __shfl_sync(0xffffffffu, base.x, warp), o = __shfl_sync(0xffffffffu, base.y, warp);
#pragma unroll
  for (int j = 0; j < kLeanPer; ++j) take_keys(key[j] & th.mask, valid(j), first + 32 * j, th, tie, o, out);
}

__global__ void __launch_bounds__(C::kThreads, 1)
    topk_kernel(const float* score, int64_t ld, const int32_t* pos, int ratio, int K, int32_t* idx, int cached_keys,
                uint32_t* digits) {
  extern __shared__ uint32_t smem[];
  uint32_t* keys = smem;                     // [cached_keys]: the slice's keys when it fits
  uint32_t* hist = keys + cached_keys;       // [kTopBuckets]: this block's first digit; rounds: [2][kBuckets]
  uint32_t* total = hist + C::kTopBuckets;   // [kTopBuckets]: the cluster's first digit (rank 0's, then copies)
  uint32_t* cand = total + C::kTopBuckets;   // [kMaxCandidates]: rank 0, the candidates; rounds: the totals
  __shared__ int warp_sum[C::kWarps], result[3];
  __shared__ int warp_gt[C::kWarps], warp_eq[C::kWarps], warp_tie0[C::kWarps], warp_out0[C::kWarps];
  __shared__ int all_counts[C::kMaxClusterWide][2];  // pushed by block b: its keys above / at the threshold
  __shared__ int cand_n;                     // rank 0: candidates gathered
  __shared__ Threshold sel;                  // rank 0: the select's result on the candidates
  const cg::cluster_group cluster = cg::this_cluster();
  const int nblocks = static_cast<int>(cluster.num_blocks()), rank = static_cast<int>(cluster.block_rank());
  const int64_t r = blockIdx.x / nblocks;
  const int count = (pos[r] + 1) / ratio;  // the batch descriptor: before the wait (launch.h)
  dev::pdl_begin();
  int32_t* out = idx + r * K;
  uint32_t* row_digits = digits ? digits + r * C::kTopBuckets : nullptr;
  if (count <= K) {  // the whole cluster leaves: no shared memory was shared
    if (rank == 0) {
      for (int i = threadIdx.x; i < K; i += blockDim.x) out[i] = i < count ? i : -1;
      if (row_digits)
        for (int b = threadIdx.x; b < C::kTopBuckets; b += blockDim.x) row_digits[b] = 0;
    }
    return;
  }
  if (count <= kLeanKeys) {  // a short row: rank 0 alone, from registers (the other blocks leave)
    if (rank == 0) topk_lean(score + r * ld, count, K, out, row_digits, smem + cached_keys);
    return;
  }
  const float* s = score + r * ld;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const uint32_t lanes_below = (1u << lane) - 1u;
  const int L = ((count + nblocks - 1) / nblocks + 31) / 32 * 32;
  const int lo = min(count, rank * L), hi = min(count, lo + L);
  const int Lw = ((L + C::kWarps - 1) / C::kWarps + 31) / 32 * 32;
  const int wlo = min(hi, lo + warp * Lw), whi = min(hi, wlo + Lw);
  const bool cached = L <= cached_keys;
  // A pass over the slice takes its keys from shared memory when cached, else from the scores:
  // pass(key_at) is made once for each, the branch outside its loop (a select inside made every
  // pass execute both ways' instructions: ~half of the 1M-token row's passes).
  auto over_keys = [&](auto&& pass) {
    if (cached) pass([&](int i) { return keys[i - lo]; });
    else pass([&](int i) { return dev::order_key(s[i]); });
  };

  // 1. The slice's keys and their first digit's histogram: from the scores kernel, or counted
  // here and added up in rank 0.
  const bool count_here = row_digits == nullptr;
  if (count_here)
    for (int b = threadIdx.x; b < C::kTopBuckets; b += blockDim.x) hist[b] = total[b] = 0;
  if (threadIdx.x == 0) cand_n = 0;
  __syncthreads();
  constexpr int kShift0 = 32 - C::kTopBits;
  if (cached || count_here) {
    for (int base = lo; base < hi; base += C::kLoadBatch * C::kThreads) {  // warp-uniform trip count
      float v[C::kLoadBatch];
#pragma unroll
      for (int u = 0; u < C::kLoadBatch; ++u) {
        const int i = base + u * C::kThreads + threadIdx.x;
        v[u] = i < hi ? s[i] : 0.0f;
      }
#pragma unroll
      for (int u = 0; u < C::kLoadBatch; ++u) {
        const int i = base + u * C::kThreads + threadIdx.x;
        const uint32_t key = dev::order_key(v[u]);
        if (cached && i < hi) keys[i - lo] = key;
        if (count_here) count_bucket(hist, key >> kShift0, i < hi);
      }
    }
  }
  if (!count_here)
    for (int b = threadIdx.x; b < C::kTopBuckets / 4; b += blockDim.x)
      reinterpret_cast<uint4*>(total)[b] = reinterpret_cast<const uint4*>(row_digits)[b];
  cluster.sync();  // all blocks run; their counts are complete (rank 0's sums and candidate count at zero)
  if (count_here) {
    uint32_t* total0 = cluster.map_shared_rank(total, 0);
    for (int b = threadIdx.x; b < C::kTopBuckets; b += blockDim.x)
      if (hist[b]) atomicAdd(&total0[b], hist[b]);
    cluster.sync();
    if (rank != 0)  // a local copy: one 16-byte remote load a thread, where the scan would make four
      for (int b = threadIdx.x; b < C::kTopBuckets / 4; b += blockDim.x)
        reinterpret_cast<uint4*>(total)[b] = reinterpret_cast<const uint4*>(total0)[b];
  } else if (rank == 0) {  // every block has its copy: the counters go back to zero for the next scores
    for (int b = threadIdx.x; b < C::kTopBuckets / 4; b += blockDim.x)
      reinterpret_cast<uint4*>(row_digits)[b] = make_uint4(0, 0, 0, 0);
  }
  __syncthreads();
  find_bucket(total, C::kTopBuckets, K, warp_sum, result);
  Threshold th{static_cast<uint32_t>(result[0]) << kShift0, ~0u << kShift0, K - result[1]};
  const int in_bucket = result[2];
  const bool whole = in_bucket == th.remaining;  // the bucket is taken whole: the threshold is its digit
  const bool gather = !whole && in_bucket <= C::kMaxCandidates;
  // Rank 0's histograms of the later digits on the candidates, one a digit, zeroed ahead (the
  // next cluster barrier orders this before them; the first digit's counts are no longer read).
  for (int b = threadIdx.x; b < 3 * C::kBuckets; b += blockDim.x) hist[b] = 0;

  // 2a. The bucket's keys gathered in rank 0, which finishes the select on them alone.
  if (gather) {
    int* fill0 = cluster.map_shared_rank(&cand_n, 0);
    uint32_t* cand0 = cluster.map_shared_rank(cand, 0);
    over_keys([&](auto key_at) {
      for (int base = lo; base < hi; base += blockDim.x) {  // warp-uniform trip count
        const int i = base + threadIdx.x;
        const uint32_t key = i < hi ? key_at(i) : 0u;
        const bool in = i < hi && (key & th.mask) == th.prefix;
        const uint32_t lanes = __ballot_sync(0xffffffffu, in);
        if (!lanes) continue;
        int at = 0;
        if (lane == 0) at = atomicAdd(fill0, __popc(lanes));
        at = __shfl_sync(0xffffffffu, at, 0);
        if (in) cand0[at + __popc(lanes & lanes_below)] = key;
      }
    });
  }
  cluster.sync();  // the candidates are in rank 0
  if (gather && rank == 0) {
    for (int done = C::kTopBits, round = 0; done < 32; ++round) {
      const int bits = min(C::kDigitBits, 32 - done), shift = 32 - done - bits, nb = 1 << bits;
      uint32_t* h = hist + round * C::kBuckets;
      for (int base = 0; base < in_bucket; base += blockDim.x) {  // warp-uniform trip count
        const int j = base + threadIdx.x;
        const uint32_t key = j < in_bucket ? cand[j] : 0u;
        count_bucket(h, (key >> shift) & (nb - 1), j < in_bucket && (key & th.mask) == th.prefix);
      }
      __syncthreads();
      if (warp == 0) warp_find(h, nb, nb, 0, th.remaining, result);
      __syncthreads();
      done += bits;
      if (th.take(result, shift, bits)) break;
    }
    if (static_cast<int>(threadIdx.x) < nblocks) *cluster.map_shared_rank(&sel, threadIdx.x) = th;  // pushed to all
  }
  cluster.sync();  // rank 0's result is in every block
  if (gather) th = sel;

  // 2b. Otherwise the cluster counts the later digits over its slices, meeting once a digit (the
  // histograms double-buffered: a block may still read the last digit's of another).
  if (!whole && !gather) {
    for (int done = C::kTopBits, round = 0; done < 32; ++round) {
      const int bits = min(C::kDigitBits, 32 - done), shift = 32 - done - bits, nb = 1 << bits;
      uint32_t* h = hist + (round & 1) * C::kBuckets;
      for (int b = threadIdx.x; b < nb; b += blockDim.x) h[b] = 0;
      __syncthreads();
      over_keys([&](auto key_at) {
        for (int base = lo; base < hi; base += blockDim.x) {  // warp-uniform trip count
          const int i = base + threadIdx.x;
          const uint32_t key = i < hi ? key_at(i) : 0u;
          count_bucket(h, (key >> shift) & (nb - 1), i < hi && (key & th.mask) == th.prefix);
        }
      });
      cluster.sync();  // every block's histogram is complete
      for (int b = threadIdx.x; b < nb; b += blockDim.x) {
        uint32_t sum = 0;
        for (int q = 0; q < nblocks; ++q) sum += cluster.map_shared_rank(h, q)[b];
        cand[b] = sum;
      }
      __syncthreads();
      find_bucket(cand, nb, th.remaining, warp_sum, result);
      done += bits;
      if (th.take(result, shift, bits)) break;
    }
  }

  // 3. Keys above the threshold (masked key > prefix) and at it, per warp, block and cluster.
  int gt = 0, eq = 0;
  over_keys([&](auto key_at) {
    for (int i = wlo + lane; i < whi; i += 32) {
      const uint32_t m = key_at(i) & th.mask;
      gt += m > th.prefix;
      eq += m == th.prefix;
    }
  });
  gt = __reduce_add_sync(0xffffffffu, gt);
  eq = __reduce_add_sync(0xffffffffu, eq);
  if (lane == 0) warp_gt[warp] = gt, warp_eq[warp] = eq;
  __syncthreads();
  if (warp == 0) {  // the block's counts, pushed into every block (no block reads another's after)
    const int bg = __reduce_add_sync(0xffffffffu, warp_gt[lane]), be = __reduce_add_sync(0xffffffffu, warp_eq[lane]);
    if (lane < nblocks) {
      int* dst = cluster.map_shared_rank(&all_counts[rank][0], lane);
      dst[0] = bg, dst[1] = be;
    }
  }
  cluster.sync();  // the last meeting: a block may leave once its own outputs are written
  if (warp == 0) {
    // Ties before this block (E) and outputs before it (O): blocks before it take all their keys
    // above and the first of the `remaining` ties.
    const int2 b = unit_bases(lane < nblocks ? all_counts[lane][0] : 0, lane < nblocks ? all_counts[lane][1] : 0,
                              th.remaining, 0, 0);
    // The same over the block's warps.
    const int2 w = unit_bases(warp_gt[lane], warp_eq[lane], th.remaining, __shfl_sync(0xffffffffu, b.x, rank),
                              __shfl_sync(0xffffffffu, b.y, rank));
    warp_tie0[lane] = w.x, warp_out0[lane] = w.y;
  }
  __syncthreads();  // the warp bases are set

  // Each warp walks its sub-slice in index order: ties ranked by ballots, outputs compacted.
  int tie = warp_tie0[warp], o = warp_out0[warp];
  over_keys([&](auto key_at) {
    for (int base = wlo; base < whi; base += 32) {
      const int i = base + lane;
      const uint32_t m = i < whi ? key_at(i) & th.mask : 0u;
      if (!__any_sync(0xffffffffu, i < whi && m >= th.prefix)) continue;  // most of a long row's keys
      take_keys(m, i < whi, i, th, tie, o, out);
    }
  });
}

constexpr int smem_bytes(int cached) { return (cached + C::kFixedWords) * static_cast<int>(sizeof(uint32_t)); }

// Blocks per row: enough that each slice fits in shared memory, more while the GPU has idle SMs
// and slices stay long (one decode row at 1M tokens: 16 blocks of 16384 keys where the GPU
// co-schedules a cluster of 16); a power of two up to `max_cluster`.
int topk_cluster(int64_t rows, int64_t ld, int sms, int max_cluster) {
  int fit = 1;
  while (fit < max_cluster && (ld + fit - 1) / fit > C::kMaxCachedKeys) fit *= 2;
  int par = 1;
  while (par < max_cluster && rows * par * 2 <= sms && ld / (par * 2) >= C::kMinSliceKeys) par *= 2;
  return std::max(fit, par);
}

// 16 when the kernel may form non-portable clusters of 16 blocks and the GPU can hold one at
// the largest shared-memory size; else the portable 8. Asked once (after the shared-memory opt-in).
int topk_max_cluster() {
  static int max_cluster = 0;
  if (max_cluster) return max_cluster;
  max_cluster = C::kMaxCluster;
  if (cudaFuncSetAttribute(topk_kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) == cudaSuccess) {
    cudaLaunchAttribute attr{};
    attr.id = cudaLaunchAttributeClusterDimension;
    attr.val.clusterDim.x = C::kMaxClusterWide;
    attr.val.clusterDim.y = attr.val.clusterDim.z = 1;
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(C::kMaxClusterWide);
    cfg.blockDim = dim3(C::kThreads);
    cfg.dynamicSmemBytes = smem_bytes(C::kMaxCachedKeys);
    cfg.attrs = &attr;
    cfg.numAttrs = 1;
    int clusters = 0;
    if (cudaOccupancyMaxActiveClusters(&clusters, topk_kernel, &cfg) == cudaSuccess && clusters >= 1)
      max_cluster = C::kMaxClusterWide;
  }
  (void)cudaGetLastError();  // a refusal above is an answer, not an error to report later
  return max_cluster;
}

}  // namespace

void topk_cuda(const float* score, int64_t ld, int64_t rows, const int32_t* pos, int ratio, int K, int32_t* idx,
               cudaStream_t s, uint32_t* digits) {
  if (rows == 0 || K == 0) return;
  int device = 0, sms = 0;
  DSV4_CUDA_CHECK(cudaGetDevice(&device));
  DSV4_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  // Opt in once to the largest slice: the kernel's static shared memory comes on top of the
  // dynamic part, so a dynamic size just under 48 KiB already needs it.
  static int raised = 0;
  if (!raised) {
    raised = smem_bytes(C::kMaxCachedKeys);
    DSV4_CUDA_CHECK(cudaFuncSetAttribute(topk_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, raised));
  }
  const int cluster = topk_cluster(rows, ld, sms, topk_max_cluster());
  const int64_t slice = ((ld + cluster - 1) / cluster + 31) / 32 * 32;
  const int cached = static_cast<int>(std::min<int64_t>(slice, C::kMaxCachedKeys));
  const int smem = smem_bytes(cached);
  cudaLaunchAttribute attr[3];
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(rows * cluster));
  cfg.blockDim = dim3(C::kThreads);
  cfg.dynamicSmemBytes = static_cast<size_t>(smem);
  cfg.stream = s;
  cfg.attrs = attr;
  cfg.numAttrs = static_cast<unsigned>(launch_attributes(s, static_cast<unsigned>(cluster), attr));  // as cuda::launch
  const cudaError_t e = cudaLaunchKernelEx(&cfg, topk_kernel, score, ld, pos, ratio, K, idx, cached, digits);
  DSV4_CHECK(e == cudaSuccess, "topk", "launch of ", rows, " rows × ", cluster, " blocks (ld ", ld, ", ", smem,
             " B shared, raised ", raised, ") failed: ", cudaGetErrorString(e));
}

}  // namespace dsv4::cuda
