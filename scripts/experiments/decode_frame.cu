// Milestone 1 of docs/decode-megakernel.md, as a development experiment (not part of dsv4): does a
// persistent kernel whose weights arrive in a shared-memory ring, read by FP8 wgmma, run a chain of
// decode products near max(bytes, chain)? The chain is a list of stages; each is an FP8 product
// y = W x with one activation row, whose x is the previous stage's output: summed over its K
// splits, optionally normalized (x / rms(x)), quantized to e4m3 with one scale a 128 columns.
//   square D L: L stages of D × D weights, each normalized (persistent_chain.cu's chain);
//   attn N:     N attention halves of the bench's V4-Flash shapes: wq_a and wkv (1536 × 4096, the
//               layer input normalized as mHC's pre-norm does), wq_b (32768 × 1024 on the normalized
//               q), wo_a (8 groups of 1024 × 4096; its x stands in for the attention's output),
//               wo_b (4096 × 8192). SPIN_MHC_NS / SPIN_ATTN_NS add a latency stage (one block spins,
//               every block waits) before wq_a / wo_a: mHC's and the attention's time.
//               WQA_SPLITS / SQUARE_SPLITS: the K splits of wq_a+wkv / of the square stages.
// Forms, all with the same arithmetic (the same bits):
//   persist: one cooperative kernel, one block an SM: a producer warp copies the block's weight
//            entries (64 rows × 512 columns, with their four 128-column scales) into a ring of
//            5 entries by cp.async.bulk, running ahead across stages; one warpgroup consumes each
//            entry by wgmma.m64n8k32 e4m3 (x as column 0 of B), a fresh accumulator each 128
//            columns scaled into the total; a grid barrier (arrival counter) between stages;
//   launches: one kernel a stage with PDL (a ring of 1 entry, so that two blocks fit an SM: the
//            next stage's blocks copy their first entry before their griddepcontrol.wait), the spins
//            as one-block kernels;
//   ring alone: the persistent ring with no arithmetic and no barriers (its stream's rate).
// Work: a stage's units (a 64-row tile and one of its S splits of K) split into contiguous ranges,
// one a block. Each stage's partial outputs are checked on the CPU against its input as the GPU
// produced it (the FP8 accumulation's error: ≤ 1e-3 of the terms' magnitude). The ceiling is one
// flat read of all the weights. Stamps (globaltimer, every block) split the persistent form's
// stages into phases (the table printed last). Results: bench/results/2026-12-02-cuda-40.md to -42.md.
// At run time: INFLIGHT=n (a block's copies outstanding at most), INFLIGHT_SPUN=n (the same for the
// copies of a stage after a latency stage, which the producer issues while that stage runs), L2_AHEAD=1
// (with a stage after a latency stage's first copy, the block's entries past the ring are requested
// into L2: `cp.async.bulk.prefetch.L2`), WARM=1 (a dry pass of a stage's
// input code before its barrier), L2_WINDOW=n (every stage reads the same n entries: no HBM
// stream). Builds: -DNO_FENCE (no proxy fence after B's stores: wrong in principle, its cost),
// -DPRODUCER_SLEEP=ns (the producer polls with sleeps), -DNO_STAMPS, -DPIPE=1 (an entry's products
// as four chains in one group), -DB_BRANCHLESS=1 and -DCONSUMER_WGS=2 (see each). Those and the
// run-time switches measured: bench/results/2026-12-02-cuda-41.md and -42.md.
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Isrc scripts/experiments/decode_frame.cu \
//     -o /tmp/df && /tmp/df attn 8 && /tmp/df square 4096 20
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../../src/ops/cuda_ptx.cuh"
#include "decode_frame.cuh"
#include "experiment.cuh"
#include "ring.cuh"
#include "wgmma_e4m3.cuh"

namespace {

using namespace dsv4::cuda::ptx;

// The producer's waits: -DPRODUCER_SLEEP=ns polls with a sleep between tries, leaving the issue
// slots of its SM sub-partition to consumer warp 0.
#ifndef PRODUCER_SLEEP
#define PRODUCER_SLEEP 0
#endif
__device__ __forceinline__ void mbar_wait_producer(uint64_t* b, uint32_t parity) {
#if PRODUCER_SLEEP == 0
  mbar_wait(b, parity);
#else
  uint32_t done;
  for (;;) {
    asm volatile("{\n.reg .pred p;\nmbarrier.test_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                 : "=r"(done)
                 : "r"(smem_addr(b)), "r"(parity)
                 : "memory");
    if (done) return;
    __nanosleep(PRODUCER_SLEEP);
  }
#endif
}
// -DPIPE=1: an entry's 16 products issued as one group into four accumulators (four chains in
// flight, not one). 0 (the default): the form measured in bench/results/2026-12-02-cuda-40.md.
// Both give the same bits. (The next entry's group issued before this one is read, with a second
// set of accumulators and wgmma.wait_group 1, makes ptxas serialize the products: C7514.)
#ifndef PIPE
#define PIPE 0
#endif
constexpr int kPipe = PIPE;
// -DB_BRANCHLESS=1: B's maxima, shuffles and conversions run for every one of a warp's 8 block
// slots (the unused ones on zeros), with only the stores under the run-time count, so that the
// compiler can interleave them. 0: each under the warp's count of blocks, as measured. The same
// bits.
#ifndef B_BRANCHLESS
#define B_BRANCHLESS 0
#endif
constexpr bool kBranchless = B_BRANCHLESS;
__device__ __forceinline__ void consumers_sync() { asm volatile("bar.sync 1, %0;" ::"n"(kConsumers) : "memory"); }

// A stage's input: the previous stage's partials summed in split order. Each thread issues all its
// loads (at most kMaxLoads float4s) before it adds any, so that the transform costs one round trip.
constexpr int kMaxLoads = 16;
constexpr int kMaxNorm = 4096;  // a normalized input's length (kept in shared memory as floats)

// Stamps (globaltimer, ns) of each stage in each block. Consumer thread 0: 0 entry, 1 past the
// barrier, 2 input loaded (normalized stages), 3 the first unit's B built, 4 its first entry
// there, 5 the block's units done. The producer: 6 the stage's first copy issued, 7 its last.
// Consumer thread 0 again: 8 the first unit's B stored, before its proxy fence; 9 its inputs in
// registers; 10 their maxima reduced.
constexpr int kMaxBlocks = 160, kPoints = 11;
__device__ unsigned long long g_stamps[kMaxStages][kMaxBlocks][kPoints];
// -DNO_STAMPS: none (what the stamps cost).
__device__ __forceinline__ void stamp(int s, int point) {
#ifndef NO_STAMPS
  if (blockIdx.x < kMaxBlocks) g_stamps[s][blockIdx.x][point] = globaltimer_ns();
#endif
}

__device__ __forceinline__ float4 add4(float4 a, float4 b) {
  return make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
}
__device__ __forceinline__ float4 scale4(float4 a, float s) { return make_float4(a.x * s, a.y * s, a.z * s, a.w * s); }

// A normalized stage's whole input (n values, the previous stage's kS partials summed in order)
// into xs, and 1 / rms: thread t takes float4s t, t + 128, ...; its squares in that order, then the
// warps in order (every block: the same bits).
template <int kS>
__device__ float load_normalized(const Program& p, const Stage& prev, int n, float* xs, float* red) {
  const int t = threadIdx.x, per = n / (4 * kConsumers);
  const float4* src = reinterpret_cast<const float4*>(p.out + prev.out_off);
  float4 v[kMaxLoads];
#pragma unroll
  for (int q = 0; q < kMaxLoads; ++q)  // q = m kS + j: position m, split j
    if (q < per * kS) v[q] = __ldcg(src + static_cast<int64_t>(q % kS) * (prev.R / 4) + t + kConsumers * (q / kS));
  float ss = 0.0f;
#pragma unroll
  for (int m = 0; m < kMaxLoads / kS; ++m)
    if (m < per) {
      float4 a = v[m * kS];
#pragma unroll
      for (int j = 1; j < kS; ++j) a = add4(a, v[m * kS + j]);
      reinterpret_cast<float4*>(xs)[t + kConsumers * m] = a;
      ss = fmaf(a.x, a.x, ss), ss = fmaf(a.y, a.y, ss), ss = fmaf(a.z, a.z, ss), ss = fmaf(a.w, a.w, ss);
    }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if ((t & 31) == 0) red[t >> 5] = ss;
  consumers_sync();
  float tot = 0.0f;
#pragma unroll
  for (int w = 0; w < kConsumerWarps; ++w) tot += red[w];
  consumers_sync();
  return 1.0f / sqrtf(tot / static_cast<float>(n) + kEps);
}
// x[base, base + ku) into B's column 0 (byte k at (k / 16) · 128 + k % 16) as e4m3, one scale a 128
// columns in sx (amax / 448; the codes are v · (448 / amax)): from xs times inv (a normalized input)
// or else from the previous stage's kS partials, all of a lane's loads at once. Warp w takes blocks
// w, w + W, ... (i = 0, 1, ...; W consumer warps), lane l their columns 4 l .. 4 l + 3; the blocks'
// reductions together.
template <int kS>
__device__ void build_b(const Program& p, const Stage& prev, bool from_xs, const float* xs, float inv, int base, int ku,
                        uint8_t* B, float* sx, int s) {
  constexpr int kMaxWarpBlocks = kMaxKu / 128 / kConsumerWarps;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nblk = ku / 128;
  auto has = [&](int i) { return warp + kConsumerWarps * i < nblk; };  // the warp's i-th block exists
  float4 x[kMaxWarpBlocks];
  if (kBranchless)
#pragma unroll
    for (int i = 0; i < kMaxWarpBlocks; ++i) x[i] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  if (from_xs) {
#pragma unroll
    for (int i = 0; i < kMaxWarpBlocks; ++i)
      if (has(i))
        x[i] = scale4(reinterpret_cast<const float4*>(xs + base)[(warp + kConsumerWarps * i) * 32 + lane], inv);
  } else {
    const float4* src = reinterpret_cast<const float4*>(p.out + prev.out_off + base);
    float4 v[kMaxLoads];
#pragma unroll
    for (int q = 0; q < kMaxLoads; ++q)  // q = i kS + j: the warp's block i, split j
      if (q / kS < kMaxWarpBlocks && has(q / kS))
        v[q] =
            __ldcg(src + static_cast<int64_t>(q % kS) * (prev.R / 4) + (warp + kConsumerWarps * (q / kS)) * 32 + lane);
#pragma unroll
    for (int i = 0; i < kMaxLoads / kS && i < kMaxWarpBlocks; ++i)
      if (has(i)) {
        x[i] = v[i * kS];
#pragma unroll
        for (int j = 1; j < kS; ++j) x[i] = add4(x[i], v[i * kS + j]);
      }
  }
  float amax[kMaxWarpBlocks];
#pragma unroll
  for (int i = 0; i < kMaxWarpBlocks; ++i)
    amax[i] =
        kBranchless || has(i) ? fmaxf(fmaxf(fabsf(x[i].x), fabsf(x[i].y)), fmaxf(fabsf(x[i].z), fabsf(x[i].w))) : 0.0f;
  if (threadIdx.x == 0 && s >= 0) stamp(s, 9);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
#pragma unroll
    for (int i = 0; i < kMaxWarpBlocks; ++i)
      if (kBranchless || has(i)) amax[i] = fmaxf(amax[i], __shfl_xor_sync(0xffffffffu, amax[i], o));
  if (threadIdx.x == 0 && s >= 0) stamp(s, 10);
#pragma unroll
  for (int i = 0; i < kMaxWarpBlocks; ++i)
    if (kBranchless || has(i)) {
      const float r = amax[i] > 0.0f ? 448.0f / amax[i] : 1.0f;
      const uint32_t codes = static_cast<uint32_t>(__nv_fp8_e4m3(x[i].x * r).__x) |
                             static_cast<uint32_t>(__nv_fp8_e4m3(x[i].y * r).__x) << 8 |
                             static_cast<uint32_t>(__nv_fp8_e4m3(x[i].z * r).__x) << 16 |
                             static_cast<uint32_t>(__nv_fp8_e4m3(x[i].w * r).__x) << 24;
      const int kb = warp + kConsumerWarps * i, k = kb * 128 + 4 * lane;
      if (has(i)) {
        *reinterpret_cast<uint32_t*>(B + (k / 16) * 128 + k % 16) = codes;
        if (lane == 0) sx[kb] = amax[i] > 0.0f ? amax[i] / 448.0f : 1.0f;
      }
    }
  if (threadIdx.x == 0 && s >= 0) stamp(s, 8);  // s < 0: not the stage's first B
#ifndef NO_FENCE
  fence_proxy_async_shared();
#endif
  consumers_sync();
}
// The same, dispatched on the previous stage's splits (1, 2, 4 or 8; main checks).
__device__ float load_normalized(const Program& p, const Stage& prev, int n, float* xs, float* red) {
  switch (prev.S) {
    case 1:
      return load_normalized<1>(p, prev, n, xs, red);
    case 2:
      return load_normalized<2>(p, prev, n, xs, red);
    case 4:
      return load_normalized<4>(p, prev, n, xs, red);
    default:
      return load_normalized<8>(p, prev, n, xs, red);
  }
}
__device__ void build_b(const Program& p, const Stage& prev, bool from_xs, const float* xs, float inv, int base, int ku,
                        uint8_t* B, float* sx, int s) {
  switch (prev.S) {
    case 1:
      return build_b<1>(p, prev, from_xs, xs, inv, base, ku, B, sx, s);
    case 2:
      return build_b<2>(p, prev, from_xs, xs, inv, base, ku, B, sx, s);
    case 4:
      return build_b<4>(p, prev, from_xs, xs, inv, base, ku, B, sx, s);
    default:
      return build_b<8>(p, prev, from_xs, xs, inv, base, ku, B, sx, s);
  }
}

// Stages [s0, s1). persist: the whole chain in a cooperative grid with grid barriers; otherwise one
// stage a launch (PDL). kCompute = false: the consumers only free each entry (the ring's stream).
template <bool kCompute>
__global__ void __launch_bounds__(kThreads, 1) frame_kernel(Program p, int s0, int s1, int slots, int persist) {
  extern __shared__ __align__(128) uint8_t smem[];
  uint8_t* ring = smem;
  uint8_t* B = smem + slots * kSlotStride;
  float* xs = reinterpret_cast<float*>(B + 8 * kMaxKu);
  float* sx = xs + kMaxNorm;
  uint64_t* full = reinterpret_cast<uint64_t*>(sx + kMaxKu / 128);
  uint64_t* empty = full + kMaxSlots;
  __shared__ float red[kConsumerWarps];
  __shared__ float part[64];  // CONSUMER_WGS=2: the second warpgroup's totals of a unit's rows
  // The stage table in shared memory: read from the kernel's parameters by a run-time index, each
  // stage's first use would miss the constant cache (a trip to L2 behind the weight stream).
  __shared__ Stage sst[kMaxStages];
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5, nb = gridDim.x, b = blockIdx.x;
  for (int i = t; i < p.n; i += kThreads) sst[i] = p.st[i];
  if (t == 0) {
    for (int k = 0; k < slots; ++k) mbar_init(full + k, 1), mbar_init(empty + k, 4);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  for (int i = t; i < 8 * kMaxKu / 16; i += kThreads) reinterpret_cast<uint4*>(B)[i] = make_uint4(0, 0, 0, 0);
  fence_proxy_async_shared();  // B's other columns stay zero for wgmma
  __syncthreads();
  if (!persist) asm volatile("griddepcontrol.launch_dependents;");
  if (warp == kConsumerWarps) {  // the producer: every entry of the block's units, in order
    if (lane != 0) return;
    int64_t it = 0, j0 = 0, j1 = 0;  // copies issued; with two warpgroups, each one's
    int hist_slot[kMaxSlots];        // two warpgroups: the slot and phase parity of copy it, at it % kMaxSlots
    uint32_t hist_parity[kMaxSlots];
    for (int s = s0; s < s1; ++s) {
      const Stage& st = sst[s];
      const int e_n = entries_of(st);
      const int64_t lo = static_cast<int64_t>(unit_lo(st, b, nb)) * e_n,
                    hi = static_cast<int64_t>(unit_lo(st, b + 1, nb)) * e_n;
      for (int64_t e = lo; e < hi; ++e, ++it) {
        int slot;
        int64_t use;
        if (kConsumerGroups == 2) {  // warpgroup w's entries in slots w, w + 2, ... (a ring each)
          const int w = static_cast<int>(e % e_n) & 1, half = slots / 2;
          int64_t& j = w ? j1 : j0;
          slot = w + 2 * static_cast<int>(j % half);
          use = j++ / half;
        } else {
          slot = static_cast<int>(it % slots);
          use = it / slots;
        }
        if (use > 0) mbar_wait_producer(empty + slot, static_cast<uint32_t>((use - 1) & 1));
        const int depth = st.spin_ns > 0 ? p.in_flight_spun : p.in_flight;
        if (depth < slots && it >= depth) {  // copy it − depth has landed
          const int64_t old = it - depth;
          if (kConsumerGroups == 2) {
            const int h = static_cast<int>(old % kMaxSlots);
            mbar_wait_producer(full + hist_slot[h], hist_parity[h]);
          } else {
            mbar_wait_producer(full + old % slots, static_cast<uint32_t>((old / slots) & 1));
          }
        }
        if (kConsumerGroups == 2) {
          hist_slot[it % kMaxSlots] = slot;
          hist_parity[it % kMaxSlots] = static_cast<uint32_t>(use & 1);
        }
        if (e == lo && p.l2_ahead && st.spin_ns > 0)  // the share past the ring, into L2 during the latency stage
          for (int64_t f = lo + slots; f < hi; ++f)
            asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p.w + entry_offset(p, st, f)),
                         "r"(kEntryBytes)
                         : "memory");
        if (e == lo) stamp(s, 6);
        if (e == hi - 1) stamp(s, 7);
        mbar_expect(full + slot, kEntryBytes);
        asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                         smem_addr(ring + slot * kSlotStride)),
                     "l"(p.w + entry_offset(p, st, e)), "r"(kEntryBytes), "r"(smem_addr(full + slot))
                     : "memory");
      }
    }
    return;
  }
  int64_t it = 0, jown = 0;  // entries taken by the block; with two warpgroups, by this one
  for (int s = s0; s < s1; ++s) {
    const Stage& st = sst[s];
    const Stage& prev = sst[s - 1];
    const int e_n = entries_of(st), ku = st.K / st.S;
    const int u_lo = unit_lo(st, b, nb), u_hi = unit_lo(st, b + 1, nb);
    if (kCompute && t == 0) stamp(s, 0);
    if (kCompute && persist && p.warm && s > 1 && u_lo < u_hi) {  // on whatever the inputs hold now
      const float winv = st.norm ? load_normalized(p, prev, st.G * st.K, xs, red) : 1.0f;
      build_b(p, prev, st.norm, xs, winv, unit_base(st, u_lo), ku, B, sx, -1);
    }
    if (kCompute) {
      if (persist) {
        if (t == 0) {
          if (s > 1) wait_count(p.arrived, p.arrived_base + static_cast<unsigned>(s - 1) * nb);
          if (st.spin_ns > 0) {
            if (b == 0) spin_for(st.spin_ns), release_add(p.spun);
            wait_count(p.spun, p.spun_base + static_cast<unsigned>(st.spins));
          }
        }
      } else {
        asm volatile("griddepcontrol.wait;" ::: "memory");
      }
      consumers_sync();
      if (t == 0) stamp(s, 1);
    }
    const float inv = kCompute && st.norm ? load_normalized(p, prev, st.G * st.K, xs, red) : 1.0f;
    if (kCompute && t == 0) stamp(s, 2);
    int cur_base = -1;
    for (int u = u_lo; u < u_hi; ++u) {
      const int tile = u / st.S, split = u % st.S, base = unit_base(st, u);
      if (kCompute && base != cur_base) {
        consumers_sync();  // no wgmma still reads B
        build_b(p, prev, st.norm, xs, inv, base, ku, B, sx, u == u_lo ? s : -1);
        cur_base = base;
        if (t == 0 && u == u_lo) stamp(s, 3);
      }
      float tot0 = 0.0f, tot2 = 0.0f;  // rows 16 warp + lane / 4 and + 8 of the tile (column 0)
      // Entry e's products into d (block c's four k steps into d[c], fresh), and d scaled into the
      // totals in block order (the same order, so the same bits, in both forms below).
      auto issue = [&](float(&d)[4][4], const uint8_t* A, int e) {
        wgmma_fence();
#pragma unroll
        for (int c = 0; c < 4; ++c)
#pragma unroll
          for (int k = 0; k < 4; ++k)
            wgmma_m64n8k32_e4m3(d[c], wgmma_desc(A + (4 * c + k) * 256, 128, (kEntryCols / 16) * 128),
                                wgmma_desc(B + ((e * kEntryCols + c * 128) / 32 + k) * 256, 128, 128), k > 0);
        wgmma_commit();
      };
      auto retire = [&](float(&d)[4][4], const uint8_t* A, int e) {
        const float* ws = reinterpret_cast<const float*>(A + kEntryCodes);
#pragma unroll
        for (int c = 0; c < 4; ++c) {
#pragma unroll
          for (int j = 0; j < 4; ++j) wgmma_fence_operand(d[c][j]);
          const float sc = ws[c] * sx[(e * kEntryCols + c * 128) / 128];
          tot0 = fmaf(sc, d[c][0], tot0);
          tot2 = fmaf(sc, d[c][2], tot2);
        }
      };
      auto release = [&](int slot) {
        __syncwarp();
        if (lane == 0) mbar_arrive(empty + slot);
      };
      auto landed = [&](int64_t i) {  // entry i's copy, waited for
        const int slot = static_cast<int>(i % slots);
        mbar_wait(full + slot, static_cast<uint32_t>((i / slots) & 1));
        return slot;
      };
      if (kConsumerGroups == 2) {  // warpgroup e % 2 takes entry e from its own ring, as in PIPE=1
        for (int e = 0; e < e_n; ++e, ++it) {
          if ((e & 1) != warp / 4) continue;
          const int half = slots / 2, slot = warp / 4 + 2 * static_cast<int>(jown % half);
          mbar_wait(full + slot, static_cast<uint32_t>((jown / half) & 1));
          ++jown;
          if (kCompute && t == 0 && u == u_lo && e == 0) stamp(s, 4);
          if (kCompute) {
            float d[4][4];
            issue(d, ring + slot * kSlotStride, e);
            wgmma_wait<0>();
            retire(d, ring + slot * kSlotStride, e);
          }
          release(slot);
        }
      } else if (kPipe == 1 && kCompute) {  // an entry's 16 products as one group, 4 chains
        for (int e = 0; e < e_n; ++e, ++it) {
          const int slot = landed(it);
          if (t == 0 && u == u_lo && e == 0) stamp(s, 4);
          float d[4][4];
          issue(d, ring + slot * kSlotStride, e);
          wgmma_wait<0>();
          retire(d, ring + slot * kSlotStride, e);
          release(slot);
        }
      } else {
        for (int e = 0; e < e_n; ++e, ++it) {
          const int slot = landed(it);
          if (kCompute && t == 0 && u == u_lo && e == 0) stamp(s, 4);
          if (kCompute) {  // the measured form: block c's chain waited for before block c + 2 starts
            const uint8_t* A = ring + slot * kSlotStride;
            const float* ws = reinterpret_cast<const float*>(A + kEntryCodes);
            float d[2][4];
            auto add = [&](int c) {
              const float sc = ws[c] * sx[(e * kEntryCols + c * 128) / 128];
#pragma unroll
              for (int j = 0; j < 4; ++j) wgmma_fence_operand(d[c & 1][j]);
              tot0 = fmaf(sc, d[c & 1][0], tot0);
              tot2 = fmaf(sc, d[c & 1][2], tot2);
            };
#pragma unroll
            for (int c = 0; c < 4; ++c) {
              wgmma_fence();
#pragma unroll
              for (int k = 0; k < 4; ++k)
                wgmma_m64n8k32_e4m3(d[c & 1], wgmma_desc(A + (4 * c + k) * 256, 128, (kEntryCols / 16) * 128),
                                    wgmma_desc(B + ((e * kEntryCols + c * 128) / 32 + k) * 256, 128, 128), k > 0);
              wgmma_commit();
              if (c > 0) wgmma_wait<1>(), add(c - 1);
            }
            wgmma_wait<0>();
            add(3);
          }
          release(slot);
        }
      }
      if (kCompute && kConsumerGroups == 2) {  // the odd entries' totals added to the even ones'
        const int r = 16 * (warp % 4) + lane / 4;
        if (warp >= 4 && lane % 4 == 0) part[r] = tot0, part[r + 8] = tot2;
        consumers_sync();
        if (warp < 4) tot0 += part[r], tot2 += part[r + 8];
        consumers_sync();  // part read before the next unit writes it
      }
      if (kCompute && warp < 4 && lane % 4 == 0) {
        float* y = p.out + st.out_off + static_cast<int64_t>(split) * st.R + tile * 64 + 16 * warp + lane / 4;
        y[0] = tot0;
        y[8] = tot2;
      }
    }
    if (kCompute) {
      consumers_sync();  // the block's outputs of stage s are written
      if (t == 0) stamp(s, 5);
      if (persist && t == 0) release_add(p.arrived);
    }
  }
}

// A latency stage as a launch: one block, the next stage released at once (as dsv4's short kernels).
__global__ void spin_kernel(long long ns) {
  asm volatile("griddepcontrol.launch_dependents;");
  asm volatile("griddepcontrol.wait;" ::: "memory");
  if (threadIdx.x == 0) spin_for(ns);
}

// Weight codes as experiment.cuh's; each entry's last 16 bytes, its four scales, powers of two in
// 2^-2 .. 2^2.
__global__ void fill_weights(uint8_t* w, int64_t n, uint32_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint32_t h = fill_hash(i, seed);
    const int64_t at = i % kEntryBytes;
    if (at < kEntryCodes)
      w[i] = e4m3_from_hash(h);
    else if (at % 4 == 0)
      *reinterpret_cast<float*>(w + i) = ldexpf(1.0f, static_cast<int>((h >> 8) % 5u) - 2);
  }
}

float e4m3(uint8_t c) {
  __nv_fp8_e4m3 v;
  v.__x = c;
  return static_cast<float>(v);
}

// Stage s's outputs against the CPU, from its input as the GPU produced it: max over rows of
// |y − want| / Σ|terms|.
double check_stage(const Program& p, int s, const std::vector<uint8_t>& w, const std::vector<float>& out) {
  const Stage& st = p.st[s];
  const Stage& prev = p.st[s - 1];
  const int n = st.G * st.K, e_n = entries_of(st);
  std::vector<float> x(n);
  for (int i = 0; i < n; ++i) {
    float v = 0.0f;
    for (int j = 0; j < prev.S; ++j) v += out[prev.out_off + static_cast<int64_t>(j) * prev.R + i];
    x[i] = v;
  }
  float inv = 1.0f;
  if (st.norm) {
    double ss = 0;
    for (float v : x) ss += static_cast<double>(v) * v;
    inv = static_cast<float>(1.0 / std::sqrt(ss / n + kEps));
  }
  std::vector<float> q(n), scale(n / 128);
  for (int kb = 0; kb < n / 128; ++kb) {
    float amax = 0.0f;
    for (int k = 128 * kb; k < 128 * (kb + 1); ++k) amax = std::max(amax, std::fabs(x[k] * inv));
    scale[kb] = amax > 0.0f ? amax / 448.0f : 1.0f;
    const float r = amax > 0.0f ? 448.0f / amax : 1.0f;
    for (int k = 128 * kb; k < 128 * (kb + 1); ++k) q[k] = static_cast<float>(__nv_fp8_e4m3(x[k] * inv * r));
  }
  float lut[256];
  for (int c = 0; c < 256; ++c) lut[c] = e4m3(static_cast<uint8_t>(c));
  double worst = 0;
  for (int u = 0; u < units_of(st); ++u) {
    const int tile = u / st.S, split = u % st.S, base = unit_base(st, u);
    for (int r = 0; r < 64; ++r) {
      double want = 0, mag = 0;
      for (int e = 0; e < e_n; ++e) {
        const uint8_t* entry = w.data() + entry_offset(p, st, static_cast<int64_t>(u) * e_n + e);
        float ws[4];
        std::memcpy(ws, entry + kEntryCodes, 16);
        for (int c = 0; c < kEntryCols; ++c) {
          const int k = base + e * kEntryCols + c;
          const double term = static_cast<double>(ws[c / 128]) * scale[k / 128] *
                              lut[entry[((r / 8) * (kEntryCols / 16) + c / 16) * 128 + (r % 8) * 16 + c % 16]] * q[k];
          want += term;
          mag += std::fabs(term);
        }
      }
      const float got = out[st.out_off + static_cast<int64_t>(split) * st.R + tile * 64 + r];
      if (!std::isfinite(got)) return INFINITY;  // not written
      worst = std::max(worst, std::fabs(got - want) / (mag + 1e-30));
    }
  }
  return worst;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string preset = argc > 1 ? argv[1] : "attn";
  auto env_int = [](const char* k, int d) { return std::getenv(k) ? std::atoi(std::getenv(k)) : d; };
  Program p{};
  std::vector<std::string> names(kMaxStages);
  int64_t wbytes = 0, obytes = 0;
  int spins = 0;
  auto add = [&](const char* name, int R, int K, int S, int G, int norm, int spin_ns) {
    const int prev_s = p.st[p.n - 1].S, loads = norm ? G * K / 512 * prev_s : K / S / 512 * prev_s;
    if (p.n >= kMaxStages || R % 64 || K % S || (K / S) % kEntryCols || K / S > kMaxKu || (R / G) % 64 ||
        (norm && (G * K > kMaxNorm || G * K % (4 * kConsumers))) || loads > kMaxLoads || (prev_s & (prev_s - 1)) ||
        prev_s > 8) {
      std::printf("bad stage %s\n", name);
      std::exit(2);
    }
    Stage& st = p.st[p.n];
    st = Stage{wbytes, obytes, R, K, S, G, norm, spin_ns, spins += spin_ns > 0};
    names[p.n++] = name;
    wbytes += static_cast<int64_t>(units_of(st)) * entries_of(st) * kEntryBytes;
    obytes += static_cast<int64_t>(S) * R;
  };
  auto input = [&](int R) {  // stage 0: the chain's input, R floats at the front of out
    p.st[p.n++] = Stage{0, 0, R, 0, 1, 1, 0, 0, 0};
    obytes = R;
  };
  const int spin_mhc = env_int("SPIN_MHC_NS", 0), spin_attn = env_int("SPIN_ATTN_NS", 0);
  int per_repeat = 1;
  if (preset == "square") {
    const int D = argc > 2 ? std::atoi(argv[2]) : 4096, L = argc > 3 ? std::atoi(argv[3]) : 20;
    input(D);
    const int S = env_int("SQUARE_SPLITS", D >= 4096 ? 2 : 1);
    for (int i = 0; i < L; ++i) add("product", D, D, S, 1, 1, 0);
  } else if (preset == "attn") {
    const int N = argc > 2 ? std::atoi(argv[2]) : 8;
    input(4096);
    per_repeat = 4;
    for (int i = 0; i < N; ++i) {
      add("wq_a+wkv", 1536, 4096, env_int("WQA_SPLITS", 8), 1, 1, spin_mhc);
      add("wq_b", 32768, 1024, 1, 1, 1, 0);
      add("wo_a", 8192, 4096, 1, 8, 0, spin_attn);
      add("wo_b", 4096, 8192, 2, 1, 0, 0);
    }
  } else {
    std::printf("usage: df attn [halves] | df square [D] [stages]\n");
    return 2;
  }
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  uint8_t* w;
  float* out;
  unsigned *arrived, *spun;
  uint32_t* sink;
  CK(cudaMalloc(&w, wbytes));
  CK(cudaMalloc(&out, obytes * sizeof(float)));
  CK(cudaMalloc(&arrived, 4));
  CK(cudaMalloc(&spun, 4));
  CK(cudaMalloc(&sink, 4));
  fill_weights<<<1024, 256>>>(w, wbytes, 17);
  {
    std::vector<float> x(p.st[0].R);
    for (size_t k = 0; k < x.size(); ++k) x[k] = 0.5f + static_cast<float>((k * 37) % 101) / 101.0f - (k % 3 == 0);
    CK(cudaMemcpy(out, x.data(), x.size() * 4, cudaMemcpyHostToDevice));
  }
  p.w = w, p.out = out, p.arrived = arrived, p.spun = spun;
  p.in_flight = env_int("INFLIGHT", kMaxSlots);
  p.in_flight_spun = env_int("INFLIGHT_SPUN", p.in_flight);
  p.l2_ahead = env_int("L2_AHEAD", 0);
  p.warm = env_int("WARM", 0);
  p.l2_window = env_int("L2_WINDOW", 0);
  const auto smem_for = [](int slots) {
    return static_cast<size_t>(slots) * kSlotStride + 8 * kMaxKu + kMaxNorm * 4 + kMaxKu / 128 * 4 + 2 * kMaxSlots * 8;
  };
  for (auto k : {frame_kernel<true>, frame_kernel<false>})
    CK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem_for(kMaxSlots))));
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  Timer tm{s, nullptr, (256ll << 20) / 16};
  CK(cudaMalloc(&tm.flush, tm.flush_vecs * 16));

  CK(cudaMemset(arrived, 0, 4));
  CK(cudaMemset(spun, 0, 4));
  auto persist = [&](bool compute) {  // the counters only grow: each run waits above the last's totals
    Program pp = p;
    if (compute) {
      p.arrived_base += static_cast<unsigned>(p.n - 1) * sms;
      p.spun_base += static_cast<unsigned>(p.st[p.n - 1].spins);
    }
    int s0 = 1, s1 = p.n, slots = kMaxSlots, one = 1;
    void* args[] = {&pp, &s0, &s1, &slots, &one};
    CK(cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(compute ? frame_kernel<true> : frame_kernel<false>),
                                   dim3(sms), dim3(kThreads), args, smem_for(kMaxSlots), s));
  };
  const int launch_slots = kConsumerGroups == 2 ? 2 : 1;  // one ring entry: two blocks an SM
  auto launches = [&] {
    for (int i = 1; i < p.n; ++i) {
      if (p.st[i].spin_ns > 0) launch_pdl(spin_kernel, 1, 32, 0, s, static_cast<long long>(p.st[i].spin_ns));
      launch_pdl(frame_kernel<true>, sms, kThreads, smem_for(launch_slots), s, p, i, i + 1, launch_slots, 0);
    }
  };
  const double mb = wbytes / 1e6;
  std::printf(
      "%s: %d stages, %.1f MB of FP8 weights and scales, %d blocks of %d threads; latency stages: "
      "SPIN_MHC_NS=%d SPIN_ATTN_NS=%d; copies in flight a block: INFLIGHT=%d, INFLIGHT_SPUN=%d, L2_AHEAD=%d; WARM=%d; L2_WINDOW=%d\n",
      preset.c_str(), p.n - 1, mb, sms, kThreads, spin_mhc, spin_attn, p.in_flight, p.in_flight_spun, p.l2_ahead, p.warm, p.l2_window);

  // Correctness first: each stage from its input as produced, in both forms.
  std::vector<uint8_t> hw(wbytes);
  CK(cudaMemcpy(hw.data(), w, wbytes, cudaMemcpyDeviceToHost));
  for (int form = 0; form < 2; ++form) {
    CK(cudaMemsetAsync(out + p.st[0].R, 0xff, (obytes - p.st[0].R) * 4, s));  // NaN: every output must be written
    form == 0 ? persist(true) : launches();
    CK(cudaStreamSynchronize(s));
    std::vector<float> hout(obytes);
    CK(cudaMemcpy(hout.data(), out, obytes * 4, cudaMemcpyDeviceToHost));
    double worst = 0;
    for (int i = 1; i < p.n; ++i) worst = std::max(worst, check_stage(p, i, hw, hout));
    std::vector<uint32_t> bits(p.st[p.n - 1].R);
    std::memcpy(bits.data(), hout.data() + p.st[p.n - 1].out_off, bits.size() * 4);
    std::printf("%s: worst |y - cpu| / sum|terms| over every stage %.2e (%s), last stage's hash %016llx\n",
                form == 0 ? "persist" : "launches", worst, worst <= 1e-3 ? "PASS" : "FAIL",
                static_cast<unsigned long long>(fnv1a(bits)));
  }

  const int trials = 15;
  const double ceil_us = tm.median(
      trials, [](int) {},
      [&] { flat_read<<<sms * 4, 256, 0, s>>>(reinterpret_cast<const uint4*>(w), wbytes / 16, sink); });
  const int repeats = (p.n - 1) / per_repeat;
  std::printf("| form | us | us a %s | GB/s | of the flat read |\n|---|---|---|---|---|\n",
              per_repeat > 1 ? "half" : "stage");
  auto row = [&](const char* name, double us) {
    std::printf("| %s | %.1f | %.2f | %.0f | %.0f%% |\n", name, us, us / repeats, mb * 1e3 / us, 100 * ceil_us / us);
  };
  row("one flat read of the bytes", ceil_us);
  std::vector<unsigned long long> stamps(static_cast<size_t>(kMaxStages) * kMaxBlocks * kPoints);
  for (int round = 0; round < 2; ++round) {
    row("persist: ring + wgmma, grid barriers", tm.median(
                                                    trials, [](int) {}, [&] { persist(true); }));
    CK(cudaMemcpyFromSymbol(stamps.data(), g_stamps, stamps.size() * 8));
    row("launches: a kernel a stage, PDL", tm.median(
                                               trials, [](int) {}, launches));
    row("ring alone (no arithmetic, no barriers)", tm.median(
                                                       trials, [](int) {}, [&] { persist(false); }));
  }
  // The persistent form's last timed run by its stamps, the first repeat left out: µs a stage.
  //   period: block 0 past one barrier to past the next; span: the first block past the barrier to
  //   the last block done; barrier: the last block done to the first block past the next barrier;
  //   means over the blocks (with units) of: barrier wait, input load, B build, the first entry's
  //   wait, the units after it; and how long before passing the barrier the producer had issued
  //   the stage's first and last copies.
  const int nblk = std::min(sms, kMaxBlocks);
  auto at = [&](int st, int b, int point) {
    return static_cast<double>(stamps[(static_cast<size_t>(st) * kMaxBlocks + b) * kPoints + point]);
  };
  std::printf("\npersist, stamps of its last run, mean us a stage after the first %s\n",
              per_repeat > 1 ? "half" : "stage");
  std::printf(
      "| stage | MB | period | span | barrier | wait | input | B | first entry | units | 1st copy ahead | "
      "last copy ahead | B: inputs | B: maxima | B: codes | B: fence, sync "
      "|\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (int k = 0; k < per_repeat; ++k) {
    double v[14] = {};
    int n = 0;
    for (int i = 1 + per_repeat + k; i + 1 < p.n; i += per_repeat, ++n) {
      double first_pass = 1e300, last_done = 0, next_pass = 1e300;
      double m[11] = {};
      int with_units = 0;
      for (int b = 0; b < nblk; ++b) {
        first_pass = std::min(first_pass, at(i, b, 1));
        last_done = std::max(last_done, at(i, b, 5));
        next_pass = std::min(next_pass, at(i + 1, b, 1));
        m[0] += at(i, b, 1) - at(i, b, 0);
        if (unit_lo(p.st[i], b, sms) == unit_lo(p.st[i], b + 1, sms)) continue;
        ++with_units;
        m[1] += at(i, b, 2) - at(i, b, 1);
        m[2] += at(i, b, 3) - at(i, b, 2);
        m[3] += at(i, b, 4) - at(i, b, 3);
        m[4] += at(i, b, 5) - at(i, b, 4);
        m[5] += at(i, b, 1) - at(i, b, 6);
        m[6] += at(i, b, 1) - at(i, b, 7);
        m[7] += at(i, b, 9) - at(i, b, 2);
        m[8] += at(i, b, 10) - at(i, b, 9);
        m[9] += at(i, b, 8) - at(i, b, 10);
        m[10] += at(i, b, 3) - at(i, b, 8);
      }
      v[0] += at(i + 1, 0, 1) - at(i, 0, 1);
      v[1] += last_done - first_pass;
      v[2] += next_pass - last_done;
      v[3] += m[0] / nblk;
      for (int j = 1; j < 11; ++j) v[3 + j] += m[j] / std::max(1, with_units);
    }
    const Stage& st = p.st[1 + k];
    std::printf("| %s | %.1f |", names[1 + k].c_str(),
                static_cast<double>(units_of(st)) * entries_of(st) * kEntryBytes / 1e6);
    for (int j = 0; j < 14; ++j) std::printf(" %.2f |", n ? v[j] / n / 1e3 : 0.0);
    std::printf("\n");
  }
  return 0;
}
