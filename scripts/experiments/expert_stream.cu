// How close do the decode step's weight streams come to what one kernel can read? A development
// experiment for the batch-1 decode step (docs/cuda.md), not part of dsv4. Each case reads weights
// that are not in L2 (a 256 MiB write between trials) and is timed alone with events (median).
//   cases: the routed experts' two few-row kernels on 6 of 64 experts (V4-Flash shapes, FP4), the
//   FP8 few-row product at wq_b's and wo_b's shapes, and plain reads of the same bytes: a flat
//   read (the ceiling for that many bytes in one kernel) and load-only replicas of the expert
//   kernel's access pattern (which part of the gap is the pattern, which the arithmetic).
// The expert kernels come in with their source file (this file includes it), so the register
// kernel (moe_gemv_kernel) and the alternatives below run side by side, each checked bit for bit
// against it first:
//   - whole tiles in shared memory by bulk copies or cp.async, and a per-warp cp.async ring: both
//     measured slower (bench/results/2026-11-29-cuda-9.md);
//   - the activation rows converted once per block (moe_gemv_xs_kernel): written after the
//     session's device time ran out, not yet run (`reg` runs it against the register kernel).
// Arguments: none (everything), `reg` (the register kernel against the staged-activation one),
// `fp8` (the FP8 products only), `ncu` (one launch of each expert kernel, for ncu).
// On the device machine:
//   nvcc -std=c++20 -O3 -gencode=arch=compute_90a,code=sm_90a -Isrc scripts/experiments/expert_stream.cu \
//     src/ops/gemv.cu src/cuda/launch.cu -o /tmp/es && /tmp/es
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <random>
#include <vector>

#include "ops/cuda_ops.h"
#include "../../src/ops/moe_experts.cu"

// ---- kernels tried against moe_gemv_kernel (not in dsv4) ---------------------------------------
namespace dsv4::cuda::xptx {
using ptx::smem_addr;
// Bulk copies (the copy engine without a tensor map): global -> shared, completing on an mbarrier
// (8 bytes of shared memory). Sizes and both addresses are multiples of 16 bytes. The pattern: one
// thread inits the barrier (count 1), fences the init, arrives with the bytes to expect; after a
// block barrier any thread may copy; a waiter on parity 0 then sees the bytes.
__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void fence_mbar_init() { asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory"); }
__device__ __forceinline__ void mbar_arrive_expect(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "WAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT;\n"
      "}\n" ::"r"(smem_addr(bar)),
      "r"(parity)
      : "memory");
}
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                   smem_addr(dst)),
               "l"(src), "r"(bytes), "r"(smem_addr(bar))
               : "memory");
}

}  // namespace dsv4::cuda::xptx

namespace dsv4::cuda {
namespace {
using namespace expert;
// ---- gemv through shared memory (FP4, K a multiple of 512) ----------------------------------
// Two alternatives to moe_gemv_kernel, kept here because both measured slower (bench/results/
// 2026-11-29-cuda-9.md). The register kernel keeps its weights in registers, two steps ahead: a block reads its 16 rows in
// round trips, each waiting a full memory latency, and computes between them while its loads
// stand still. Measured alone (scripts/experiments/expert_stream.cu, 6 of 64 experts, B = 1) the
// W1/W3 product took 32.7 µs where a plain read of the same bytes took 18 µs, and a copy of its
// loads without the arithmetic 22 µs. Here a block asks the copy engine for all of its weights at
// once (bulk copies into shared memory, ~70 KB a block for W1/W3 at K = 4096, 2 blocks an SM), in
// K slices with an mbarrier each, so every SM keeps ~140 KB in flight and computes slice j while
// the later ones arrive; a block of several passes (more than 8 rows of its expert) reads its
// weights once. The warps, steps, mma order and epilogue are the kernel above's, so the results
// are the same bits.
//   Layout: per matrix 16 code rows of K/2 + 64 bytes (lanes g and g + 1 of a quarter warp read
//   rows 64 bytes apart mod 128: no bank conflicts) and 16 scale rows of K/32 + 16 bytes (rows
//   16 bytes apart mod 128), after kMaxSlices mbarriers. A slice is K/S columns for the largest
//   S ≤ 4 dividing K/512, so each row's part of a slice is whole 16-byte units (scales: K/32/S).
struct SmemTile {
  static constexpr int kMaxSlices = 4, kCodePad = 64, kScalePad = 16, kHeader = 64;
  int cs, ss, slices, slice_cols;
  __host__ __device__ SmemTile(int K, int max_slices) : cs(K / 2 + kCodePad), ss(K / 32 + kScalePad), slices(max_slices) {
    while ((K / 512) % slices) --slices;
    slice_cols = K / slices;
  }
  __host__ __device__ size_t bytes(int mats) const { return kHeader + static_cast<size_t>(mats) * GemvConfig::kRows * (cs + ss); }
  __device__ uint8_t* codes(uint8_t* base, int m) const { return base + kHeader + m * GemvConfig::kRows * cs; }
  __device__ uint8_t* scales(uint8_t* base, int m, int mats) const {
    return base + kHeader + mats * GemvConfig::kRows * cs + m * GemvConfig::kRows * ss;
  }
};
static_assert(SmemTile::kMaxSlices * 8 <= SmemTile::kHeader, "the mbarriers fit the header");

inline bool smem_tile_fits(const ExpertMatrix& w) { return w.codes && w.cols % 512 == 0; }

template <int kMax>
__device__ __forceinline__ void cp_async_wait_upto(int pending) {
  if constexpr (kMax > 0) {
    if (pending >= kMax) return ptx::cp_async_wait<kMax>();
    return cp_async_wait_upto<kMax - 1>(pending);
  } else {
    ptx::cp_async_wait<0>();
  }
}

template <bool kSwiglu, int kWarps, int kMaxSlices, bool kBulk>
__global__ void __launch_bounds__(kWarps * 32)
moe_gemv_smem_kernel(const bf16* x, const float* x_f32, int k, ExpertMatrix wa, ExpertMatrix wb, const int2* tiles,
                     const int32_t* ntiles, const int32_t* offsets, float limit, const float* weight,
                     const int32_t* perm, bf16* h_out, float* y_out) {
  dev::pdl_begin();  // the tile list names the expert, so the copies wait for it
  using C = GemvConfig;
  constexpr int kMats = kSwiglu ? 2 : 1;
  extern __shared__ __align__(128) uint8_t smem[];
  __shared__ float partial[kWarps][kMats][C::kRows][C::kCols];
  if (static_cast<int>(blockIdx.y) >= *ntiles) return;
  const int e = tiles[blockIdx.y].x;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int K = wa.cols, N = wa.rows, n0 = blockIdx.x * C::kRows;
  const int rows = min(C::kRows, N - n0);
  const SmemTile L(K, kMaxSlices);
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem);
  const int code_bytes = L.slice_cols / 2, scale_bytes = L.slice_cols / 32;
  auto code_src = [&](int m, int r, int j) {
    return (m == 0 ? wa.codes : wb.codes) + (static_cast<int64_t>(e) * N + n0 + r) * (K / 2) + j * code_bytes;
  };
  auto scale_src = [&](int m, int r, int j) {
    return (m == 0 ? wa.scales : wb.scales) + (static_cast<int64_t>(e) * N + n0 + r) * (K / 32) + j * scale_bytes;
  };
  if constexpr (kBulk) {
    if (threadIdx.x == 0) {
      for (int j = 0; j < L.slices; ++j) xptx::mbar_init(&bars[j], 1);
      xptx::fence_mbar_init();
      for (int j = 0; j < L.slices; ++j) xptx::mbar_arrive_expect(&bars[j], rows * kMats * (code_bytes + scale_bytes));
    }
    __syncthreads();
    // Copy c, slice-major: codes and scales of row r of matrix m in slice j.
    const int copies = L.slices * kMats * rows * 2;
    for (int c = threadIdx.x; c < copies; c += blockDim.x) {
      const int sc = c & 1, r = (c >> 1) % rows, m = (c >> 1) / rows % kMats, j = (c >> 1) / rows / kMats;
      if (sc) xptx::bulk_copy(L.scales(smem, m, kMats) + r * L.ss + j * scale_bytes, scale_src(m, r, j), scale_bytes, &bars[j]);
      else xptx::bulk_copy(L.codes(smem, m) + r * L.cs + j * code_bytes, code_src(m, r, j), code_bytes, &bars[j]);
    }
  } else {
    // 16-byte units per row and slice: code units, then scale units; one commit group per slice.
    const int cu = code_bytes / 16, su = scale_bytes / 16, per_row = cu + su;
    for (int j = 0; j < L.slices; ++j) {
      for (int c = threadIdx.x; c < kMats * rows * per_row; c += blockDim.x) {
        const int u = c % per_row, r = c / per_row % rows, m = c / per_row / rows;
        if (u < cu) ptx::cp_async<16>(L.codes(smem, m) + r * L.cs + j * code_bytes + 16 * u, code_src(m, r, j) + 16 * u);
        else ptx::cp_async<16>(L.scales(smem, m, kMats) + r * L.ss + j * scale_bytes + 16 * (u - cu), scale_src(m, r, j) + 16 * (u - cu));
      }
      ptx::cp_async_commit();
    }
  }
  const int steps_per_slice = L.slice_cols / C::kStep;
  const int r_begin = offsets[e], r_end = offsets[e + 1];
  for (int r0 = r_begin; r0 < r_end; r0 += C::kCols) {
    const int nr = min(C::kCols, r_end - r0);
    const bf16* xrow;
    const float* xrow_f32;
    gemv_x_row<kSwiglu>(x, x_f32, k, perm, K, r0 + g, g < nr, xrow, xrow_f32);
    float acc[kMats][4] = {};
    for (int j = 0; j < L.slices; ++j) {
      if (r0 == r_begin) {
        if constexpr (kBulk) {
          xptx::mbar_wait(&bars[j], 0);
        } else {
          cp_async_wait_upto<SmemTile::kMaxSlices - 1>(L.slices - 1 - j);
          __syncthreads();
        }
      }
      for (int s = j * steps_per_slice + warp; s < (j + 1) * steps_per_slice; s += kWarps) {
        const int col = (s * C::kLanesK + t) * C::kChunk;
        GemvStage<true, kMats> st;
#pragma unroll
        for (int m = 0; m < kMats; ++m)
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            // Rows past the end hold stale bytes: their outputs are not stored.
            st.codes[m][r] = *reinterpret_cast<const uint4*>(L.codes(smem, m) + (g + 8 * r) * L.cs + col / 2);
            st.scale[m][r] = L.scales(smem, m, kMats)[(g + 8 * r) * L.ss + col / C::kChunk];
          }
        uint4 xv[4];
        gemv_load_x(xv, xrow, xrow_f32, col);
        uint32_t xb[C::kWords];
#pragma unroll
        for (int q = 0; q < 4; ++q) mma_order4(xv, q, xb + 4 * q);
        gemv_mma(st, xb, acc);
      }
    }
    gemv_epilogue<kSwiglu, kWarps>(partial, acc, n0, N, r0, nr, limit, weight, perm, h_out, y_out);
  }
}

// ---- gemv with a per-warp cp.async ring (FP4) ----------------------------------------------
// The register kernel's steps with its weights staged in shared memory instead of registers: each
// lane copies its own 16 bytes of codes per row and step (and the aligned word holding its scale
// byte) with cp.async into its warp's ring of kStages steps, so no registers hold data in flight:
// more warps an SM, and kStages − 1 steps ahead. Each lane reads back only what it copied itself,
// so the ring needs no barriers. Same warps, steps, mma order and epilogue: the same bits.
template <int kMats, int kStages>
struct Ring {
  static constexpr int kSlots = kStages * kMats * 2 * 32;  // per warp: [stage][matrix][row][lane]
  static constexpr size_t bytes(int warps) { return static_cast<size_t>(warps) * kSlots * (sizeof(uint4) + sizeof(uint32_t)); }
};

template <bool kSwiglu, int kStages, bool kPrefetchX = true>
__global__ void __launch_bounds__(GemvConfig::kWarps * 32, kSwiglu ? 4 : 8)
moe_gemv_ring_kernel(const bf16* x, const float* x_f32, int k, ExpertMatrix wa, ExpertMatrix wb, const int2* tiles,
                     const int32_t* ntiles, const int32_t* offsets, float limit, const float* weight,
                     const int32_t* perm, bf16* h_out, float* y_out) {
  dev::pdl_begin();
  using C = GemvConfig;
  constexpr int kMats = kSwiglu ? 2 : 1;
  using R = Ring<kMats, kStages>;
  extern __shared__ uint4 ring[];
  __shared__ float partial[C::kWarps][kMats][C::kRows][C::kCols];
  if (static_cast<int>(blockIdx.y) >= *ntiles) return;
  const int e = tiles[blockIdx.y].x;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int K = wa.cols, N = wa.rows, n0 = blockIdx.x * C::kRows;
  const int steps = (K + C::kStep - 1) / C::kStep;
  const GemvRows rows = gemv_rows(wa, wb, e, n0 + g);
  uint4* codes = ring + warp * R::kSlots;
  uint32_t* scales = reinterpret_cast<uint32_t*>(ring + C::kWarps * R::kSlots) + warp * R::kSlots;
  auto slot = [&](int u, int m, int r) { return ((u * kMats + m) * 2 + r) * 32 + lane; };
  auto column = [&](int s) { return (s * C::kLanesK + t) * C::kChunk; };
  // Step s of this warp into stage u (zeros past the rows and columns), as one commit group.
  auto issue = [&](int u, int s) {
    const int col = column(s);
    const bool valid = s < steps && col < K;
#pragma unroll
    for (int m = 0; m < kMats; ++m)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const bool ok = valid && rows.codes[m][r];
        ptx::cp_async<16>(&codes[slot(u, m, r)], ok ? rows.codes[m][r] + col / 2 : wa.codes, ok);
        ptx::cp_async<4>(&scales[slot(u, m, r)], ok ? rows.scales[m][r] + (col / C::kChunk & ~3) : wa.scales, ok);
      }
    ptx::cp_async_commit();
  };
  const int r_begin = offsets[e], r_end = offsets[e + 1];
  for (int r0 = r_begin; r0 < r_end; r0 += C::kCols) {
    const int nr = min(C::kCols, r_end - r0);
    const bf16* xrow;
    const float* xrow_f32;
    gemv_x_row<kSwiglu>(x, x_f32, k, perm, K, r0 + g, g < nr, xrow, xrow_f32);
    float acc[kMats][4] = {};
#pragma unroll
    for (int u = 0; u < kStages; ++u) issue(u, warp + u * C::kWarps);
    auto load_x = [&](uint4 (&xv)[4], int s) {
      const int col = column(s);
      const bool in = s < steps && col < K;
      gemv_load_x(xv, in ? xrow : nullptr, in ? xrow_f32 : nullptr, col);
    };
    uint4 xv[4];
    load_x(xv, warp);
    for (int i = 0, s = warp; s < steps; ++i, s += C::kWarps) {
      const int u = i % kStages;
      uint32_t xb[C::kWords];
#pragma unroll
      for (int q = 0; q < 4; ++q) mma_order4(xv, q, xb + 4 * q);
      if (kPrefetchX) load_x(xv, s + C::kWarps);  // the next step's activations, under this step's work
      ptx::cp_async_wait<kStages - 1>();  // this step's group is complete
      GemvStage<true, kMats> st;
#pragma unroll
      for (int m = 0; m < kMats; ++m)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          st.codes[m][r] = codes[slot(u, m, r)];
          st.scale[m][r] = (scales[slot(u, m, r)] >> (8 * t)) & 0xffu;
        }
      gemv_mma(st, xb, acc);
      if (!kPrefetchX) load_x(xv, s + C::kWarps);
      issue(u, s + kStages * C::kWarps);  // into the stage just read: its data are in registers
    }
    ptx::cp_async_wait<0>();
    gemv_epilogue<kSwiglu, C::kWarps>(partial, acc, n0, N, r0, nr, limit, weight, perm, h_out, y_out);
  }
}


// ---- the register kernel with its activation rows converted once per block --------------------
// moe_gemv_kernel spends ~70 of its ~430 instructions per step (a lane, 128 weights) loading,
// rounding and permuting its activation row, and every step of every warp does it again: each
// block converts the whole row 8 times over its warps' steps (once per step, as the steps tile
// K). Here the block converts each row of the pass once into shared memory, in the mma's K order
// (chunk c of row q: 16 words, as mma_order4 makes them), and a step reads its 16 words with four
// 16-byte loads. Passes take at most `xrows` rows (the shared memory holds xrows · K bf16).
// The warps, steps, mma order and epilogue are moe_gemv_kernel's: the same bits.
template <bool kSwiglu>
__global__ void __launch_bounds__(GemvConfig::kWarps * 32, GemvConfig::kFp4Blocks)
moe_gemv_xs_kernel(const bf16* x, const float* x_f32, int k, ExpertMatrix wa, ExpertMatrix wb, const int2* tiles,
                   const int32_t* ntiles, const int32_t* offsets, float limit, const float* weight, const int32_t* perm,
                   bf16* h_out, float* y_out, int xrows) {
  dev::pdl_begin();
  using C = GemvConfig;
  constexpr int kMats = kSwiglu ? 2 : 1;
  using Stage = GemvStage<true, kMats>;
  extern __shared__ uint4 xsm[];  // [row of the pass][chunk][4]
  __shared__ float partial[C::kWarps][kMats][C::kRows][C::kCols];
  const int2 tile = tiles[blockIdx.y];
  if (static_cast<int>(blockIdx.y) >= *ntiles) return;
  const int e = tile.x;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int K = wa.cols, N = wa.rows, n0 = blockIdx.x * C::kRows;
  const int steps = (K + C::kStep - 1) / C::kStep, chunks = K / C::kChunk;
  const GemvRows rows = gemv_rows(wa, wb, e, n0 + g);
  auto column = [&](int s) { return (s * C::kLanesK + t) * C::kChunk; };
  Stage st[Stage::kDepth];
  auto load_first_steps = [&] {
#pragma unroll
    for (int u = 0; u < Stage::kDepth; ++u) {
      const int s = warp + u * C::kWarps;
      gemv_load(st[u], rows, column(s), s < steps && column(s) < K);
    }
  };
  load_first_steps();
  const int pass = min(C::kCols, xrows);
  const int r_begin = offsets[e], r_end = offsets[e + 1];
  for (int r0 = r_begin; r0 < r_end; r0 += pass) {
    const int nr = min(pass, r_end - r0);
    for (int i = threadIdx.x; i < nr * chunks; i += blockDim.x) {
      const int q = i / chunks, c = i % chunks;
      const bf16* xrow;
      const float* xrow_f32;
      gemv_x_row<kSwiglu>(x, x_f32, k, perm, K, r0 + q, true, xrow, xrow_f32);
      uint4 xv[4];
      gemv_load_x(xv, xrow, xrow_f32, c * C::kChunk);
      uint32_t xb[C::kWords];
#pragma unroll
      for (int j = 0; j < 4; ++j) mma_order4(xv, j, xb + 4 * j);
#pragma unroll
      for (int j = 0; j < 4; ++j) xsm[i * 4 + j] = make_uint4(xb[4 * j], xb[4 * j + 1], xb[4 * j + 2], xb[4 * j + 3]);
    }
    __syncthreads();
    float acc[kMats][4] = {};
    for (int s0 = warp; s0 < steps; s0 += Stage::kDepth * C::kWarps) {
#pragma unroll
      for (int u = 0; u < Stage::kDepth; ++u) {
        const int s = s0 + u * C::kWarps;
        if (s >= steps) break;
        uint32_t xb[C::kWords] = {};
        if (g < nr) {
          const uint4* src = xsm + (g * chunks + s * C::kLanesK + t) * 4;
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const uint4 v = src[j];
            xb[4 * j] = v.x, xb[4 * j + 1] = v.y, xb[4 * j + 2] = v.z, xb[4 * j + 3] = v.w;
          }
        }
        gemv_mma(st[u], xb, acc);
        const int next = s + Stage::kDepth * C::kWarps;
        gemv_load(st[u], rows, column(next), next < steps && column(next) < K);
      }
    }
    if (r0 + pass < r_end) load_first_steps();
    gemv_epilogue<kSwiglu, C::kWarps>(partial, acc, n0, N, r0, nr, limit, weight, perm, h_out, y_out);  // ends in a barrier
  }
}
}  // namespace
}  // namespace dsv4::cuda

using namespace dsv4::cuda;

#define CK(x)                                                                \
  do {                                                                       \
    cudaError_t e_ = (x);                                                    \
    if (e_ != cudaSuccess) {                                                 \
      std::printf("%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); \
      std::exit(1);                                                          \
    }                                                                        \
  } while (0)

namespace es {  // named: an anonymous one would clash with the included file's under `using`

__device__ __forceinline__ uint4 ld_stream(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// Up to 16 regions read as one stream: block b takes 16-byte vectors b·T + i, then + grid·T, kDepth
// vectors in flight per thread.
struct Regions {
  const uint8_t* p[16];
  int64_t vecs[16];  // 16-byte vectors
  int64_t first[17];
  int n;
};
template <int kDepth>
__global__ void __launch_bounds__(256) read_regions(Regions r, uint32_t* sink) {
  uint32_t acc = 0;
  const int64_t total = r.first[r.n];
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i0 = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i0 < total; i0 += kDepth * stride) {
    uint4 v[kDepth];
#pragma unroll
    for (int u = 0; u < kDepth; ++u) {
      const int64_t i = i0 + u * stride;
      v[u] = make_uint4(0, 0, 0, 0);
      if (i < total) {
        int j = 0;
        while (i >= r.first[j + 1]) ++j;
        v[u] = ld_stream(r.p[j] + 16 * (i - r.first[j]));
      }
    }
#pragma unroll
    for (int u = 0; u < kDepth; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  if (acc == 0x9e3779b9u) sink[0] = acc;
}

// The expert kernel's loads without its arithmetic: block (x, tile) = 16 rows of expert tiles[tile]
// for kMats matrices; warp w of kWarps takes steps w, w + kWarps, ...; lane (g, t) loads 16 bytes of
// rows g and g + 8 at byte (4s + t)·16 and the scale byte, kDepth steps ahead.
template <int kMats, int kWarps, int kDepth>
__global__ void __launch_bounds__(kWarps * 32) pattern_kernel(const uint8_t* c0, const uint8_t* c1, const uint8_t* s0,
                                                             const uint8_t* s1, int rows, int K, const int* experts,
                                                             uint32_t* sink) {
  const int e = experts[blockIdx.y];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int n0 = blockIdx.x * 16;
  const int steps = K / 128;
  const int64_t rb = K / 2, sb = K / 32;
  const uint8_t* code[kMats][2];
  const uint8_t* sc[kMats][2];
  for (int m = 0; m < kMats; ++m)
    for (int r = 0; r < 2; ++r) {
      const int64_t row = static_cast<int64_t>(e) * rows + n0 + g + 8 * r;
      code[m][r] = (m ? c1 : c0) + row * rb;
      sc[m][r] = (m ? s1 : s0) + row * sb;
    }
  uint32_t acc = 0;
  uint4 st[kDepth][kMats][2];
  uint32_t ss[kDepth][kMats][2];
  auto load = [&](int u, int s) {
    for (int m = 0; m < kMats; ++m)
      for (int r = 0; r < 2; ++r) {
        st[u][m][r] = make_uint4(0, 0, 0, 0);
        ss[u][m][r] = 0;
        if (s < steps) {
          st[u][m][r] = ld_stream(code[m][r] + (4 * s + t) * 16);
          ss[u][m][r] = __ldg(sc[m][r] + 4 * s + t);
        }
      }
  };
#pragma unroll
  for (int u = 0; u < kDepth; ++u) load(u, warp + u * kWarps);
  for (int s0 = warp; s0 < steps; s0 += kDepth * kWarps) {
#pragma unroll
    for (int u = 0; u < kDepth; ++u) {
#pragma unroll
      for (int m = 0; m < kMats; ++m)
#pragma unroll
        for (int r = 0; r < 2; ++r) acc ^= st[u][m][r].x ^ st[u][m][r].y ^ st[u][m][r].z ^ st[u][m][r].w ^ ss[u][m][r];
      load(u, s0 + (u + kDepth) * kWarps);
    }
  }
  if (acc == 0x9e3779b9u) sink[0] = acc;
}

__global__ void fill_random(uint8_t* p, int64_t n, uint32_t seed, uint32_t mask, uint32_t add) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 15, h *= 2246822519u, h ^= h >> 13;
    p[i] = static_cast<uint8_t>((h & mask) + add);
  }
}

__global__ void flush_kernel(uint4* p, int64_t n, uint32_t v) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    p[i] = make_uint4(v, v, v, v);
}

struct Timer {
  cudaStream_t s;
  uint4* flush;
  int64_t flush_vecs;
  // Median microseconds of `trials` runs of setup(trial) (untimed), a flush, then run() (timed).
  double median(int trials, const std::function<void(int)>& setup, const std::function<void()>& run) {
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    std::vector<float> t;
    for (int i = 0; i < trials + 2; ++i) {
      setup(i);
      flush_kernel<<<528, 256, 0, s>>>(flush, flush_vecs, i);
      CK(cudaEventRecord(a, s));
      run();
      CK(cudaEventRecord(b, s));
      CK(cudaEventSynchronize(b));
      float ms = 0;
      CK(cudaEventElapsedTime(&ms, a, b));
      if (i >= 2) t.push_back(ms * 1000);
    }
    CK(cudaGetLastError());
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }
};

template <typename T>
T* dalloc(size_t n) {
  T* p = nullptr;
  CK(cudaMalloc(&p, n * sizeof(T)));
  return p;
}

}  // namespace es

using namespace es;

int main(int argc, char** argv) {
  const bool profile = argc > 1 && std::string(argv[1]) == "ncu";  // each kernel once, for ncu
  const bool fp8_only = argc > 1 && std::string(argv[1]) == "fp8";  // only the FP8 products
  const bool reg_only = argc > 1 && std::string(argv[1]) == "reg";  // only the register kernel
  constexpr int E = 64, k = 6, D = 4096, F = 2048, trials = 30;
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  Timer tm{s, nullptr, (256ll << 20) / 16};
  tm.flush = dalloc<uint4>(tm.flush_vecs);

  // Expert weights, FP4: W1, W3 [E, F, D/2] codes + [E, F, D/32] scales; W2 [E, D, F/2] + [E, D, F/32].
  const size_t c13 = size_t(E) * F * D / 2, s13 = size_t(E) * F * D / 32, c2 = size_t(E) * D * F / 2, s2 = size_t(E) * D * F / 32;
  uint8_t *w1c = dalloc<uint8_t>(c13), *w3c = dalloc<uint8_t>(c13), *w1s = dalloc<uint8_t>(s13), *w3s = dalloc<uint8_t>(s13);
  uint8_t *w2c = dalloc<uint8_t>(c2), *w2s = dalloc<uint8_t>(s2);
  fill_random<<<1024, 256>>>(w1c, c13, 1, 0xff, 0);
  fill_random<<<1024, 256>>>(w3c, c13, 2, 0xff, 0);
  fill_random<<<1024, 256>>>(w2c, c2, 3, 0xff, 0);
  fill_random<<<1024, 256>>>(w1s, s13, 4, 3, 118);
  fill_random<<<1024, 256>>>(w3s, s13, 5, 3, 118);
  fill_random<<<1024, 256>>>(w2s, s2, 6, 3, 118);
  ExpertMatrix W1{w1c, w1s, nullptr, F, D}, W3{w3c, w3s, nullptr, F, D}, W2{w2c, w2s, nullptr, D, F};
  bf16* x = dalloc<bf16>(size_t(k) * D);
  bf16* h = dalloc<bf16>(size_t(k) * F);
  float* y = dalloc<float>(size_t(k) * D);
  fill_random<<<64, 256>>>(reinterpret_cast<uint8_t*>(x), size_t(k) * D * 2, 7, 0x3f, 0x10);  // bf16s near 2^-?
  CK(cudaMemset(h, 0, size_t(k) * F * 2));
  float* xf = dalloc<float>(D);  // the token row for the gather form (perm / k = token 0)
  {
    std::mt19937 g(11);
    std::uniform_real_distribution<float> u(-2.0f, 2.0f);
    std::vector<float> v(D);
    for (float& f : v) f = u(g);
    CK(cudaMemcpy(xf, v.data(), D * 4, cudaMemcpyHostToDevice));
  }
  float* weight = dalloc<float>(k);
  CK(cudaMemset(weight, 0, k * 4));
  int32_t *offsets = dalloc<int32_t>(E + 1), *perm = dalloc<int32_t>(k), *ntiles = dalloc<int32_t>(1);
  int2* tiles = dalloc<int2>(k);
  int* experts = dalloc<int>(k);
  uint32_t* sink = dalloc<uint32_t>(1);

  // Trial i routes the one token to 6 distinct experts drawn afresh.
  std::mt19937 rng(7);
  std::vector<std::vector<int>> picks;
  for (int i = 0; i < trials + 2; ++i) {
    std::vector<int> all(E);
    for (int e = 0; e < E; ++e) all[e] = e;
    std::shuffle(all.begin(), all.end(), rng);
    all.resize(k);
    std::sort(all.begin(), all.end());
    picks.push_back(all);
  }
  auto setup_experts = [&](int i) {
    const std::vector<int>& ex = picks[i];
    std::vector<int32_t> off(E + 1), pm(k);
    std::vector<int2> tl(k);
    int o = 0, n = 0;
    for (int e = 0; e < E; ++e) {
      off[e] = o;
      if (n < k && ex[n] == e) tl[n] = make_int2(e, o), pm[n] = n, ++o, ++n;
    }
    off[E] = o;
    CK(cudaMemcpyAsync(offsets, off.data(), off.size() * 4, cudaMemcpyHostToDevice, s));
    CK(cudaMemcpyAsync(perm, pm.data(), k * 4, cudaMemcpyHostToDevice, s));
    CK(cudaMemcpyAsync(tiles, tl.data(), k * sizeof(int2), cudaMemcpyHostToDevice, s));
    CK(cudaMemcpyAsync(ntiles, &k, 4, cudaMemcpyHostToDevice, s));
    CK(cudaMemcpyAsync(experts, ex.data(), k * 4, cudaMemcpyHostToDevice, s));
  };
  // The bytes the two expert kernels read in trial i, as regions.
  Regions r13{}, r2{};
  auto regions_of = [&](int i, bool down) {
    Regions r{};
    int64_t first = 0;
    auto add = [&](const uint8_t* p, int64_t bytes) {
      r.p[r.n] = p, r.vecs[r.n] = bytes / 16, r.first[r.n] = first;
      first += bytes / 16;
      r.first[++r.n] = first;
    };
    for (int e : picks[i]) {
      if (!down) {
        add(w1c + size_t(e) * F * D / 2, int64_t(F) * D / 2);
        add(w3c + size_t(e) * F * D / 2, int64_t(F) * D / 2);
      } else {
        add(w2c + size_t(e) * D * F / 2, int64_t(D) * F / 2);
      }
    }
    return r;
  };
  const double mb13 = 2.0 * k * F * D * (0.5 + 1.0 / 32) / 1e6, mb2 = 1.0 * k * D * F * (0.5 + 1.0 / 32) / 1e6;
  auto row = [](const char* name, double mb, double us) { std::printf("| %s | %.1f | %.2f | %.0f |\n", name, mb, us, mb * 1e3 / us); };

  // The register kernel and the shared-memory kernel at 4 and 8 warps; h and y of each against the
  // register kernel's (the same bits expected at 4 warps).
  bf16* h_ref = dalloc<bf16>(size_t(k) * F);
  float* y_ref = dalloc<float>(size_t(k) * D);
  auto same_bits = [&](const void* a, const void* b, size_t bytes) {
    std::vector<uint8_t> ha(bytes), hb(bytes);
    CK(cudaMemcpy(ha.data(), a, bytes, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(hb.data(), b, bytes, cudaMemcpyDeviceToHost));
    size_t diff = 0;
    for (size_t i = 0; i < bytes; ++i) diff += ha[i] != hb[i];
    return diff;
  };
  using C = GemvConfig;
  const dim3 g13(F / C::kRows, k), g2(D / C::kRows, k);
  auto reg13 = [&](bf16* out) {
    moe_gemv_kernel<true, true><<<g13, C::kWarps * 32, 0, s>>>(x, nullptr, 1, W1, W3, tiles, ntiles, offsets, 0.0f, weight, perm, out, nullptr);
  };
  auto reg2 = [&](float* out) {
    moe_gemv_kernel<false, true><<<g2, C::kWarps * 32, 0, s>>>(h_ref, nullptr, 1, W2, W2, tiles, ntiles, offsets, 0.0f, nullptr, nullptr, nullptr, out);
  };
  auto smem13 = [&](auto kernel, int warps, int slices, bf16* out) {
    const size_t b = SmemTile(D, slices).bytes(2);
    CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(b)));
    kernel<<<g13, warps * 32, b, s>>>(x, nullptr, 1, W1, W3, tiles, ntiles, offsets, 0.0f, weight, perm, out, nullptr);
  };
  auto smem2 = [&](auto kernel, int warps, int slices, float* out) {
    const size_t b = SmemTile(F, slices).bytes(1);
    CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(b)));
    kernel<<<g2, warps * 32, b, s>>>(h_ref, nullptr, 1, W2, W2, tiles, ntiles, offsets, 0.0f, nullptr, nullptr, nullptr, out);
  };
  setup_experts(0);
  CK(cudaMemcpy(weight, std::vector<float>(k, 0.75f).data(), k * 4, cudaMemcpyHostToDevice));
  reg13(h_ref), reg2(y_ref);
  auto bits = [&](const char* what) {
    CK(cudaDeviceSynchronize());
    std::printf("%s: h differs in %zu of %zu bytes, y in %zu of %zu\n", what, same_bits(h, h_ref, size_t(k) * F * 2),
                size_t(k) * F * 2, same_bits(y, y_ref, size_t(k) * D * 4), size_t(k) * D * 4);
    CK(cudaMemset(h, 0, size_t(k) * F * 2));
    CK(cudaMemset(y, 0, size_t(k) * D * 4));
  };
#define VARIANT(W, S, B) \
  smem13(moe_gemv_smem_kernel<true, W, S, B>, W, S, h), smem2(moe_gemv_smem_kernel<false, W, S, B>, W, S, y), bits("smem " #W " warps, " #S " slices, bulk " #B)
  auto ring13 = [&](auto kernel, int stages, bf16* out) {
    const size_t b = stages * 2 * 2 * 32 * 20 * 4;
    CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(b)));
    kernel<<<g13, 128, b, s>>>(x, nullptr, 1, W1, W3, tiles, ntiles, offsets, 0.0f, weight, perm, out, nullptr);
  };
  auto ring2 = [&](auto kernel, int stages, float* out) {
    const size_t b = stages * 1 * 2 * 32 * 20 * 4;
    CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(b)));
    kernel<<<g2, 128, b, s>>>(h_ref, nullptr, 1, W2, W2, tiles, ntiles, offsets, 0.0f, nullptr, nullptr, nullptr, out);
  };
  if (profile) {  // cold weights for each: another trial's experts
    for (int i = 1; i <= 4; ++i) {
      setup_experts(i);
      if (i == 1) reg13(h), reg2(y);
      if (i == 2) ring13(moe_gemv_ring_kernel<true, 4>, 4, h), ring2(moe_gemv_ring_kernel<false, 4>, 4, y);
      if (i == 3) pattern_kernel<2, 4, 2><<<dim3(F / 16, k), 128, 0, s>>>(w1c, w3c, w1s, w3s, F, D, experts, sink);
      CK(cudaStreamSynchronize(s));
    }
    return 0;
  }
  // The staged-activation kernel (passes of xrows rows): bf16 rows, the float32 token row, W2.
  auto xs13 = [&](const bf16* xb, const float* xf32, int xrows, bf16* out) {
    const size_t b = size_t(xrows) * D * 2;
    CK(cudaFuncSetAttribute(moe_gemv_xs_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(b)));
    moe_gemv_xs_kernel<true><<<g13, C::kWarps * 32, b, s>>>(xb, xf32, 6, W1, W3, tiles, ntiles, offsets, 0.0f, weight, perm, out, nullptr, xrows);
  };
  auto xs2 = [&](int xrows, float* out) {
    const size_t b = size_t(xrows) * F * 2;
    CK(cudaFuncSetAttribute(moe_gemv_xs_kernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(b)));
    moe_gemv_xs_kernel<false><<<g2, C::kWarps * 32, b, s>>>(h_ref, nullptr, 1, W2, W2, tiles, ntiles, offsets, 0.0f, nullptr, nullptr, nullptr, out, xrows);
  };
  xs13(x, nullptr, 1, h), xs2(1, y), bits("staged activations, passes of 1 row");
  xs13(x, nullptr, 8, h), xs2(8, y), bits("staged activations, passes of 8 rows");
  {  // the float32 token-row form against the register kernel's
    moe_gemv_kernel<true, true><<<g13, C::kWarps * 32, 0, s>>>(nullptr, xf, 6, W1, W3, tiles, ntiles, offsets, 0.0f, weight, perm, h_ref, nullptr);
    xs13(nullptr, xf, 1, h);
    CK(cudaDeviceSynchronize());
    std::printf("staged activations, float32 token row: h differs in %zu of %zu bytes\n", same_bits(h, h_ref, size_t(k) * F * 2), size_t(k) * F * 2);
    reg13(h_ref);  // back to the bf16 reference for the checks below
  }
  if (reg_only) {
    std::printf("| case | MB | us | GB/s |\n|---|---|---|---|\n");
    for (int round = 0; round < 3; ++round) {
      row("experts w1/w3, register kernel", mb13, tm.median(trials, setup_experts, [&] { reg13(h); }));
      row("experts w1/w3, staged activations", mb13, tm.median(trials, setup_experts, [&] { xs13(x, nullptr, 1, h); }));
      row("experts w2, register kernel", mb2, tm.median(trials, setup_experts, [&] { reg2(y); }));
      row("experts w2, staged activations", mb2, tm.median(trials, setup_experts, [&] { xs2(1, y); }));
      row("experts w1/w3, register kernel, f32 x (the model's)", mb13, tm.median(trials, setup_experts, [&] {
            moe_gemv_kernel<true, true><<<g13, C::kWarps * 32, 0, s>>>(nullptr, xf, 6, W1, W3, tiles, ntiles, offsets, 0.0f, weight, perm, h, nullptr); }));
      row("experts w1/w3, staged activations, f32 x", mb13, tm.median(trials, setup_experts, [&] { xs13(nullptr, xf, 1, h); }));
    }
    return 0;
  }
  if (!fp8_only) {
  VARIANT(4, 4, true);
  VARIANT(4, 1, true);
  VARIANT(4, 4, false);
  VARIANT(4, 2, false);
  std::printf("| case | MB | us | GB/s |\n|---|---|---|---|\n");
  ring13(moe_gemv_ring_kernel<true, 3>, 3, h), ring2(moe_gemv_ring_kernel<false, 3>, 3, y), bits("ring 3 stages");
  ring13(moe_gemv_ring_kernel<true, 4>, 4, h), ring2(moe_gemv_ring_kernel<false, 4>, 4, y), bits("ring 4 stages");
#define RING(S)                                                                                                  \
  row("experts w1/w3, ring " #S " stages", mb13, tm.median(trials, setup_experts, [&] { ring13(moe_gemv_ring_kernel<true, S>, S, h); })); \
  row("experts w2, ring " #S " stages", mb2, tm.median(trials, setup_experts, [&] { ring2(moe_gemv_ring_kernel<false, S>, S, y); }))
#define TIME(W, S, B)                                                                                                            \
  row("experts w1/w3, smem " #W " warps, " #S " slices, bulk " #B, mb13,                                                         \
      tm.median(trials, setup_experts, [&] { smem13(moe_gemv_smem_kernel<true, W, S, B>, W, S, h); }));                           \
  row("experts w2, smem " #W " warps, " #S " slices, bulk " #B, mb2,                                                             \
      tm.median(trials, setup_experts, [&] { smem2(moe_gemv_smem_kernel<false, W, S, B>, W, S, y); }))
  for (int round = 0; round < 2; ++round) {
    row("experts w1/w3, register kernel", mb13, tm.median(trials, setup_experts, [&] { reg13(h); }));
    row("experts w2, register kernel", mb2, tm.median(trials, setup_experts, [&] { reg2(y); }));
    row("experts w1/w3, register kernel, f32 x (the model's)", mb13, tm.median(trials, setup_experts, [&] {
          moe_gemv_kernel<true, true><<<g13, C::kWarps * 32, 0, s>>>(nullptr, xf, 6, W1, W3, tiles, ntiles, offsets, 0.0f, weight, perm, h, nullptr); }));
    RING(4);
    row("experts w1/w3, ring 4 stages, x not prefetched", mb13, tm.median(trials, setup_experts, [&] { ring13(moe_gemv_ring_kernel<true, 4, false>, 4, h); }));
    row("experts w2, ring 4 stages, x not prefetched", mb2, tm.median(trials, setup_experts, [&] { ring2(moe_gemv_ring_kernel<false, 4, false>, 4, y); }));
  }
  auto flat = [&](const char* name, bool down, int depth, int blocks_per_sm) {
    row(name, down ? mb2 : mb13, tm.median(trials, [&](int i) { setup_experts(i), (down ? r2 : r13) = regions_of(i, down); }, [&] {
          const Regions& r = down ? r2 : r13;
          if (depth == 4) read_regions<4><<<sms * blocks_per_sm, 256, 0, s>>>(r, sink);
          else read_regions<8><<<sms * blocks_per_sm, 256, 0, s>>>(r, sink);
        }));
  };
  flat("flat read of w1/w3's codes (depth 4, 4 blocks/SM)", false, 4, 4);
  flat("flat read of w1/w3's codes (depth 8, 4 blocks/SM)", false, 8, 4);
  flat("flat read of w1/w3's codes (depth 4, 8 blocks/SM)", false, 4, 8);
  flat("flat read of w2's codes (depth 4, 4 blocks/SM)", true, 4, 4);
  flat("flat read of w2's codes (depth 8, 4 blocks/SM)", true, 8, 4);
  auto pattern = [&](const char* name, auto kernel, bool down, int warps) {
    row(name, down ? mb2 : mb13, tm.median(trials, setup_experts, [&] {
          if (!down) kernel<<<dim3(F / 16, k), warps * 32, 0, s>>>(w1c, w3c, w1s, w3s, F, D, experts, sink);
          else kernel<<<dim3(D / 16, k), warps * 32, 0, s>>>(w2c, w2c, w2s, w2s, D, F, experts, sink);
        }));
  };
  pattern("w1/w3 pattern, loads only (4 warps, depth 2: as the kernel)", pattern_kernel<2, 4, 2>, false, 4);
  pattern("w2 pattern, loads only (4 warps, depth 2: as the kernel)", pattern_kernel<1, 4, 2>, true, 4);

  }
  // FP8 few-row products at wq_b's (1024 -> 32768) and wo_b's (8192 -> 4096) shapes, 8 weight copies
  // in rotation.
  for (auto [N, K, name] : {std::tuple<int64_t, int64_t, const char*>{32768, 1024, "fp8 gemv wq_b 1024->32768, M=1"},
                            std::tuple<int64_t, int64_t, const char*>{4096, 8192, "fp8 gemv wo_b 8192->4096, M=1"},
                            std::tuple<int64_t, int64_t, const char*>{8192, 4096, "fp8 gemv 4096->8192, M=1"}}) {
    constexpr int copies = 8;
    const size_t wb = size_t(N) * K;
    uint8_t* w = dalloc<uint8_t>(wb * copies);
    CK(cudaMemset(w, 0x38, wb * copies));
    float* ws = dalloc<float>(size_t(N / 128) * (K / 128));
    uint8_t* xq = dalloc<uint8_t>(K);
    float* xs = dalloc<float>(K / 128);
    float* yo = dalloc<float>(N);
    CK(cudaMemset(ws, 0, size_t(N / 128) * (K / 128) * 4));
    CK(cudaMemset(xq, 0x38, K));
    CK(cudaMemset(xs, 0, K / 128 * 4));
    GemvArgs a;
    a.weights = GemvWeights::FP8Block;
    a.M = 1, a.N = N, a.K = K, a.ldw = K, a.w_scale = ws, a.ldw_scale = K / 128, a.xq = xq, a.xs = xs, a.ldxq = K,
    a.ldxs = 1, a.y = yo, a.ldy = N;
    int cur = 0;
    row(name, wb / 1e6, tm.median(trials, [&](int i) { cur = i % copies; }, [&] {
          a.w_fp8 = w + wb * cur;
          gemv_cuda(a, s);
        }));
    Regions r{};
    r.n = 1, r.first[0] = 0;
    row("  flat read of the same bytes (depth 4, 4 blocks/SM)", wb / 1e6, tm.median(trials, [&](int i) { cur = i % copies; }, [&] {
          r.p[0] = w + wb * cur, r.vecs[0] = wb / 16, r.first[1] = wb / 16;
          read_regions<4><<<sms * 4, 256, 0, s>>>(r, sink);
        }));
    CK(cudaFree(w));
  }
  // The ceiling for a long stream: 1 GiB.
  {
    const int64_t bytes = 1ll << 30;
    uint8_t* big = dalloc<uint8_t>(bytes);
    CK(cudaMemset(big, 1, bytes));
    Regions r{};
    r.n = 1, r.p[0] = big, r.vecs[0] = bytes / 16, r.first[0] = 0, r.first[1] = bytes / 16;
    row("flat read, 1 GiB (depth 4, 4 blocks/SM)", bytes / 1e6, tm.median(5, [](int) {}, [&] {
          read_regions<4><<<sms * 4, 256, 0, s>>>(r, sink);
        }));
  }
  CK(cudaDeviceSynchronize());
  return 0;
}
