// CUDA expert products for few rows per expert on the FP8 tensor cores (contract in cuda_ops.h,
// moe_gemv_fp8_*): the decode step's routed experts with FP4 weights, computed as the official
// FP8 inference computes them: the expert inputs rounded to e4m3 in 1×128 blocks with
// power-of-two scales, FP4 weights times e4m3 inputs, float32 sums.
//
// Why not the bf16 kernel of moe_experts.cu: a decode step reads each expert weight once, so the
// kernel has to keep up with HBM, and the bf16 kernel spends ~2.5 instructions per FP4 weight
// (three to decode a pair into bf16, a bf16 multiply by the scale, the input permutes): with the
// memory traffic it streams at 1.4–1.8 TB/s. An FP4 code becomes an e4m3 code by moving bits:
//   nibble (s e1 e0 m) -> byte (s 0 0 e1 e0 m 0 0): e4m3 with exponent field e and mantissa m00,
//   whose value is exactly e2m1 · 2^-6 (e = 0 lands on e4m3 subnormals: m · 2^-7 = m/2 · 2^-6),
// four codes a 32-bit word in five to seven instructions, and mma.m16n8k32 takes 512 weights of
// a warp in one instruction; the block scale (E8M0) multiplies the float32 sum of each 32-column
// block, the input's scale and 2^6 that of each 128-column step.
//
//   - a block owns 16 output rows of one expert (the mma's M) for its activation rows, 8 a pass
//     (the N); its 4 warps split K in steps of 128 columns (four FP4 scale blocks, one input scale
//     block) and add their partial sums in shared memory in warp order (deterministic);
//   - each warp streams its steps through its own ring of kDepth stages in shared memory by
//     cp.async (no block barrier in the loop): per step the 16 rows' 64 code bytes per matrix,
//     their four scale bytes, and the step's 128 input codes and scale of each activation row.
//     a block learns its expert from the routing, so its first requests follow the PDL wait;
//   - ldmatrix gives lane (g, t) word t of each 16-byte scale block of rows g and g + 8: codes
//     8t .. 8t + 7 of the block. Its even codes become the A register of k-slots 4t .. 4t + 3
//     and its odd codes that of k-slots 16 + 4t ..; the input's bytes 8t .. 8t + 7 of the block
//     are split the same way (two byte permutes), so A and B agree on the K order;
//   - swiglu: W1 and W3 rows of the same features in one block (g and u meet in the epilogue);
//     the output h is rounded to bf16 (the routing weight applied), and the last block of each
//     128-feature group (a counter per group, returned to zero) rounds that group of h to e4m3
//     for the down projection, as quantize_fp8_1x128_cuda would.
#include <algorithm>

#include "ops/cuda_device.cuh"
#include "ops/moe_experts.cuh"

namespace dsv4::cuda {

namespace {

using namespace expert;

struct Fp8Gemv {
  static constexpr int kWarps = 4;     // K slices of a block
  static constexpr int kRows = 16;     // output rows of a block: M of mma.m16n8k32
  static constexpr int kCols = 8;      // activation rows per pass: N of the mma
  static constexpr int kStep = 128;    // columns of a warp step
  // Steps of a warp in flight: with 8 activation rows a stage is 4.5 KB (swiglu) or 2.9 KB, and
  // three swiglu blocks (four down blocks) per SM keep 72 KB of weights in flight.
  __host__ __device__ static constexpr int depth(bool swiglu) { return swiglu ? 3 : 4; }
  static constexpr int kRowBytes = 80;  // a row's 64 code bytes of a step + 16: ldmatrix rows on distinct banks
  static constexpr int kXBytes = 160;   // an activation row's 128 codes + 32: conflict-free 8-byte reads
};

// One step of one warp in shared memory (kMats matrices).
template <int kMats>
struct Fp8Stage {
  uint8_t codes[kMats][Fp8Gemv::kRows][Fp8Gemv::kRowBytes];
  uint8_t x[Fp8Gemv::kCols][Fp8Gemv::kXBytes];
  uint32_t wscale_raw[kMats][Fp8Gemv::kRows];  // the E8M0 bytes of the step's four blocks
  float4 wscale[kMats][Fp8Gemv::kRows];       // the same as floats
  float xscale[Fp8Gemv::kCols];
};

// The activation rows: codes q [tokens, K], scales s [K/128][ld_s]; row r of an expert's rows is
// token perm[r] / k (perm given) or token r.
struct Fp8Rows {
  const uint8_t* q;
  const float* s;
  int64_t ld_s;
  const int32_t* perm;
  int k;
};

// c[16×8] = a[16×32] · b[32×8], e4m3 → float32.
__device__ __forceinline__ void mma_e4m3(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                         uint32_t b1) {
  asm("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%10,%10,%10};"
      : "=f"(c[0]), "=f"(c[1]), "=f"(c[2]), "=f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "f"(0.0f));
}

// The even (low) and odd (high) nibbles of each byte of w as e4m3 codes of value e2m1 · 2^-6.
__device__ __forceinline__ uint32_t e2m1_even_e4m3(uint32_t w) {
  return ((w << 2) & 0x1c1c1c1cu) | ((w << 4) & 0x80808080u);
}
__device__ __forceinline__ uint32_t e2m1_odd_e4m3(uint32_t w) {
  return ((w >> 2) & 0x1c1c1c1cu) | (w & 0x80808080u);
}
// Byte j of an E8M0 word as the float 2^(b − 127) (b = 0: the subnormal 2^-127).
template <int j>
__device__ __forceinline__ float e8m0_byte(uint32_t raw) {
  const uint32_t bits = (j < 3 ? raw << (23 - 8 * j) : raw >> 1) & 0x7f800000u;
  return __uint_as_float(max(bits, 0x00400000u));
}

// Block (16-row slice blockIdx.x, tile blockIdx.y). Swiglu: W1 = wa, W3 = wb, h [n, N] bf16, and
// the e4m3 form of h (hq [n, N], scales hqs [N/128][n]) by the last block of each 128-row group;
// down: y [n, N] float32.
template <bool kSwiglu>
__global__ void __launch_bounds__(Fp8Gemv::kWarps * 32, kSwiglu ? 3 : 4)
moe_gemv_fp8_kernel(Fp8Rows x, ExpertMatrix wa, ExpertMatrix wb, const int2* tiles, const int32_t* ntiles,
                    const int32_t* offsets, float limit, const float* weight, const int32_t* perm, int64_t n_rows,
                    bf16* h_out, uint8_t* hq, float* hqs, int32_t* counters, float* y_out) {
  using C = Fp8Gemv;
  constexpr int kMats = kSwiglu ? 2 : 1;
  constexpr int kDepth = C::depth(kSwiglu);
  using Stage = Fp8Stage<kMats>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  Stage* ring = reinterpret_cast<Stage*>(smem_raw) + warp * kDepth;
  __shared__ float partial[C::kWarps][kMats][C::kRows][C::kCols];
  __shared__ int last_block;

  dev::pdl_begin();  // (which expert a block streams is known only after the routing)
  const int2 tile = tiles[blockIdx.y];  // in bounds for every block: read alongside the count
  if (static_cast<int>(blockIdx.y) >= *ntiles) return;
  const int e = tile.x;
  const int K = wa.cols, N = wa.rows, n0 = blockIdx.x * C::kRows;
  const int steps = K / C::kStep;

  // This lane's pieces of a step's weights: 16-byte piece q = lane % 4 of rows lane / 4 and
  // lane / 4 + 8 of each matrix; its scale word: matrix lane / 16, row lane % 16.
  const uint8_t* wrow[kMats][2];
#pragma unroll
  for (int m = 0; m < kMats; ++m)
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const ExpertMatrix& w = m == 0 ? wa : wb;
      const int n = n0 + g + 8 * i;
      wrow[m][i] = n < N ? w.codes + (static_cast<int64_t>(e) * N + n) * (K / 2) + 16 * t : nullptr;
    }
  const int sm = lane >> 4, sr = lane & 15;
  const uint8_t* sbase = sm == 0 ? wa.scales : wb.scales;
  const uint8_t* srow = sm < kMats && n0 + sr < N ? sbase + (static_cast<int64_t>(e) * N + n0 + sr) * (K / 32) : nullptr;
  auto issue_weights = [&](Stage& st, int s) {
    if (s < steps) {
#pragma unroll
      for (int m = 0; m < kMats; ++m)
#pragma unroll
        for (int i = 0; i < 2; ++i)
          ptx::cp_async<16>(&st.codes[m][g + 8 * i][16 * t], wrow[m][i] ? wrow[m][i] + 64 * s : wa.codes, wrow[m][i] != nullptr);
      if (sm < kMats) ptx::cp_async<4>(&st.wscale_raw[sm][sr], srow ? srow + 4 * s : wa.scales, srow != nullptr);
    }
  };
  auto first_weights = [&] {
#pragma unroll
    for (int u = 0; u < kDepth; ++u) {
      issue_weights(ring[u], warp + u * C::kWarps);
      ptx::cp_async_commit();
    }
  };
  first_weights();  // ahead of the row range
  const int r_begin = offsets[e], r_end = offsets[e + 1];

  for (int r0 = r_begin; r0 < r_end; r0 += C::kCols) {
    const int nr = min(C::kCols, r_end - r0);
    // This lane's pieces of a step's inputs: 16 bytes (piece lane % 8) of rows lane / 8 and
    // lane / 8 + 4; the scale of row lane (lanes 0..7).
    const uint8_t* xrow[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int c = (lane >> 3) + 4 * i;
      const int64_t token = c < nr ? (x.perm ? x.perm[r0 + c] / x.k : r0 + c) : -1;
      xrow[i] = token >= 0 ? x.q + token * K + 16 * (lane & 7) : nullptr;
    }
    const float* xsc = nullptr;
    if (lane < nr) xsc = x.s + (x.perm ? x.perm[r0 + lane] / x.k : r0 + lane);
    auto issue_inputs = [&](Stage& st, int s) {
      if (s < steps) {
#pragma unroll
        for (int i = 0; i < 2; ++i)
          ptx::cp_async<16>(&st.x[(lane >> 3) + 4 * i][16 * (lane & 7)], xrow[i] ? xrow[i] + C::kStep * s : x.q,
                            xrow[i] != nullptr);
        if (lane < C::kCols) ptx::cp_async<4>(&st.xscale[lane], xsc ? xsc + s * x.ld_s : x.s, xsc != nullptr);
      }
    };
#pragma unroll
    for (int u = 0; u < kDepth; ++u) {
      issue_inputs(ring[u], warp + u * C::kWarps);
      ptx::cp_async_commit();
    }

    float acc[kMats][4] = {};
    // Step s = warp + i · kWarps sits in stage i % kDepth; its group is complete once only the
    // kDepth − 1 groups committed after it are pending (one group is committed per step, empty
    // or not, so the count holds to the end).
    for (int i = 0, s = warp; s < steps; ++i, s += C::kWarps) {
      Stage& st = ring[i % kDepth];
      ptx::cp_async_wait<kDepth - 1>();
      __syncwarp();
      if (sm < kMats) {
        const uint32_t raw = st.wscale_raw[sm][sr];
        st.wscale[sm][sr] = make_float4(e8m0_byte<0>(raw), e8m0_byte<1>(raw), e8m0_byte<2>(raw), e8m0_byte<3>(raw));
      }
      // The inputs of activation row g: bytes 8t .. 8t + 7 of each block, even and odd.
      uint32_t xe[4], xo[4];
#pragma unroll
      for (int b = 0; b < 4; ++b) {
        const uint2 v = *reinterpret_cast<const uint2*>(&st.x[g][32 * b + 8 * t]);
        xe[b] = ptx::prmt(v.x, v.y, 0x6420);
        xo[b] = ptx::prmt(v.x, v.y, 0x7531);
      }
      __syncwarp();
      const float xs0 = st.xscale[2 * t] * 64.0f, xs1 = st.xscale[2 * t + 1] * 64.0f;
#pragma unroll
      for (int m = 0; m < kMats; ++m) {
        // Words of rows g, g + 8 for blocks 0..3: lanes 8j .. 8j + 7 address matrix j of each x4.
        uint32_t w[2][4];
        const int lr = (lane & 7) + 8 * ((lane >> 3) & 1), lb = lane >> 4;
#pragma unroll
        for (int hlf = 0; hlf < 2; ++hlf) ptx::ldmatrix_x4(w[hlf], &st.codes[m][lr][16 * (lb + 2 * hlf)]);
        const float4 sa = st.wscale[m][g], sb = st.wscale[m][g + 8];
        const float fa[4] = {sa.x, sa.y, sa.z, sa.w}, fb[4] = {sb.x, sb.y, sb.z, sb.w};
        float grp[4] = {};
#pragma unroll
        for (int b = 0; b < 4; ++b) {
          const uint32_t wg = w[b >> 1][2 * (b & 1)], wg8 = w[b >> 1][2 * (b & 1) + 1];
          float d[4];
          mma_e4m3(d, e2m1_even_e4m3(wg), e2m1_even_e4m3(wg8), e2m1_odd_e4m3(wg), e2m1_odd_e4m3(wg8), xe[b], xo[b]);
          grp[0] = fmaf(d[0], fa[b], grp[0]);
          grp[1] = fmaf(d[1], fa[b], grp[1]);
          grp[2] = fmaf(d[2], fb[b], grp[2]);
          grp[3] = fmaf(d[3], fb[b], grp[3]);
        }
        acc[m][0] = fmaf(grp[0], xs0, acc[m][0]);
        acc[m][1] = fmaf(grp[1], xs1, acc[m][1]);
        acc[m][2] = fmaf(grp[2], xs0, acc[m][2]);
        acc[m][3] = fmaf(grp[3], xs1, acc[m][3]);
      }
      __syncwarp();  // the stage is read: refill it
      issue_weights(st, s + kDepth * C::kWarps);
      issue_inputs(st, s + kDepth * C::kWarps);
      ptx::cp_async_commit();
    }
    ptx::cp_async_wait<0>();
    __syncwarp();
    if (r0 + C::kCols < r_end) first_weights();  // the next pass's, under this epilogue
    // acc[m] = D[g][2t], D[g][2t + 1], D[g + 8][2t], D[g + 8][2t + 1] (output row, activation row).
#pragma unroll
    for (int m = 0; m < kMats; ++m) {
      partial[warp][m][g][2 * t] = acc[m][0];
      partial[warp][m][g][2 * t + 1] = acc[m][1];
      partial[warp][m][g + 8][2 * t] = acc[m][2];
      partial[warp][m][g + 8][2 * t + 1] = acc[m][3];
    }
    __syncthreads();
    if (threadIdx.x < C::kRows * C::kCols) {
      const int row = threadIdx.x % C::kRows, col = threadIdx.x / C::kRows, n = n0 + row;
      if (n < N && col < nr) {
        float a = 0.0f, b = 0.0f;
        for (int w = 0; w < C::kWarps; ++w) {
          a += partial[w][0][row][col];
          if (kSwiglu) b += partial[w][kMats - 1][row][col];
        }
        const int64_t r = r0 + col;
        if (kSwiglu) h_out[r * N + n] = __float2bfloat16_rn(swiglu_value(a, b, limit) * weight[perm[r]]);
        else y_out[r * N + n] = a;
      }
    }
    __syncthreads();
  }
  ptx::cp_async_wait<0>();  // (a block without rows)
  if constexpr (kSwiglu) {
    // The last of the group's blocks to finish rounds the group's h to e4m3 (their writes are
    // visible to it: each block fences before it counts, the last fences after).
    const int grp = n0 / 128, ngroups = (N + 127) / 128;
    if (threadIdx.x == 0) {
      const int expected = min(8, (N - 128 * grp + C::kRows - 1) / C::kRows);
      int32_t* c = counters + static_cast<int64_t>(blockIdx.y) * ngroups + grp;
      __threadfence();
      const int old = atomicAdd(c, 1);
      last_block = old == expected - 1;
      if (last_block) *c = 0;  // every block of the group has counted: ready for the next launch
    }
    __syncthreads();
    if (!last_block) return;
    __threadfence();
    for (int r = r_begin + warp; r < r_end; r += C::kWarps) {
      const uint2 raw = __ldcg(reinterpret_cast<const uint2*>(h_out + r * N + 128 * grp) + lane);
      const float4 v = make_float4(__uint_as_float(raw.x << 16), __uint_as_float(raw.x & 0xffff0000u),
                                   __uint_as_float(raw.y << 16), __uint_as_float(raw.y & 0xffff0000u));
      const float s = dev::quantize_e4m3_block128(v, hq + static_cast<int64_t>(r) * N + 128 * grp, lane);
      if (lane == 0) hqs[grp * n_rows + r] = s;
    }
  }
}

template <bool kSwiglu>
void launch_fp8(const Fp8Rows& x, const ExpertMatrix& wa, const ExpertMatrix& wb, const int2* tiles,
                const int32_t* ntiles, int max_tiles, const int32_t* offsets, float limit, const float* weight,
                const int32_t* perm, int64_t n_rows, bf16* h, uint8_t* hq, float* hqs, int32_t* counters, float* y,
                cudaStream_t s) {
  using C = Fp8Gemv;
  DSV4_CHECK(max_tiles <= 65535, "moe", "gemv: ", max_tiles, " tiles, more than a grid column holds (65535)");
  const size_t smem = sizeof(Fp8Stage<kSwiglu ? 2 : 1>) * C::kWarps * C::depth(kSwiglu);
  static bool raised = false;
  if (!raised) {
    DSV4_CUDA_CHECK(cudaFuncSetAttribute(moe_gemv_fp8_kernel<kSwiglu>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem)));
    raised = true;
  }
  const dim3 grid((wa.rows + C::kRows - 1) / C::kRows, max_tiles), block(C::kWarps * 32);
  launch("moe_gemv_fp8_kernel", moe_gemv_fp8_kernel<kSwiglu>, grid, block, smem, s, x, wa, wb, tiles, ntiles, offsets,
         limit, weight, perm, n_rows, h, hq, hqs, counters, y);
}

void check_fp8(const ExpertMatrix& w, const char* what) {
  DSV4_CHECK(w.codes && w.scales, "moe", what, ": the FP8 expert gemv needs FP4 weights");
  DSV4_CHECK(w.cols % 128 == 0, "moe", what, ": ", w.cols, " columns, not a multiple of 128");
}

}  // namespace

bool moe_gemv_fp8_fits(const ExpertMatrix& w1, const ExpertMatrix& w2) {
  return w1.codes && w1.scales && w2.codes && w2.scales && w1.cols % 128 == 0 && w2.cols % 128 == 0;
}

int64_t moe_gemv_fp8_counters(int max_tiles, int F) { return static_cast<int64_t>(max_tiles) * ((F + 127) / 128); }

void moe_gemv_fp8_swiglu_cuda(const uint8_t* xq, const float* xqs, int64_t ld_xqs, int k, const ExpertMatrix& w1,
                              const ExpertMatrix& w3, const int2* tiles, const int32_t* ntiles, int max_tiles,
                              const int32_t* offsets, float limit, const float* weight, const int32_t* perm, int64_t n,
                              bf16* h, uint8_t* hq, float* hqs, int32_t* counters, cudaStream_t s) {
  check_fp8(w1, "w1");
  check_fp8(w3, "w3");
  DSV4_CHECK(w1.rows == w3.rows && w1.cols == w3.cols, "moe", "gemv: w1 and w3 differ in shape");
  DSV4_CHECK(w1.rows % 128 == 0, "moe", "gemv: ", w1.rows, " features, not a multiple of 128");
  if (max_tiles == 0) return;
  launch_fp8<true>(Fp8Rows{xq, xqs, ld_xqs, perm, k}, w1, w3, tiles, ntiles, max_tiles, offsets, limit, weight, perm, n,
                   h, hq, hqs, counters, nullptr, s);
}

void moe_gemv_fp8_down_cuda(const uint8_t* hq, const float* hqs, int64_t n, const ExpertMatrix& w2, const int2* tiles,
                            const int32_t* ntiles, int max_tiles, const int32_t* offsets, float* y, cudaStream_t s) {
  check_fp8(w2, "w2");
  if (max_tiles == 0) return;
  launch_fp8<false>(Fp8Rows{hq, hqs, n, nullptr, 1}, w2, w2, tiles, ntiles, max_tiles, offsets, 0.0f, nullptr, nullptr,
                    n, nullptr, nullptr, nullptr, nullptr, y, s);
}

}  // namespace dsv4::cuda
