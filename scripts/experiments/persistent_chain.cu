// Can one persistent kernel hide a decode chain's latency under its weight streams? A development
// experiment for the batch-1 decode step (docs/cuda.md), not part of dsv4. A chain of L stages,
// each an FP8 product y = W x (D x D weights, streamed from HBM: L · D² bytes, far beyond L2) then an
// RMS normalization of y into the next stage's x, which needs all of y: the shape of the decode
// step, where each product waits for a small dependent step over the whole previous output.
//   kernels: a product kernel and a one-block norm kernel a stage, launched with PDL; a product
//            loads its first weights before its griddepcontrol.wait (dsv4's decode step today);
//            the norm releases the next product after its wait, or (early) before it, as dsv4's
//            short kernels do;
//   fused:   the product kernel normalizes the previous y itself, in every block (no norm launch);
//   persist: one cooperative kernel for the whole chain. Between stages a grid barrier (a counter:
//            each block arrives after its writes; thread 0 waits with acquire loads); each block
//            loads its first weights of the next stage before it waits, then normalizes the
//            previous y itself.
//   ring:    persistent too, one block an SM, its weights brought by the copy engine into a ring
//            in shared memory by a producer warp that runs ahead across the barriers (ring_kernel);
//            also with a warp's rows of a stage summed together, with outputs stored with a stage
//            tag and polled instead of a barrier, with the producer holding its copies while the
//            consumers synchronize, and without arithmetic or barriers: the ring's stream alone.
//            Results: bench/results/2026-12-01-cuda-34.md.
// SPIN_NS=t adds a latency stage of t ns between products (see Chain): does the ring's run-ahead
// hide a product's bytes under the latency stages that dsv4's decode chain has between its products?
// Results: bench/results/2026-12-02-cuda-39.md, call 7.
// Builds: -DBATCHED_NORM=1 (the normalization's loads issued at once), -DRING_STAMPS=1 (the
// ring's phases by globaltimer; STAMP_MODE=n picks the ring form stamped), -DARRIVE_RELEASE=1;
// RING_SLOTS=n at run time.
// Every variant computes the same bits (the same rows per warp, the same summation orders): the
// final x's hash is printed with each. The ceiling is one flat read of all the stages' weights.
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a scripts/experiments/persistent_chain.cu \
//     -o /tmp/pc && /tmp/pc
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "experiment.cuh"
#include "ring.cuh"

namespace {

constexpr int kThreads = 256, kWarps = kThreads / 32;
constexpr float kEps = 1e-6f;
// -DBATCHED_NORM=1: the normalization issues all its loads of y at once (see normalize_into).
#ifndef BATCHED_NORM
#define BATCHED_NORM 0
#endif
constexpr bool kBatchedNorm = BATCHED_NORM;

struct Chain {
  const uint8_t* w;  // [L][D][D] e4m3
  float* x0;         // [D], the first stage's input
  float* y;          // [L][D], each stage's output
  int D, L;
  // SPIN_NS=t at run time: a latency stage between two products (dsv4's mHC, norms, routing,
  // attention: few blocks, no weights), emulated by one block spinning t ns after the product
  // before it has ended; the next product starts after it. In the ring form every block waits for
  // it on `spun` (a second counter) while the producers keep copying.
  long long spin_ns;
  unsigned* spun;
};

// A warp's rows of a stage: r = global warp, + all warps, ... A lane's 16-byte pieces of a row:
// lane + 32 j, D / 512 of them, all loaded at once.
constexpr int kMaxPieces = 8;  // D up to 4096
struct RowLoads {
  uint4 v[kMaxPieces];
};
__device__ __forceinline__ void load_row(const uint8_t* w, int D, int row, RowLoads& r) {
  const int lane = threadIdx.x & 31, pieces = D / 512;
  const uint4* p = reinterpret_cast<const uint4*>(w + static_cast<int64_t>(row) * D);
#pragma unroll
  for (int j = 0; j < kMaxPieces; ++j)
    if (j < pieces)
      asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                   : "=r"(r.v[j].x), "=r"(r.v[j].y), "=r"(r.v[j].z), "=r"(r.v[j].w)
                   : "l"(p + lane + 32 * j));
}
// x in shared memory, column 16 p + c at c · D/16 + p: the 32 lanes of a warp read 32 consecutive
// words for one c (no bank conflicts).
__device__ __forceinline__ int xidx(int i, int D) { return (i & 15) * (D >> 4) + (i >> 4); }

// Σ_k w[row][k] x[k] of a lane's pieces (16 e4m3 each, in order), then over the warp.
__device__ __forceinline__ float dot_row(const RowLoads& r, const float* xs, int D) {
  const int lane = threadIdx.x & 31, pieces = D / 512, d16 = D >> 4;
  float acc = 0.0f;
#pragma unroll
  for (int j = 0; j < kMaxPieces; ++j) {
    if (j >= pieces) break;
    const uint32_t w4[4] = {r.v[j].x, r.v[j].y, r.v[j].z, r.v[j].w};
    const float* x = xs + lane + 32 * j;  // + c · d16: column 16 (lane + 32 j) + c
#pragma unroll
    for (int q = 0; q < 4; ++q)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const auto pair = static_cast<__nv_fp8x2_storage_t>(w4[q] >> (16 * h));
        const __half2_raw hr = __nv_cvt_fp8x2_to_halfraw2(pair, __NV_E4M3);
        const float2 f = __half22float2(__half2(hr));
        acc = fmaf(f.x, x[(4 * q + 2 * h) * d16], acc);
        acc = fmaf(f.y, x[(4 * q + 2 * h + 1) * d16], acc);
      }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  return acc;
}

// The end of a normalization: thread t's Σ y² over its elements (already in xs) in ss; the block's
// total in warp order, then xs *= 1 / rms.
template <typename Sync>
__device__ __forceinline__ void finish_norm(float ss, int D, float* xs, float* red, int t, Sync&& sync) {
  const int lane = t & 31, warp = t >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if (lane == 0) red[warp] = ss;
  sync();
  float tot = 0.0f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) tot += red[w];
  const float inv = 1.0f / sqrtf(tot / static_cast<float>(D) + kEps);
  sync();  // every thread has read red before it is reused
  for (int i = t; i < D; i += kThreads) xs[i] *= inv;
  sync();
}
// x = y / rms(y) into shared memory (at xidx), by kThreads threads (t = 0 .. kThreads - 1, sync()
// their barrier): thread t adds y[t + 256 i]² in i order, then the warps' sums in warp order (every
// block computes the same bits).
template <typename Sync>
__device__ __forceinline__ void normalize_into(const float* y, int D, float* xs, float* red, int t, Sync&& sync) {
  float ss = 0.0f;
  if (kBatchedNorm) {  // all of a thread's loads issued first: one round trip, not D / 256
    constexpr int kMax = 512 * kMaxPieces / kThreads;
    float v[kMax];
#pragma unroll
    for (int j = 0; j < kMax; ++j)
      if (t + j * kThreads < D) v[j] = __ldcg(y + t + j * kThreads);
#pragma unroll
    for (int j = 0; j < kMax; ++j)
      if (t + j * kThreads < D) {
        xs[xidx(t + j * kThreads, D)] = v[j];
        ss = fmaf(v[j], v[j], ss);
      }
  } else {
    for (int i = t; i < D; i += kThreads) {
      const float v = __ldcg(y + i);
      xs[xidx(i, D)] = v;
      ss = fmaf(v, v, ss);
    }
  }
  finish_norm(ss, D, xs, red, t, sync);
}
__device__ __forceinline__ void normalize_into(const float* y, int D, float* xs, float* red) {
  normalize_into(y, D, xs, red, threadIdx.x, [] { __syncthreads(); });
}
__device__ __forceinline__ void copy_into(const float* x, int D, float* xs) {
  for (int i = threadIdx.x; i < D; i += kThreads) xs[xidx(i, D)] = __ldcg(x + i);
  __syncthreads();
}

// The rows of stage i for this block's warps, the next row's loads in flight during each row's
// arithmetic; the first row's are already in r (loaded before the wait).
__device__ __forceinline__ void stage_rows(const Chain& c, int i, const float* xs, RowLoads& r) {
  const int lane = threadIdx.x & 31;
  const int gw = blockIdx.x * kWarps + (threadIdx.x >> 5), nw = gridDim.x * kWarps;
  const uint8_t* w = c.w + static_cast<int64_t>(i) * c.D * c.D;
  float* y = c.y + static_cast<int64_t>(i) * c.D;
  RowLoads next;
  for (int row = gw; row < c.D; row += nw) {
    if (row + nw < c.D) load_row(w, c.D, row + nw, next);
    const float v = dot_row(r, xs, c.D);
    if (lane == 0) y[row] = v;
    r = next;
  }
}

// ---- kernels -------------------------------------------------------------------------------------
__global__ void __launch_bounds__(kThreads) product_kernel(Chain c, int i, bool fused_norm) {
  extern __shared__ float xs[];
  __shared__ float red[kWarps];
  RowLoads r;
  const int gw = blockIdx.x * kWarps + (threadIdx.x >> 5);
  if (gw < c.D) load_row(c.w + static_cast<int64_t>(i) * c.D * c.D, c.D, gw, r);  // weights: before the wait
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;");
  if (i == 0)
    copy_into(c.x0, c.D, xs);
  else if (fused_norm)
    normalize_into(c.y + static_cast<int64_t>(i - 1) * c.D, c.D, xs, red);
  else
    copy_into(c.y + static_cast<int64_t>(c.L) * c.D, c.D, xs);  // norm_kernel's x
  stage_rows(c, i, xs, r);
}
// x for stage i + 1 (kept after the L outputs: c.y[L]) from y_i, one block. early: it lets the next
// product launch before its own wait (dsv4's short kernels, pdl_begin_early), so that product's
// blocks are scheduled and load their first weights while this kernel waits.
__global__ void __launch_bounds__(kThreads) norm_kernel(Chain c, int i, bool early) {
  extern __shared__ float xs[];
  __shared__ float red[kWarps];
  if (early) asm volatile("griddepcontrol.launch_dependents;");
  asm volatile("griddepcontrol.wait;" ::: "memory");
  if (!early) asm volatile("griddepcontrol.launch_dependents;");
  normalize_into(c.y + static_cast<int64_t>(i) * c.D, c.D, xs, red);
  float* xn = c.y + static_cast<int64_t>(c.L) * c.D;
  for (int k = threadIdx.x; k < c.D; k += kThreads) xn[k] = xs[xidx(k, c.D)];
}

// The latency stage as a launch: one block, released early as dsv4's short kernels are (the next
// product is scheduled and loads its first weights meanwhile), then the wait and the spin.
__global__ void __launch_bounds__(32) spin_kernel(long long t) {
  asm volatile("griddepcontrol.launch_dependents;");
  asm volatile("griddepcontrol.wait;" ::: "memory");
  if (threadIdx.x == 0) spin_for(t);
}

// The whole chain in one cooperative grid; `arrived` counts blocks done with each stage.
__global__ void __launch_bounds__(kThreads) persistent_kernel(Chain c, unsigned* arrived) {
  extern __shared__ float xs[];
  __shared__ float red[kWarps];
  const int gw = blockIdx.x * kWarps + (threadIdx.x >> 5);
  for (int i = 0; i < c.L; ++i) {
    RowLoads r;
    if (gw < c.D) load_row(c.w + static_cast<int64_t>(i) * c.D * c.D, c.D, gw, r);  // before the barrier
    if (i == 0) {
      copy_into(c.x0, c.D, xs);
    } else {
      if (threadIdx.x == 0) {
        wait_count(arrived, static_cast<unsigned>(i) * gridDim.x);
      }
      __syncthreads();
      normalize_into(c.y + static_cast<int64_t>(i - 1) * c.D, c.D, xs, red);
    }
    stage_rows(c, i, xs, r);
    __syncthreads();  // the block's rows are written
    if (threadIdx.x == 0) {
      __threadfence();
      atomicAdd(arrived, 1u);
    }
  }
}

// ---- the persistent chain fed by the copy engine ------------------------------------------------
// One block an SM: 8 consumer warps (threads 0 .. 255, as kThreads) and a producer warp whose
// first lane asks for the block's rows of every stage in turn, kChunkRows rows a bulk copy, into a
// ring of kSlots entries guarded by mbarriers. The weights do not depend on x, so the producer runs
// ahead across the grid barriers as far as the ring lets it (kSlots · kChunkRows · D bytes an SM,
// ~25 MB in all at D = 4096): the stream need not stop while a stage waits for the previous one.
// Block b takes rows [b D / G, (b + 1) D / G) of each stage (contiguous: one copy a chunk), a chunk's
// row w to consumer warp w. The sums are dot_row's and normalize_into's: the same bits.
// kCompute = false: the consumers only release each entry (no barrier, no arithmetic): the ring's
// own streaming rate over the same bytes.
constexpr int kChunkRows = kWarps, kSlots = 6;
__device__ __forceinline__ uint32_t saddr(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ void consumers_sync() { asm volatile("bar.sync 1, %0;" ::"n"(kThreads) : "memory"); }

// -DRING_STAMPS=1: block 0's thread 0 stamps each stage (globaltimer, ns) at its entry, after the
// grid barrier, after the normalization, after its rows, after its arrival; main prints the means.
#ifndef RING_STAMPS
#define RING_STAMPS 0
#endif
// -DARRIVE_RELEASE=1: a block arrives by red.release.gpu, not __threadfence + atomicAdd.
#ifndef ARRIVE_RELEASE
#define ARRIVE_RELEASE 0
#endif
constexpr bool kArriveRelease = ARRIVE_RELEASE;
constexpr int kStampMax = 256, kStampPoints = 5;
__device__ unsigned long long g_stamps[kStampMax][kStampPoints];
__device__ __forceinline__ void stamp(int i, int point) {
  if (RING_STAMPS && blockIdx.x == 0 && threadIdx.x == 0 && i < kStampMax) {
    g_stamps[i][point] = globaltimer_ns();
  }
}

// Warp w's rows of the block's slice (w, w + 8, ..., one in each of the stage's chunks, all in the
// ring) as independent sums taken together: each x pair is read from shared memory once for all
// of them, and each row's sum keeps dot_row's order (the same bits).
constexpr int kMaxChunks = 4;
__device__ __forceinline__ void rows_interleaved(const uint8_t* ring, int64_t chunk, int64_t it, int slots, int chunks,
                                                 int r0, int r1, const float* xs, int D, float* y) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, pieces = D / 512, d16 = D >> 4;
  float acc[kMaxChunks] = {};
  const uint4* p[kMaxChunks];
#pragma unroll
  for (int q = 0; q < kMaxChunks; ++q)
    p[q] = reinterpret_cast<const uint4*>(ring + ((it + q) % slots) * chunk + static_cast<int64_t>(warp) * D);
#pragma unroll
  for (int j = 0; j < kMaxPieces; ++j) {
    if (j >= pieces) break;
    uint32_t w4[kMaxChunks][4];
#pragma unroll
    for (int q = 0; q < kMaxChunks; ++q)
      if (q < chunks) {
        const uint4 v = p[q][lane + 32 * j];
        w4[q][0] = v.x, w4[q][1] = v.y, w4[q][2] = v.z, w4[q][3] = v.w;
      }
    const float* x = xs + lane + 32 * j;
#pragma unroll
    for (int k = 0; k < 4; ++k)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float x0 = x[(4 * k + 2 * h) * d16], x1 = x[(4 * k + 2 * h + 1) * d16];
#pragma unroll
        for (int q = 0; q < kMaxChunks; ++q)
          if (q < chunks) {
            const auto pair = static_cast<__nv_fp8x2_storage_t>(w4[q][k] >> (16 * h));
            const float2 f = __half22float2(__half2(__nv_cvt_fp8x2_to_halfraw2(pair, __NV_E4M3)));
            acc[q] = fmaf(f.x, x0, acc[q]);
            acc[q] = fmaf(f.y, x1, acc[q]);
          }
      }
  }
#pragma unroll
  for (int q = 0; q < kMaxChunks; ++q) {
    float a = acc[q];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) a += __shfl_xor_sync(0xffffffffu, a, o);
    const int row = r0 + q * kChunkRows + warp;
    if (q < chunks && row < r1 && lane == 0) y[row] = a;
  }
}

// kLL: no grid barrier. Each output goes out with its stage's tag in one 8-byte store (value,
// tag), as NCCL's LL protocol does, and the next stage's normalization polls the values
// themselves until every tag is the stage's: no fence, no counter.
__device__ __forceinline__ uint2 ld_relaxed(const uint2* p) {
  uint2 v;
  asm volatile("ld.relaxed.gpu.global.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void st_relaxed(uint2* p, uint2 v) {
  asm volatile("st.relaxed.gpu.global.v2.u32 [%0], {%1, %2};" ::"l"(p), "r"(v.x), "r"(v.y) : "memory");
}
// normalize_into's batched form over tagged values: every load issued at once, then any whose tag
// is not yet `tag` read again until it is.
__device__ __forceinline__ void normalize_ll(const uint2* ll, unsigned tag, int D, float* xs, float* red, int t) {
  constexpr int kMax = 512 * kMaxPieces / kThreads;
  uint2 v[kMax];
#pragma unroll
  for (int j = 0; j < kMax; ++j)
    if (t + j * kThreads < D) v[j] = ld_relaxed(ll + t + j * kThreads);
  float ss = 0.0f;
#pragma unroll
  for (int j = 0; j < kMax; ++j)
    if (t + j * kThreads < D) {
      while (v[j].y != tag) v[j] = ld_relaxed(ll + t + j * kThreads);
      const float f = __uint_as_float(v[j].x);
      xs[xidx(t + j * kThreads, D)] = f;
      ss = fmaf(f, f, ss);
    }
  finish_norm(ss, D, xs, red, t, [] { consumers_sync(); });
}

// kPause: the producer issues no copy while the consumers are between a stage's last row and the
// end of the next normalization (arrival, barrier, round trip), so that those wait behind no copy.
template <bool kCompute, bool kInterleave, bool kLL = false, bool kPause = false>
__global__ void __launch_bounds__(kThreads + 32)
    ring_kernel(Chain c, unsigned* arrived, int slots, uint2* ll, unsigned epoch) {
  extern __shared__ __align__(128) uint8_t smem[];
  const int64_t chunk = static_cast<int64_t>(kChunkRows) * c.D;
  uint8_t* ring = smem;
  float* xs = reinterpret_cast<float*>(smem + kSlots * chunk);
  uint64_t* full = reinterpret_cast<uint64_t*>(xs + c.D);
  uint64_t* empty = full + kSlots;
  __shared__ float red[kWarps];
  __shared__ volatile int critical;
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  const int r0 = static_cast<int>(static_cast<int64_t>(blockIdx.x) * c.D / gridDim.x);
  const int r1 = static_cast<int>(static_cast<int64_t>(blockIdx.x + 1) * c.D / gridDim.x);
  if (t == 0) {
    critical = 0;
    for (int k = 0; k < kSlots; ++k) mbar_init(full + k, 1), mbar_init(empty + k, kWarps);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  if (warp == kWarps) {  // the producer
    if (lane != 0) return;
    int64_t it = 0;
    for (int i = 0; i < c.L; ++i)
      for (int r = r0; r < r1; r += kChunkRows, ++it) {
        const int slot = static_cast<int>(it % slots);
        const int64_t use = it / slots;
        if (use > 0) mbar_wait(empty + slot, static_cast<uint32_t>((use - 1) & 1));
        if (kPause)
          while (critical) __nanosleep(32);
        const uint32_t bytes = static_cast<uint32_t>(min(kChunkRows, r1 - r) * c.D);
        mbar_expect(full + slot, bytes);
        const uint8_t* src = c.w + (static_cast<int64_t>(i) * c.D + r) * c.D;
        asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                         saddr(ring + slot * chunk)),
                     "l"(src), "r"(bytes), "r"(saddr(full + slot))
                     : "memory");
      }
    return;
  }
  int64_t it = 0;
  for (int i = 0; i < c.L; ++i) {
    stamp(i, 0);
    if (kCompute) {
      if (i == 0) {
        for (int k = t; k < c.D; k += kThreads) xs[xidx(k, c.D)] = __ldcg(c.x0 + k);
        consumers_sync();
      } else if (kLL) {
        stamp(i, 1);
        normalize_ll(ll + static_cast<int64_t>(i - 1) * c.D, epoch * 256u + i, c.D, xs, red, t);
      } else {
        if (t == 0) {
          wait_count(arrived, static_cast<unsigned>(i) * gridDim.x);
          if (c.spin_ns > 0) {  // the latency stage: block 0 spins, every block waits for it
            if (blockIdx.x == 0) {
              spin_for(c.spin_ns);
              release_add(c.spun);
            }
            wait_count(c.spun, static_cast<unsigned>(i));
          }
        }
        consumers_sync();
        stamp(i, 1);
        normalize_into(c.y + static_cast<int64_t>(i - 1) * c.D, c.D, xs, red, t, [] { consumers_sync(); });
      }
      if (kPause && t == 0) critical = 0;
      stamp(i, 2);
    }
    float* y = c.y + static_cast<int64_t>(i) * c.D;
    if (kInterleave) {  // the stage's chunks all in the ring; warp w's rows w, w + 8, ... at once
      const int chunks = (r1 - r0 + kChunkRows - 1) / kChunkRows;  // at most kMaxChunks (main checks)
      for (int q = 0; q < chunks; ++q)
        mbar_wait(full + (it + q) % slots, static_cast<uint32_t>(((it + q) / slots) & 1));
      rows_interleaved(ring, chunk, it, slots, chunks, r0, r1, xs, c.D, y);
      __syncwarp();
      if (lane == 0)
        for (int q = 0; q < chunks; ++q) mbar_arrive(empty + (it + q) % slots);
      it += chunks;
    }
    for (int r = r0; !kInterleave && r < r1; r += kChunkRows, ++it) {
      const int slot = static_cast<int>(it % slots);
      mbar_wait(full + slot, static_cast<uint32_t>((it / slots) & 1));
      if (kCompute && r + warp < r1) {
        const uint4* p = reinterpret_cast<const uint4*>(ring + slot * chunk + static_cast<int64_t>(warp) * c.D);
        RowLoads rl;
#pragma unroll
        for (int j = 0; j < kMaxPieces; ++j)
          if (j < c.D / 512) rl.v[j] = p[lane + 32 * j];
        const float v = dot_row(rl, xs, c.D);
        if (lane == 0) y[r + warp] = v;
        if (kLL && lane == 0)
          st_relaxed(ll + static_cast<int64_t>(i) * c.D + r + warp,
                     make_uint2(__float_as_uint(v), epoch * 256u + i + 1));
      }
      __syncwarp();
      if (lane == 0) mbar_arrive(empty + slot);
    }
    if (kCompute) {
      consumers_sync();  // the block's rows of stage i are written
      if (kPause && t == 0 && i + 1 < c.L) critical = 1;
      stamp(i, 3);
      if (t == 0 && !kLL) {
        if (kArriveRelease) {  // one release reduction after the block barrier (cutlass's semaphore)
          release_add(arrived);
        } else {
          __threadfence();
          atomicAdd(arrived, 1u);
        }
      }
      stamp(i, 4);
    }
  }
}

__global__ void fill_e4m3(uint8_t* w, int64_t n, uint32_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    w[i] = e4m3_from_hash(fill_hash(i, seed));
}

}  // namespace

int main(int argc, char** argv) {
  const int D = argc > 1 ? std::atoi(argv[1]) : 4096, L = argc > 2 ? std::atoi(argv[2]) : 20;
  if (D % 512 != 0 || D > 512 * kMaxPieces || L < 1) {
    std::printf("usage: pc [D (a multiple of 512, at most %d)] [stages]\n", 512 * kMaxPieces);
    return 2;
  }
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const size_t smem = static_cast<size_t>(D) * sizeof(float);
  CK(cudaFuncSetAttribute(product_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  CK(cudaFuncSetAttribute(norm_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  CK(cudaFuncSetAttribute(persistent_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  int per_sm = 0;
  CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, persistent_kernel, kThreads, smem));
  const int blocks = sms * std::min(per_sm, 2);  // dsv4's FP8 products: 2 blocks an SM
  const int64_t wbytes = static_cast<int64_t>(L) * D * D;
  uint8_t* w;
  float *x0, *y;
  unsigned* arrived;
  uint32_t* sink;
  CK(cudaMalloc(&w, wbytes));
  CK(cudaMalloc(&x0, D * sizeof(float)));
  CK(cudaMalloc(&y, static_cast<size_t>(L + 1) * D * sizeof(float)));
  CK(cudaMalloc(&arrived, sizeof(unsigned)));
  CK(cudaMalloc(&sink, sizeof(uint32_t)));
  fill_e4m3<<<1024, 256>>>(w, wbytes, 17);
  {
    std::vector<float> h(D);
    for (int k = 0; k < D; ++k) h[k] = 0.5f + static_cast<float>((k * 37) % 101) / 101.0f;
    CK(cudaMemcpy(x0, h.data(), D * sizeof(float), cudaMemcpyHostToDevice));
  }
  unsigned* spun;
  CK(cudaMalloc(&spun, sizeof(unsigned)));
  const long long spin_ns = std::getenv("SPIN_NS") ? std::atoll(std::getenv("SPIN_NS")) : 0;
  const Chain c{w, x0, y, D, L, spin_ns, spun};
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  Timer tm{s, nullptr, (256ll << 20) / 16};
  CK(cudaMalloc(&tm.flush, tm.flush_vecs * 16));

  auto kernels = [&](bool fused, bool early) {
    for (int i = 0; i < L; ++i) {
      launch_pdl(product_kernel, blocks, kThreads, smem, s, c, i, fused);
      if (spin_ns > 0 && i + 1 < L) launch_pdl(spin_kernel, 1, 32, 0, s, spin_ns);
      if (!fused && i + 1 < L) launch_pdl(norm_kernel, 1, kThreads, smem, s, c, i, early);
    }
  };
  auto persist = [&] {
    CK(cudaMemsetAsync(arrived, 0, sizeof(unsigned), s));
    Chain cc = c;
    unsigned* a = arrived;
    void* args[] = {&cc, &a};
    CK(cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(persistent_kernel), dim3(blocks), dim3(kThreads), args,
                                   smem, s));
  };
  const size_t ring_smem = kSlots * static_cast<size_t>(kChunkRows) * D + smem + 2 * kSlots * sizeof(uint64_t);
  CK(cudaFuncSetAttribute(ring_kernel<true, false>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                          static_cast<int>(ring_smem)));
  CK(cudaFuncSetAttribute(ring_kernel<true, true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                          static_cast<int>(ring_smem)));
  CK(cudaFuncSetAttribute(ring_kernel<false, false>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                          static_cast<int>(ring_smem)));
  CK(cudaFuncSetAttribute(ring_kernel<true, false, true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                          static_cast<int>(ring_smem)));
  CK(cudaFuncSetAttribute(ring_kernel<true, false, false, true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                          static_cast<int>(ring_smem)));
  uint2* ll;
  CK(cudaMalloc(&ll, static_cast<size_t>(L) * D * sizeof(uint2)));
  CK(cudaMemset(ll, 0, static_cast<size_t>(L) * D * sizeof(uint2)));
  unsigned epoch = 0;  // the tags of each run differ from every earlier run's (L < 256)
  // RING_SLOTS=n (1 .. kSlots): fewer entries in use, a shorter run-ahead.
  const int ring_slots =
      std::getenv("RING_SLOTS") ? std::max(1, std::min(kSlots, std::atoi(std::getenv("RING_SLOTS")))) : kSlots;
  std::printf("ring: %d entries of %d rows\n", ring_slots, kChunkRows);
  const int stage_chunks = ((D + sms - 1) / sms + kChunkRows - 1) / kChunkRows;
  const bool interleave_fits = stage_chunks <= kMaxChunks && stage_chunks <= ring_slots;
  // 0: stream alone, 1: a chunk's rows a warp each, 2: interleaved, 3: tagged, 4: 1 with kPause
  auto ring = [&](int mode) {
    CK(cudaMemsetAsync(arrived, 0, sizeof(unsigned), s));
    CK(cudaMemsetAsync(spun, 0, sizeof(unsigned), s));
    Chain cc = c;
    unsigned* a = arrived;
    int slots = ring_slots;
    uint2* l = ll;
    unsigned e = ++epoch;
    void* args[] = {&cc, &a, &slots, &l, &e};
    const void* k = mode == 4   ? reinterpret_cast<const void*>(ring_kernel<true, false, false, true>)
                    : mode == 3 ? reinterpret_cast<const void*>(ring_kernel<true, false, true>)
                    : mode == 2 ? reinterpret_cast<const void*>(ring_kernel<true, true>)
                    : mode == 1 ? reinterpret_cast<const void*>(ring_kernel<true, false>)
                                : reinterpret_cast<const void*>(ring_kernel<false, false>);
    CK(cudaLaunchCooperativeKernel(k, dim3(sms), dim3(kThreads + 32), args, ring_smem, s));
  };
  auto final_hash = [&] {
    CK(cudaStreamSynchronize(s));
    std::vector<uint32_t> h(D);
    CK(cudaMemcpy(h.data(), y + static_cast<int64_t>(L - 1) * D, D * 4, cudaMemcpyDeviceToHost));
    return static_cast<unsigned long long>(fnv1a(h));
  };
  const int trials = 15;
  const double mb = wbytes / 1e6;
  std::printf("chain of %d stages, %d x %d FP8 weights each (%.1f MB in all), %d blocks of %d threads\n", L, D, D, mb,
              blocks, kThreads);
  if (spin_ns > 0)
    std::printf("with a latency stage of %lld ns between products (SPIN_NS; kernels, fused and ring forms only)\n",
                spin_ns);
  const double ceil_us = tm.median(
      trials, [](int) {},
      [&] { flat_read<<<blocks * 2, kThreads, 0, s>>>(reinterpret_cast<const uint4*>(w), wbytes / 16, sink); });
  std::printf("| variant | us | us a stage | GB/s | final y hash |\n|---|---|---|---|---|\n");
  std::printf("| one flat read of the bytes | %.1f | %.2f | %.0f | |\n", ceil_us, ceil_us / L, mb * 1e3 / ceil_us);
  for (int round = 0; round < 2; ++round) {
    struct V {
      const char* name;
      std::function<void()> run;
    };
    for (const V& v :
         {V{"kernels: product + norm launches, PDL", [&] { kernels(false, false); }},
          V{"kernels, the norm releasing the next product before its wait", [&] { kernels(false, true); }},
          V{"fused: the norm in every product block, PDL", [&] { kernels(true, false); }},
          V{"persist: one cooperative kernel, grid barriers", persist},
          V{"ring: persistent, the weights by bulk copies into a shared-memory ring", [&] { ring(1); }},
          V{"ring, a warp's rows of a stage taken together",
            [&] {
              if (interleave_fits) ring(2);
            }},
          V{"ring, no copy issued from a stage's last row to the next normalization's end", [&] { ring(4); }},
          V{"ring, tagged outputs polled by the next stage (no barrier, no fence)", [&] { ring(3); }},
          V{"ring without arithmetic or barriers (the ring's stream alone)", [&] { ring(0); }}}) {
      if (!interleave_fits && std::string(v.name).rfind("ring, a warp", 0) == 0) continue;  // > kMaxChunks
      const std::string name = v.name;
      if (spin_ns > 0 && (name.rfind("persist", 0) == 0 || name.rfind("ring, tagged", 0) == 0)) continue;  // no spin
      const double us = tm.median(
          trials, [](int) {}, v.run);
      std::printf("| %s | %.1f | %.2f | %.0f | %016llx |\n", v.name, us, us / L, mb * 1e3 / us, final_hash());
    }
  }
  if (RING_STAMPS) {  // one more run of the tagged ring (or of STAMP_MODE's), stamped
    ring(std::getenv("STAMP_MODE") ? std::atoi(std::getenv("STAMP_MODE")) : 3);
    CK(cudaStreamSynchronize(s));
    unsigned long long h[kStampMax][kStampPoints];
    CK(cudaMemcpyFromSymbol(h, g_stamps, sizeof(h)));
    double sum[kStampPoints] = {};
    int n = 0;
    for (int i = 2; i < std::min(L, kStampMax); ++i, ++n)  // stages after the first two
      for (int p = 1; p < kStampPoints; ++p) sum[p] += static_cast<double>(h[i][p] - h[i][p - 1]);
    sum[0] = n ? static_cast<double>(h[std::min(L, kStampMax) - 1][0] - h[1][0]) : 0;
    std::printf(
        "ring stamps, block 0, mean ns a stage over %d stages: stage %.0f | barrier %.0f | "
        "normalization %.0f | rows %.0f | arrival %.0f\n",
        n, n ? sum[0] / (n) : 0.0, sum[1] / n, sum[2] / n, sum[3] / n, sum[4] / n);
  }
  return 0;
}
