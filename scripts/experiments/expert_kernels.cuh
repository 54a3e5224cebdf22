// The expert-product kernels that scripts/experiments/expert_stream.cu times against dsv4's
// moe_gemv_kernel (src/ops/moe_experts.cu, which the including file includes first): not part of
// dsv4. See expert_stream.cu for what each measured.
#pragma once

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

}  // namespace
}  // namespace dsv4::cuda
