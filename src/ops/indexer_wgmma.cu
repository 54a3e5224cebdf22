// CUDA lightning indexer scores on Hopper's warpgroup MMA (wgmma), for the decode step's long rows:
// compact (FP4) entries of 128 dims, few query rows (indexer_scores_cuda dispatches here; other
// shapes take indexer.cu's mma.sync kernel, whose contract this one keeps).
//
// The mma.sync kernel holds q in 128 registers a thread as its A operand and streams entries as B:
// 8 warps an SM, 32 MMAs and ~230 instructions a warp for 8 entries, latency-bound at 27 µs for
// the 262,144 entries of a 1M-token row. Here the roles turn:
//   - entries are A (M = 64 entries a warpgroup tile, 16 a warp), decoded from FP4 straight into
//     the A fragments (the pairs of fp4_bf16.cuh, one bf16x2 multiply by the scale a pair);
//   - q is B (N = 64 heads, K = 128), in shared memory once per block in the canonical K-major
//     layout, its dims in the pairs' K order; eight wgmma m64n64k16 a tile, issued by the
//     warpgroup and run asynchronously;
//   - the accumulator holds an entry's 64 heads in one thread's 16 values and its 3 neighbours'
//     (lanes 4g .. 4g + 3): the ReLU-weighted head sum is 16 FMAs and two shuffles;
//   - each warp copies its 16 entries of a tile ahead with cp.async (kStages tiles in flight),
//     private to the warp as in indexer.cu; with `digits` the written scores are counted by the
//     top-k's first digit the same way.
// The products are exact (FP4 values times powers of two in bf16) and summed in float32; only the
// summation order differs from the CPU and from indexer.cu. Each block converts q itself (all of a
// thread's loads in flight at once; its first tiles already travelling). Measured alone
// (scripts/experiments/indexer_stream.cu): a 1M-token row 20.5 µs against indexer.cu's 26.1, a
// 4K-token row 8.2 against 9.1; at 1M the largest score moved by 1.8e-7 of the largest, and the
// top-k picked the same 512 entries.
#include <algorithm>
#include <type_traits>

#include "cuda/check.h"
#include "cuda/launch.h"
#include "ops/cuda_device.cuh"
#include "ops/fp4_bf16.cuh"
#include "ops/indexer_cuda.cuh"

namespace dsv4::cuda::indexer {

namespace {

using ptx::fence_proxy_async_shared;
using ptx::wgmma_commit;
using ptx::wgmma_desc;
using ptx::wgmma_fence;
using ptx::wgmma_fence_operand;
using ptx::wgmma_m64n64k16_bf16;
using ptx::wgmma_wait;

struct WgScores {
  static constexpr int kDI = 128;                   // dims of an entry
  static constexpr int kHeads = 64;                 // N of the product: heads of one pass
  // Two warpgroups a block, two blocks an SM (128 registers): at 1M tokens (six stages then) 22.9
  // µs, against 23.9 with three warpgroups in one block and 23.0 with four; two in one block were
  // 10% slower (scripts/experiments/indexer_stream.cu).
  static constexpr int kGroups = 2;                 // warpgroups a block
  static constexpr int kMinBlocks = 2;              // blocks an SM the registers must allow
  static constexpr int kThreads = 128 * kGroups;
  static constexpr int kTile = 64;                  // entries of a warpgroup tile (M)
  static constexpr int kKSteps = kDI / 16;          // wgmma k steps
  // Tiles of a warp in flight: two (one copied ahead). Fewer were faster, every one: at 1M tokens
  // 2, 3, 4, 6, 8, 10 stages took 20.5, 21.4, 21.7, 23.0, 23.9, 25.4 µs.
  static constexpr int kStages = 2;
  // A warp's stage: 16 entries × 64 bytes of codes ([entry][quarter] 16-byte pieces), then their
  // 16 scale words (4 E8M0 bytes an entry).
  static constexpr int kStageBytes = 16 * kDI / 2 + 16 * 4;
  static constexpr int kQBytes = kKSteps * kHeads * 16 * 2;  // q of one pass: [k step][64 heads × 16 dims] bf16
  static constexpr int kSmem = kQBytes + kGroups * 4 * kStages * kStageBytes;
};
using W = WgScores;

// Byte offset of q's (head h, logical k l) of k step s in the pass's shared q: core matrices of 8
// heads × 8 dims (128 bytes), the two along K 128 bytes apart, head groups 256 bytes apart.
__device__ __forceinline__ int q_offset(int s, int h, int l) {
  return s * (W::kHeads * 32) + (h / 8) * 256 + (l / 8) * 128 + (h % 8) * 16 + (l % 8) * 2;
}

__global__ void __launch_bounds__(W::kThreads, W::kMinBlocks) indexer_scores_wgmma_kernel(const float* qI, const float* w, float w_scale,
                                                                         int HI, const int32_t* slot, const int32_t* pos,
                                                                         const LayerCache* caches, float* score, int64_t ld,
                                                                         uint32_t* digits) {
  extern __shared__ __align__(128) unsigned char smem[];
  unsigned char* qs = smem;  // [kQBytes]
  __shared__ float ws[W::kHeads];
  __shared__ uint32_t digit_count[kTopkDigits];
  const int64_t r = blockIdx.x;
  const int count = (pos[r] + 1) / 4;
  const int tiles = (count + W::kTile - 1) / W::kTile;
  if (static_cast<int>(blockIdx.y) * W::kGroups >= tiles) return;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int wg = warp / 4, wq = warp % 4;  // warpgroup, and the warp's quarter of its tiles
  const int tile0 = blockIdx.y * W::kGroups + wg, tile_stride = gridDim.y * W::kGroups;
  const int my_tiles = tile0 < tiles ? (tiles - tile0 + tile_stride - 1) / tile_stride : 0;
  const CacheRows cache = caches[slot[r]].idx_entries;
  // The row's position, tile count and entries' pointers come from the batch descriptor, which no
  // earlier kernel writes (launch.h): read before the wait, as are the blocks past the row's tiles.
  dev::pdl_begin();
  unsigned char* stages = smem + W::kQBytes + warp * W::kStages * W::kStageBytes;
  float* score_row = score + r * ld;

  // Tile k of the warpgroup: this warp's 16 entries, lane (g, t) copying quarter t of entries g and
  // g + 8 and their scale words (an empty group past the last tile, keeping the count uniform).
  auto issue = [&](int k) {
    if (k < my_tiles) {
      unsigned char* st = stages + (k % W::kStages) * W::kStageBytes;
      const int e0 = (tile0 + k * tile_stride) * W::kTile + 16 * wq;
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int row = g + 8 * i, e = e0 + row;
        const bool valid = e < count;
        const int64_t es = valid ? e : 0;
        cp_async<16>(st + (row * 4 + t) * 16, cache.codes + es * (W::kDI / 2) + t * 16, valid);
        if (t == 0) cp_async<4>(st + 16 * W::kDI / 2 + row * 4, cache.scales + es * (W::kDI / 32), valid);
      }
    }
    cp_async_commit();
  };

  if (digits) clear_counts(digit_count);
#pragma unroll 1
  for (int hb = 0; hb < HI; hb += W::kHeads) {
    const bool last = hb + W::kHeads >= HI;
    __syncthreads();  // the previous pass's readers of ws and qs are done
    for (int k = 0; k < W::kStages - 1; ++k) issue(k);  // the first tiles travel while q is converted
    for (int h = threadIdx.x; h < W::kHeads; h += blockDim.x) ws[h] = hb + h < HI ? w[r * HI + hb + h] * w_scale : 0.0f;
    // q's element (head h, dim t·32 + 8j + e) goes to k step 2j + (e % 4) / 2 at logical k
    // 2t + e / 4 (e even) or 2t + 8 + e / 4 (e odd): where the pairs (codes i, i + 4) put it, so
    // elements e and e + 4 of a word of 8 dims are one 32-bit pair. All of a thread's loads are in
    // flight before the first is used (one L2 round trip).
    constexpr int kQWords = W::kHeads * W::kDI / 8, kPerThread = (kQWords + W::kThreads - 1) / W::kThreads;
    float4 qv[kPerThread][2];
#pragma unroll
    for (int u = 0; u < kPerThread; ++u) {
      const int i = threadIdx.x + u * W::kThreads, h = i / (W::kDI / 8), d0 = 8 * (i % (W::kDI / 8));
      const bool in = i < kQWords && hb + h < HI;
      const float4* src = reinterpret_cast<const float4*>(qI + (r * HI + hb + h) * W::kDI + d0);
      qv[u][0] = in ? __ldg(src) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      qv[u][1] = in ? __ldg(src + 1) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
#pragma unroll
    for (int u = 0; u < kPerThread; ++u) {
      const int i = threadIdx.x + u * W::kThreads, h = i / (W::kDI / 8), d0 = 8 * (i % (W::kDI / 8));
      if (i >= kQWords) break;
      const int tq = d0 / 32, j = (d0 % 32) / 8;
      const float lo[4] = {qv[u][0].x, qv[u][0].y, qv[u][0].z, qv[u][0].w};
      const float hi[4] = {qv[u][1].x, qv[u][1].y, qv[u][1].z, qv[u][1].w};
#pragma unroll
      for (int e = 0; e < 4; ++e)  // elements e, e + 4: k step 2j + e / 2, logical k 2t + 8 (e % 2), + 1
        *reinterpret_cast<uint32_t*>(qs + q_offset(2 * j + e / 2, h, 2 * tq + 8 * (e % 2))) = ptx::pack_bf16x2(lo[e], hi[e]);
    }
    fence_proxy_async_shared();
    float wh[8][2];  // the weights of the thread's heads 8n + 2t, + 1
    __syncthreads();
#pragma unroll
    for (int n = 0; n < 8; ++n) wh[n][0] = ws[8 * n + 2 * t], wh[n][1] = ws[8 * n + 2 * t + 1];

    // q's descriptor at k step 0; step s starts s·2 KiB further (the address field counts 16 bytes).
    const uint64_t qdesc = wgmma_desc(qs, 128, 256);
#pragma unroll 1
    for (int k = 0; k < my_tiles; ++k) {
      cp_async_wait<W::kStages - 2>();  // tile k has landed (this thread's copies)
      __syncwarp();                     // and the warp's: a lane reads what its neighbours copied
      const unsigned char* st = stages + (k % W::kStages) * W::kStageBytes;
      uint4 codes[2];
      uint32_t sb[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int row = g + 8 * i;
        codes[i] = *reinterpret_cast<const uint4*>(st + (row * 4 + t) * 16);
        sb[i] = st[16 * W::kDI / 2 + row * 4 + t];
      }
      __syncwarp();  // the stage is read: the next issue may overwrite it
      issue(k + W::kStages - 1);
      // A fragments of k step 2j + h: rows g, g + 8 at logical k 2t, 2t + 1 (pair 2h of word j) and
      // at 2t + 8, 2t + 9 (pair 2h + 1).
      uint32_t a[W::kKSteps][4];
      auto decode = [&](auto wide) {
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          const uint32_t f1 = fp4::e8m0_factor1(sb[i]), f2 = fp4::e8m0_factor2(sb[i]);
          const uint32_t* q = reinterpret_cast<const uint32_t*>(&codes[i]);
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            uint32_t p[4] = {fp4::e2m1_pair<0>(q[j]), fp4::e2m1_pair<1>(q[j]), fp4::e2m1_pair<2>(q[j]),
                             fp4::e2m1_pair<3>(q[j])};
#pragma unroll
            for (int c = 0; c < 4; ++c) {
              p[c] = ptx::mul_bf16x2(p[c], f1);
              if constexpr (decltype(wide)::value) p[c] = ptx::mul_bf16x2(p[c], f2);
            }
            a[2 * j][i] = p[0];
            a[2 * j][2 + i] = p[1];
            a[2 * j + 1][i] = p[2];
            a[2 * j + 1][2 + i] = p[3];
          }
        }
      };
      if (__any_sync(0xffffffffu, sb[0] > 128u || sb[1] > 128u)) decode(std::true_type{});
      else decode(std::false_type{});

      float acc[32];
#pragma unroll
      for (int i = 0; i < 32; ++i) wgmma_fence_operand(acc[i]);
      wgmma_fence();
#pragma unroll
      for (int s = 0; s < W::kKSteps; ++s) wgmma_m64n64k16_bf16(acc, a[s], qdesc + s * (W::kHeads * 32 / 16), s > 0);
      wgmma_commit();
      wgmma_wait<0>();
#pragma unroll
      for (int i = 0; i < 32; ++i) wgmma_fence_operand(acc[i]);

      // acc[4n + c] = (entry g, head 8n + 2t + c), acc[4n + 2 + c] = (entry g + 8, same head).
      float part[2] = {0.0f, 0.0f};
#pragma unroll
      for (int n = 0; n < 8; ++n)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          part[0] += wh[n][c] * fmaxf(acc[4 * n + c], 0.0f);
          part[1] += wh[n][c] * fmaxf(acc[4 * n + 2 + c], 0.0f);
        }
#pragma unroll
      for (int o = 1; o <= 2; o <<= 1) {
        part[0] += __shfl_xor_sync(0xffffffffu, part[0], o);
        part[1] += __shfl_xor_sync(0xffffffffu, part[1], o);
      }
      // Lane t = 0 writes entry g, lane t = 1 entry g + 8.
      const int e = (tile0 + k * tile_stride) * W::kTile + 16 * wq + g + 8 * t;
      const bool valid = t < 2 && e < count;
      put_score(score_row, e, t == 0 ? part[0] : part[1], valid, hb == 0, digits && last, digit_count);
    }
    cp_async_wait<0>();
  }
  if (digits) flush_counts(digit_count, digits + r * kTopkDigits);
}

}  // namespace

// -DDSV4_SCORES_WGMMA=0 leaves every shape to indexer.cu's kernel (for side-by-side builds).
#ifndef DSV4_SCORES_WGMMA
#define DSV4_SCORES_WGMMA 1
#endif
bool wgmma_scores_fit(int DI, bool compact) { return DSV4_SCORES_WGMMA && compact && DI == W::kDI; }

bool wgmma_scores(const float* qI, const float* w, float w_scale, int64_t rows, int HI, const int32_t* slot,
                  const int32_t* pos, const LayerCache* caches, float* score, int64_t ld, int64_t max_count,
                  cudaStream_t s, uint32_t* digits) {
  static int per_sm = 0;  // resident blocks per SM
  const dim3 grid = few_row_grid(indexer_scores_wgmma_kernel, W::kThreads, W::kSmem, rows,
                                 (max_count + W::kTile - 1) / W::kTile, W::kGroups, per_sm);
  launch("indexer_scores_wgmma_kernel", indexer_scores_wgmma_kernel, grid, W::kThreads, W::kSmem, s, qI, w, w_scale, HI, slot, pos, caches,
         score, ld, digits);
  return digits != nullptr;
}

}  // namespace dsv4::cuda::indexer
