// CUDA sparse attention with the sink (contract in attention.h / cuda_ops.h). One block per
// (query row, group of kHeads heads, split); the attended rows (window, then compressed
// entries) stream through shared memory in tiles with an online softmax whose initial state is
// the sink (m = sink, l = 1, o = 0): the sink enters only the denominator, it has no value
// vector. When rows are few (decode), the tiles are split over several blocks (split s takes
// tiles s, s + S, ...) and a combine kernel merges the partial (m, l, o) with the sink.
// Float32 arithmetic throughout (both cache forms decode to float32).
#include "cuda/check.h"
#include "ops/cuda_device.cuh"

namespace dsv4::cuda {

namespace {

struct AttnConfig {
  // Heads per block: 16 when rows fill the GPU (each attended row is loaded once per 16 heads);
  // 4 when rows are few (decode): four times the blocks, a quarter of the registers each.
  static constexpr int kHeads = 16, kHeadsFew = 4;
  static constexpr int kThreads = 128;  // 4 warps; in the value phase thread t owns dims [4t, 4t + 4)
  static constexpr int kTile = 32;      // attended rows per tile (one per lane when scoring)
  static constexpr int kMaxDh = 4 * kThreads;
  static constexpr int kPad = 4;        // row pad of the tile: float4 reads stay conflict-free per quarter warp
  static_assert(kTile == 32, "scores assign one attended row per lane");
};

// The heads per block for this many rows (see AttnConfig).
int heads_per_block(int64_t rows, const AttnShape& a) {
  // Few rows and few attended rows (window + selected entries): with thousands of entries (HCA at
  // long context) the 16-head blocks win, as each decoded entry serves four times the heads.
  const bool few = rows * (a.H / std::min(AttnConfig::kHeads, a.H)) < 132 && a.H % AttnConfig::kHeadsFew == 0 &&
                   a.max_keys > 0 && a.max_keys <= 1024;
  return std::min(few ? AttnConfig::kHeadsFew : AttnConfig::kHeads, a.H);
}

// Row `j` of the attended list of query row r: its source (chunk kv row, window ring row, entry row).
struct KeySource {
  const float* chunk;  // float32 row of this chunk, or null
  const CacheRows* cache;
  int64_t row;
};

__device__ __forceinline__ float dot4(float4 a, float4 b) { return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w; }

template <int kHeads>
__global__ void __launch_bounds__(AttnConfig::kThreads)
sparse_attention_kernel(const float* q, const float* kv, const float* sink, AttnShape a, const int32_t* slot,
                        const int32_t* pos, const SeqRows* seqs, const LayerCache* caches, const int32_t* selected,
                        float* o, int splits, float* part) {
  using C = AttnConfig;
  static_assert(kHeads % (C::kThreads / 32) == 0, "heads split evenly over the warps");
  constexpr int kPerWarp = kHeads / (C::kThreads / 32);
  extern __shared__ __align__(16) float smem[];
  const int Dh = a.Dh, ldk = Dh + C::kPad;
  const int hb = min(kHeads, a.H);
  float* qs = smem;                      // [hb, Dh]
  float* ks = qs + hb * Dh;              // [kTile, Dh + kPad]
  float* ps = ks + C::kTile * ldk;       // [kTile, kHeads]: probabilities, one row per attended row
  float* alpha = ps + C::kTile * kHeads;  // [kHeads]
  float* lsum = alpha + kHeads;           // [kHeads]
  for (int i = threadIdx.x; i < C::kTile * kHeads + kHeads; i += blockDim.x) ps[i] = 0.0f;  // padded heads stay 0

  const int64_t r = blockIdx.x;
  const int h0 = blockIdx.y * hb;
  const int p = pos[r];
  const int sl = slot[r];
  const SeqRows seq = seqs[sl];
  const LayerCache& cache = caches[sl];
  const int lo = max(0, p - a.W + 1);
  const int nwin = p - lo + 1;
  int nent = 0;
  if (a.m > 0) {
    const int count = (p + 1) / a.m;
    nent = selected ? min(a.K, count) : count;
  }
  const int nkeys = nwin + nent;
  const RowFormat kvf{Dh, a.R, a.compact, false};
  // Compact rows decode in 16-byte pieces, at most 64 per row (two per lane).
  const bool vec_rows = (Dh - a.R) % 16 == 0 && a.R % 8 == 0 && (Dh - a.R) / 16 + a.R / 8 <= 64;

  {
    const float4* q4 = reinterpret_cast<const float4*>(q + (r * a.H + h0) * Dh);
#pragma unroll 4
    for (int i = threadIdx.x; i < hb * Dh / 4; i += blockDim.x) reinterpret_cast<float4*>(qs)[i] = q4[i];
  }

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  float m_run[kPerWarp], l_run[kPerWarp];  // warp w keeps heads w, w + 4, ...
#pragma unroll
  for (int i = 0; i < kPerWarp; ++i) {
    const int h = warp + i * nwarps;
    m_run[i] = splits > 1 ? -INFINITY : h < hb ? sink[h0 + h] : 0.0f;  // a split's partial has no sink
    l_run[i] = splits > 1 ? 0.0f : 1.0f;
  }
  const int d0 = 4 * threadIdx.x;  // this thread's four value dims
  float acc[kHeads][4];
#pragma unroll
  for (int h = 0; h < kHeads; ++h)
#pragma unroll
    for (int c = 0; c < 4; ++c) acc[h][c] = 0.0f;

  for (int t0 = blockIdx.z * C::kTile; t0 < nkeys; t0 += splits * C::kTile) {
    __syncthreads();
    // Load the tile: one warp per row, lanes over the dims. Compact cache rows first have all
    // their 16-byte pieces loaded (every row of the warp in flight at once), then decoded.
    if (a.compact && vec_rows && nwarps == C::kThreads / 32) {
      constexpr int kRows = C::kTile / (C::kThreads / 32) / 2;  // rows in flight per warp (two rounds)
      const int N = Dh - a.R, pc = N / 16, P = pc + a.R / 8;  // pieces of codes, of codes + RoPE
#pragma unroll 1
      for (int round = 0; round < 2; ++round) {
      uint4 raw[kRows][2];
      const CacheRows* rc[kRows];
      int64_t rrow[kRows];
      const float* rchunk[kRows];
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        const int key = t0 + warp + (round * kRows + i) * nwarps;
        rc[i] = nullptr, rchunk[i] = nullptr, rrow[i] = 0;
        if (key >= nkeys) continue;
        if (key < nwin) {
          const int kp = lo + key;
          if (kp >= seq.pos0) rchunk[i] = kv + static_cast<int64_t>(seq.row0 + kp - seq.pos0) * Dh;
          else rc[i] = &cache.window, rrow[i] = kp % a.W;
        } else {
          const int e = key - nwin;
          rc[i] = &cache.entries, rrow[i] = selected ? selected[r * a.K + e] : e;
        }
        if (!rc[i]) continue;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int pi = lane + 32 * h;
          if (pi < pc) raw[i][h] = *reinterpret_cast<const uint4*>(rc[i]->codes + rrow[i] * N + 16 * pi);
          else if (pi < P) raw[i][h] = *reinterpret_cast<const uint4*>(rc[i]->rope + rrow[i] * a.R + 8 * (pi - pc));
        }
      }
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        float* dst = ks + (warp + (round * kRows + i) * nwarps) * ldk;
        if (rchunk[i]) {
          for (int d = 4 * lane; d < Dh; d += 128)
            *reinterpret_cast<float4*>(dst + d) = *reinterpret_cast<const float4*>(rchunk[i] + d);
        } else if (!rc[i]) {
          for (int d = lane; d < Dh; d += 32) dst[d] = 0.0f;
        } else {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const int pi = lane + 32 * h;
            if (pi < pc) {
              float v[16];
              dev::e4m3x16(raw[i][h], v);
              const float sc = dev::e8m0_value(rc[i]->scales[rrow[i] * ((N + 63) / 64) + pi / 4]);
#pragma unroll
              for (int j = 0; j < 16; j += 4)
                *reinterpret_cast<float4*>(dst + 16 * pi + j) =
                    make_float4(v[j] * sc, v[j + 1] * sc, v[j + 2] * sc, v[j + 3] * sc);
            } else if (pi < P) {
              const __nv_bfloat162* b = reinterpret_cast<const __nv_bfloat162*>(&raw[i][h]);
              float* o8 = dst + N + 8 * (pi - pc);
#pragma unroll
              for (int j = 0; j < 4; ++j) {
                const float2 f = __bfloat1622float2(b[j]);
                o8[2 * j] = f.x;
                o8[2 * j + 1] = f.y;
              }
            }
          }
        }
      }
      }  // round
    } else
    for (int j = warp; j < C::kTile; j += nwarps) {
      const int key = t0 + j;
      float* dst = ks + j * ldk;
      if (key >= nkeys) {
        for (int i = lane; i < Dh; i += 32) dst[i] = 0.0f;
        continue;
      }
      KeySource src{nullptr, nullptr, 0};
      if (key < nwin) {
        const int kp = lo + key;
        if (kp >= seq.pos0) src.chunk = kv + static_cast<int64_t>(seq.row0 + kp - seq.pos0) * Dh;
        else src.cache = &cache.window, src.row = kp % a.W;
      } else {
        const int e = key - nwin;
        src.cache = &cache.entries;
        src.row = selected ? selected[r * a.K + e] : e;
      }
      if (src.chunk)
        for (int i = 4 * lane; i < Dh; i += 128)
          *reinterpret_cast<float4*>(dst + i) = *reinterpret_cast<const float4*>(src.chunk + i);
      else if (!a.compact)
        for (int i = 4 * lane; i < Dh; i += 128)
          *reinterpret_cast<float4*>(dst + i) = *reinterpret_cast<const float4*>(src.cache->f32 + src.row * Dh + i);
      else
        for (int i = lane; i < Dh; i += 32) dst[i] = dev::cache_value(*src.cache, kvf, src.row, i);
    }
    __syncthreads();
    // Scores: lane = attended row; the warp's heads together (one read of the row per 4 dims).
    {
      float dot[kPerWarp];
#pragma unroll
      for (int i = 0; i < kPerWarp; ++i) dot[i] = 0.0f;
      const float* kj = ks + lane * ldk;
      for (int d = 0; d < Dh; d += 4) {
        const float4 k4 = *reinterpret_cast<const float4*>(kj + d);
#pragma unroll
        for (int i = 0; i < kPerWarp; ++i) {
          const int h = min(warp + i * nwarps, hb - 1);
          dot[i] += dot4(*reinterpret_cast<const float4*>(qs + h * Dh + d), k4);
        }
      }
      const bool valid = t0 + lane < nkeys;
#pragma unroll
      for (int i = 0; i < kPerWarp; ++i) {
        const int h = warp + i * nwarps;
        if (h >= hb) continue;  // warp-uniform; a guard, not a break, keeps the loop unrolled
        const float sc = valid ? dot[i] * a.scale : -INFINITY;
        const float m_new = fmaxf(m_run[i], dev::warp_max(sc));
        const float pj = valid ? expf(sc - m_new) : 0.0f;
        const float al = expf(m_run[i] - m_new);
        l_run[i] = l_run[i] * al + dev::warp_sum(pj);
        m_run[i] = m_new;
        ps[lane * kHeads + h] = pj;
        if (lane == 0) alpha[h] = al;
      }
    }
    __syncthreads();
    // Values: acc[h][c] = acc[h][c] · alpha_h + Σ_j p[j][h] · v_j[d0 + c].
    if (d0 < Dh) {
#pragma unroll
      for (int h = 0; h < kHeads; ++h) {  // heads past hb compute on padding and are never stored
        const float al = alpha[h];
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[h][c] *= al;
      }
      for (int j = 0; j < C::kTile; ++j) {
        const float4 v = *reinterpret_cast<const float4*>(ks + j * ldk + d0);
        const float4* pj = reinterpret_cast<const float4*>(ps + j * kHeads);
#pragma unroll
        for (int h4 = 0; h4 < kHeads / 4; ++h4) {
          const float4 p4 = pj[h4];
          const float pv[4] = {p4.x, p4.y, p4.z, p4.w};
#pragma unroll
          for (int u = 0; u < 4; ++u) {
            float* ah = acc[4 * h4 + u];
            ah[0] += pv[u] * v.x;
            ah[1] += pv[u] * v.y;
            ah[2] += pv[u] * v.z;
            ah[3] += pv[u] * v.w;
          }
        }
      }
    }
  }
  if (splits > 1) {  // the partial of this split: unnormalized o, then m and l
    const int pstride = Dh + 4;  // o, m, l, pad: keeps each partial's float4 stores aligned
    float* base = part + ((r * a.H + h0) * splits + blockIdx.z) * pstride;
    const int64_t hstride = static_cast<int64_t>(splits) * pstride;
    if (d0 < Dh)
#pragma unroll
      for (int h = 0; h < kHeads; ++h)
        if (h < hb)
          *reinterpret_cast<float4*>(base + h * hstride + d0) = make_float4(acc[h][0], acc[h][1], acc[h][2], acc[h][3]);
#pragma unroll
    for (int i = 0; i < kPerWarp; ++i) {
      const int h = warp + i * nwarps;
      if (h < hb && lane == 0) {
        base[h * hstride + Dh] = m_run[i];
        base[h * hstride + Dh + 1] = l_run[i];
      }
    }
    return;
  }
#pragma unroll
  for (int i = 0; i < kPerWarp; ++i) {
    const int h = warp + i * nwarps;
    if (h < hb && lane == 0) lsum[h] = l_run[i];
  }
  __syncthreads();
  if (d0 < Dh) {
#pragma unroll
    for (int h = 0; h < kHeads; ++h) {
      if (h >= hb) continue;
      const float inv = 1.0f / lsum[h];
      float4 out = make_float4(acc[h][0] * inv, acc[h][1] * inv, acc[h][2] * inv, acc[h][3] * inv);
      *reinterpret_cast<float4*>(o + (r * a.H + h0 + h) * Dh + d0) = out;
    }
  }
}

// Merges the splits' partials with the sink: one block per (row, head, 128 dims). The splits'
// weights exp(m_s − M) are computed once into shared memory; then 8 warps each sum every 8th
// split over the block's dims (float4 loads, several in flight: at 1M tokens an HCA head has
// 128 partials), and the 8 group sums are added in a fixed order.
constexpr int kMaxSplits = 128;
struct Combine {
  static constexpr int kDims = 128, kGroups = 8, kThreads = kGroups * kDims / 4;
};
__global__ void __launch_bounds__(Combine::kThreads)
attention_combine_kernel(const float* part, const float* sink, int H, int Dh, int splits, float* o) {
  using C = Combine;
  __shared__ float wgt[kMaxSplits];
  __shared__ float total;
  __shared__ float4 red[C::kGroups][C::kDims / 4];
  const int64_t r = blockIdx.x;
  const int h = blockIdx.y;
  const int pstride = Dh + 4;
  const float* base = part + (r * H + h) * static_cast<int64_t>(splits) * pstride;
  if (threadIdx.x < 32) {  // one warp: the maximum, the weights, the denominator (splits in order)
    float M = sink[h];
    for (int s = threadIdx.x; s < splits; s += 32) M = fmaxf(M, base[s * pstride + Dh]);
    M = dev::warp_max(M);
    for (int s = threadIdx.x; s < splits; s += 32) wgt[s] = expf(base[s * pstride + Dh] - M);
    __syncwarp();
    if (threadIdx.x == 0) {
      float L = expf(sink[h] - M);
      for (int s = 0; s < splits; ++s) L += base[s * pstride + Dh + 1] * wgt[s];
      total = L;
    }
  }
  __syncthreads();
  const int quad = threadIdx.x % (C::kDims / 4), g = threadIdx.x / (C::kDims / 4);
  const int d = blockIdx.z * C::kDims + 4 * quad;
  float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  if (d < Dh) {
#pragma unroll 8
    for (int s = g; s < splits; s += C::kGroups) {
      const float4 x = *reinterpret_cast<const float4*>(base + s * pstride + d);
      const float w = wgt[s];
      v.x += x.x * w, v.y += x.y * w, v.z += x.z * w, v.w += x.w * w;
    }
  }
  red[g][quad] = v;
  __syncthreads();
  if (g == 0 && d < Dh) {
    float4 sum = red[0][quad];
#pragma unroll
    for (int k = 1; k < C::kGroups; ++k) {
      const float4 t = red[k][quad];
      sum.x += t.x, sum.y += t.y, sum.z += t.z, sum.w += t.w;
    }
    const float inv = 1.0f / total;
    *reinterpret_cast<float4*>(o + (r * H + h) * Dh + d) = make_float4(sum.x * inv, sum.y * inv, sum.z * inv, sum.w * inv);
  }
}
void launch_combine(const float* part, const float* sink, int64_t rows, int H, int Dh, int splits, float* o,
                    cudaStream_t s) {
  DSV4_CHECK(splits <= kMaxSplits && Dh % 4 == 0, "attention", "combine: ", splits, " splits, head_dim ", Dh);
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(H),
                  static_cast<unsigned>((Dh + Combine::kDims - 1) / Combine::kDims));
  attention_combine_kernel<<<grid, Combine::kThreads, 0, s>>>(part, sink, H, Dh, splits, o);
  DSV4_CUDA_LAUNCHED("attention_combine_kernel");
}

int attention_splits(int64_t rows, const AttnShape& a) {
  const int64_t blocks = rows * (a.H / heads_per_block(rows, a));
  const int64_t target = 264;  // two blocks on each of 132 SMs
  if (blocks >= target) return 1;
  int64_t splits = std::min<int64_t>(64, (target + blocks - 1) / blocks);
  if (a.max_keys > 0)  // no more splits than tiles: an empty split still writes and combines a partial
    splits = std::min<int64_t>(splits, (a.max_keys + AttnConfig::kTile - 1) / AttnConfig::kTile);
  return static_cast<int>(std::max<int64_t>(1, splits));
}

// One block per (sequence, ring slot j of the last W rows); the row is re-encoded from its
// float32 values (already FP8-simulated on the nope dims: their block scales are recomputed,
// which reproduces the same values exactly).
__global__ void window_keep_kernel(const float* kv, RowFormat f, int W, const SeqRows* seqs, const LayerCache* caches) {
  const SeqRows seq = seqs[blockIdx.x];
  const int p = seq.pos0 + seq.T - W + static_cast<int>(blockIdx.y);
  if (p < seq.pos0 || p < 0) return;
  const CacheRows& c = caches[blockIdx.x].window;
  const float* src = kv + static_cast<int64_t>(seq.row0 + p - seq.pos0) * f.d;
  const int64_t row = p % W;
  if (!f.compact) {
    for (int i = threadIdx.x; i < f.d; i += blockDim.x) c.f32[row * f.d + i] = src[i];
    return;
  }
  const int N = f.d - f.R, nblocks = (N + 63) / 64;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  for (int b = warp; b < nblocks; b += nwarps) {
    const int b0 = b * 64, b1 = min(N, b0 + 64);
    float amax = 0.0f;
    for (int i = b0 + lane; i < b1; i += 32) amax = fmaxf(amax, fabsf(src[i]));
    amax = dev::warp_max(amax);
    const int k = dev::fp8_scale_exp(amax);
    const float s = ldexpf(1.0f, k);
    for (int i = b0 + lane; i < b1; i += 32) c.codes[row * N + i] = dev::e4m3_code(src[i] / s);
    if (lane == 0) c.scales[row * nblocks + b] = static_cast<uint8_t>(k + 127);
  }
  for (int i = N + threadIdx.x; i < f.d; i += blockDim.x) c.rope[row * f.R + (i - N)] = __float2bfloat16_rn(src[i]);
}


// ---- tensor-core path (the fast precision) ----------------------------------------------------
// One block per (query row, group of 64 heads, split): the 64 heads are the M of mma.sync
// m16n8k16 (bf16 → float32), tiles of 64 attended rows the N (scores) and the K (values), the
// shared kv head is read once per 64 heads. Attended rows are compact cache rows (the chunk's
// own rows are first encoded into the work buffer the same way the window ring keeps them), so
// every key arrives as e4m3 codes + E8M0 scales + bf16 RoPE dims: copied raw with cp.async into
// a staging area while the previous tile computes, then decoded to bf16 (exact) in shared memory.
// q and the probabilities are rounded to bf16; the row sums of the softmax stay float32.
// Warps: 8 = 4 row groups (16 heads) × 2 halves (32 keys of the scores, Dh/2 dims of the values),
// so each thread's rows are the same in both phases and the rescaling stays in registers.
struct MmaAttn {
  static constexpr int kM = 64, kN = 64, kWarps = 8, kThreads = 32 * kWarps;
  static constexpr int kMaxDh = 512, kMaxK = 2048, kMaxScaleBlocks = 8;
  static constexpr int kPad = 8;  // bf16 row pad: ldmatrix rows 16 bytes apart in the banks
  static constexpr int kMaxNT = kMaxDh / 2 / 8;  // value n-tiles per warp
};

__device__ __forceinline__ uint32_t smem_addr(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_addr(p)));
}
// c[16×8] += a[16×16] · b[16×8] (fragments as in the PTX ISA: groupID = lane / 4, tig = lane % 4).
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_addr(dst)), "l"(src) : "memory");
}
__device__ __forceinline__ uint32_t bf16x2_bits(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// Where attended row `key` of query row (p, seq) lives: the chunk's encoded rows, the window
// ring or the compressed entries; row < 0: past the attended list.
struct KeyRow {
  int which;  // 0 chunk, 1 window, 2 entries
  int64_t row;
};
__device__ __forceinline__ KeyRow key_row(int key, int nkeys, int nwin, int lo, const SeqRows& seq, int W,
                                          const int32_t* sel) {
  if (key >= nkeys) return {0, -1};
  if (key < nwin) {
    const int kp = lo + key;
    if (kp >= seq.pos0) return {0, static_cast<int64_t>(seq.row0 + kp - seq.pos0)};
    return {1, static_cast<int64_t>(kp % W)};
  }
  const int e = key - nwin;
  return {2, static_cast<int64_t>(sel ? sel[e] : e)};
}

__global__ void __launch_bounds__(MmaAttn::kThreads, 1)
sparse_attention_mma_kernel(const float* q, CacheRows chunk, const float* sink, AttnShape a, const int32_t* slot,
                            const int32_t* pos, const SeqRows* seqs, const LayerCache* caches,
                            const int32_t* selected, float* o, int splits, float* part) {
  using C = MmaAttn;
  const int Dh = a.Dh, N = Dh - a.R, R = a.R, nblk = (N + 63) / 64;
  const int ld = Dh + C::kPad, ldp = C::kN + C::kPad;  // bf16 strides of Q/K and P
  const int stage_ld = N + 2 * R;                       // bytes of one raw row: codes, then RoPE dims
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* Qs = reinterpret_cast<bf16*>(smem_raw);         // [kM][ld]
  bf16* Ks = Qs + C::kM * ld;                           // [kN][ld]
  bf16* Ps = Ks + C::kN * ld;                           // [kM][ldp]
  unsigned char* stage = reinterpret_cast<unsigned char*>(Ps + C::kM * ldp);  // [kN][stage_ld]
  uint8_t* stage_sc = stage + C::kN * stage_ld;         // [kN][kMaxScaleBlocks]
  float* redmax = reinterpret_cast<float*>(stage_sc + C::kN * C::kMaxScaleBlocks);  // [2][kM]
  float* lsum = redmax + 2 * C::kM;                     // [2][kM]
  int32_t* sel_s = reinterpret_cast<int32_t*>(lsum + 2 * C::kM);  // [K]
  __shared__ CacheRows src[3];

  const int64_t r = blockIdx.x;
  const int hb = min(C::kM, a.H), h0 = blockIdx.y * hb;
  const int p = pos[r], sl = slot[r];
  const SeqRows seq = seqs[sl];
  const int lo = max(0, p - a.W + 1), nwin = p - lo + 1;
  int nent = 0;
  if (a.m > 0) {
    const int count = (p + 1) / a.m;
    nent = selected ? min(a.K, count) : count;
  }
  const int nkeys = nwin + nent, ntiles = (nkeys + C::kN - 1) / C::kN;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, rg = warp & 3, kh = warp >> 2;
  const int gid = lane >> 2, tig = lane & 3;
  if (tid == 0) {
    src[0] = chunk;
    src[1] = caches[sl].window;
    src[2] = caches[sl].entries;
  }
  const int32_t* sel = nullptr;
  if (selected) {
    for (int i = tid; i < nent; i += C::kThreads) sel_s[i] = selected[r * a.K + i];
    sel = sel_s;
  }
  // q → bf16, heads past hb zero; 16 loads in flight per thread (one round trip per batch).
  {
    constexpr int kBatch = 16;
    const int total = C::kM * Dh / 4;
    for (int i0 = tid; i0 < total; i0 += kBatch * C::kThreads) {
      float4 v[kBatch];
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int i = i0 + u * C::kThreads, row = i / (Dh / 4), d = 4 * (i % (Dh / 4));
        v[u] = i < total && row < hb ? *reinterpret_cast<const float4*>(q + (r * a.H + h0 + row) * Dh + d)
                                     : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      }
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int i = i0 + u * C::kThreads, row = i / (Dh / 4), d = 4 * (i % (Dh / 4));
        if (i < total) *reinterpret_cast<uint2*>(Qs + row * ld + d) = uint2{bf16x2_bits(v[u].x, v[u].y), bf16x2_bits(v[u].z, v[u].w)};
      }
    }
  }
  __syncthreads();

  // Staging of tile t: four threads per attended row (its source found once); the scale bytes
  // through registers (two per thread), codes and RoPE dims by cp.async.
  const int code_pieces = N / 16, pieces = code_pieces + R / 8;
  static_assert(C::kThreads == 4 * C::kN && C::kMaxScaleBlocks == 8, "four threads per row, two scales each");
  const int srow = tid >> 2, squad = tid & 3;
  uint8_t sc_reg[2];
  auto load_scales = [&](int t) {
    const KeyRow kr = key_row(t * C::kN + srow, nkeys, nwin, lo, seq, a.W, sel);
#pragma unroll
    for (int u = 0; u < 2; ++u) {
      const int b = squad + 4 * u;
      sc_reg[u] = kr.row >= 0 && b < nblk ? src[kr.which].scales[kr.row * nblk + b] : 0;
    }
  };
  auto store_scales = [&]() {
#pragma unroll
    for (int u = 0; u < 2; ++u) stage_sc[srow * C::kMaxScaleBlocks + squad + 4 * u] = sc_reg[u];
  };
  auto issue_copies = [&](int t) {
    const KeyRow kr = key_row(t * C::kN + srow, nkeys, nwin, lo, seq, a.W, sel);
    if (kr.row >= 0) {
      const CacheRows& c = src[kr.which];
      unsigned char* dst = stage + srow * stage_ld;
      for (int pc = squad; pc < pieces; pc += 4) {
        if (pc < code_pieces) cp_async16(dst + 16 * pc, c.codes + kr.row * N + 16 * pc);
        else cp_async16(dst + N + 16 * (pc - code_pieces), c.rope + kr.row * R + 8 * (pc - code_pieces));
      }
    }
    asm volatile("cp.async.commit_group;" ::: "memory");
  };
  // Decode the staged tile into Ks: 8 dims (16 bytes of bf16) per step; rows past the list are zero.
  auto decode = [&](int t) {
    const int p8 = Dh / 8, cp8 = N / 8;
    for (int i = tid; i < C::kN * p8; i += C::kThreads) {
      const int row = i / p8, pc = i % p8;
      uint4 out = make_uint4(0, 0, 0, 0);
      if (t * C::kN + row < nkeys) {
        if (pc < cp8) {
          const uint2 codes = *reinterpret_cast<const uint2*>(stage + row * stage_ld + 8 * pc);
          const float s = dev::e8m0_value(stage_sc[row * C::kMaxScaleBlocks + pc / 8]);
          const uint32_t w[2] = {codes.x, codes.y};
          uint32_t packed[4];
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(w[j / 2] >> (16 * (j % 2))), __NV_E4M3);
            const float2 f = __half22float2(__half2(h));
            packed[j] = bf16x2_bits(f.x * s, f.y * s);
          }
          out = make_uint4(packed[0], packed[1], packed[2], packed[3]);
        } else {
          out = *reinterpret_cast<const uint4*>(stage + row * stage_ld + N + 16 * (pc - cp8));
        }
      }
      *reinterpret_cast<uint4*>(Ks + row * ld + 8 * pc) = out;
    }
  };

  // Online softmax state of this thread's two rows (gid and gid + 8 of its row group).
  const int ra = 16 * rg + gid, rb = ra + 8;
  float m_a, m_b, l_a = 0.0f, l_b = 0.0f;
  if (splits > 1) {
    m_a = m_b = -INFINITY;
  } else {
    m_a = ra < hb ? sink[h0 + ra] : 0.0f;
    m_b = rb < hb ? sink[h0 + rb] : 0.0f;
    if (kh == 0 && tig == 0) l_a = l_b = 1.0f;  // the sink's exp(sink − m), counted once per row
  }
  const int half_dims = Dh / 2, nt_used = half_dims / 8;
  float acc[C::kMaxNT][4];
#pragma unroll
  for (int i = 0; i < C::kMaxNT; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;

  int t = blockIdx.z;
  if (t < ntiles) {
    load_scales(t);
    store_scales();
    issue_copies(t);
    asm volatile("cp.async.wait_all;" ::: "memory");
    __syncthreads();
    decode(t);
    __syncthreads();
  }
  for (; t < ntiles; t += splits) {
    const int next = t + splits;
    const bool has_next = next < ntiles;
    if (has_next) {  // the next tile's bytes travel during this one's products
      load_scales(next);
      issue_copies(next);
    }
    // Scores: 16 heads × 32 keys per warp over all Dh dims.
    float s[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
    {
      const bf16* qa = Qs + (16 * rg + (lane & 15)) * ld + (lane >> 4) * 8;
      const bf16* kb = Ks + (32 * kh + (lane & 7) + ((lane >> 4) << 3)) * ld + ((lane >> 3) & 1) * 8;
#pragma unroll 4
      for (int kk = 0; kk < Dh; kk += 16) {
        uint32_t af[4], b0[4], b1[4];
        ldsm_x4(af, qa + kk);
        ldsm_x4(b0, kb + kk);
        ldsm_x4(b1, kb + 16 * ld + kk);
        mma16816(s[0], af, b0[0], b0[1]);
        mma16816(s[1], af, b0[2], b0[3]);
        mma16816(s[2], af, b1[0], b1[1]);
        mma16816(s[3], af, b1[2], b1[3]);
      }
    }
    float mx_a = -INFINITY, mx_b = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const bool valid = t * C::kN + 32 * kh + 8 * nt + 2 * tig + c < nkeys;
        s[nt][c] = valid ? s[nt][c] * a.scale : -INFINITY;
        s[nt][2 + c] = valid ? s[nt][2 + c] * a.scale : -INFINITY;
        mx_a = fmaxf(mx_a, s[nt][c]);
        mx_b = fmaxf(mx_b, s[nt][2 + c]);
      }
#pragma unroll
    for (int o = 1; o <= 2; o <<= 1) {
      mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, o));
      mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, o));
    }
    if (tig == 0) {
      redmax[kh * C::kM + ra] = mx_a;
      redmax[kh * C::kM + rb] = mx_b;
    }
    __syncthreads();
    // Softmax step: the new maxima, probabilities to Ps (bf16), the rescaling factors.
    const float mn_a = fmaxf(m_a, fmaxf(redmax[ra], redmax[C::kM + ra]));
    const float mn_b = fmaxf(m_b, fmaxf(redmax[rb], redmax[C::kM + rb]));
    const float base_a = mn_a == -INFINITY ? 0.0f : mn_a, base_b = mn_b == -INFINITY ? 0.0f : mn_b;
    const float al_a = __expf(m_a - base_a), al_b = __expf(m_b - base_b);
    m_a = mn_a;
    m_b = mn_b;
    float ps_a = 0.0f, ps_b = 0.0f;
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
      const float p0 = __expf(s[nt][0] - base_a), p1 = __expf(s[nt][1] - base_a);
      const float p2 = __expf(s[nt][2] - base_b), p3 = __expf(s[nt][3] - base_b);
      ps_a += p0 + p1;
      ps_b += p2 + p3;
      const int col = 32 * kh + 8 * nt + 2 * tig;
      *reinterpret_cast<uint32_t*>(Ps + ra * ldp + col) = bf16x2_bits(p0, p1);
      *reinterpret_cast<uint32_t*>(Ps + rb * ldp + col) = bf16x2_bits(p2, p3);
    }
    l_a = l_a * al_a + ps_a;
    l_b = l_b * al_b + ps_b;
    if (has_next) store_scales();
    __syncthreads();
    // Values: 16 heads × Dh/2 dims per warp, rescaled first.
#pragma unroll
    for (int nt = 0; nt < C::kMaxNT; ++nt) {
      acc[nt][0] *= al_a;
      acc[nt][1] *= al_a;
      acc[nt][2] *= al_b;
      acc[nt][3] *= al_b;
    }
    {
      const bf16* pa = Ps + (16 * rg + (lane & 15)) * ldp + (lane >> 4) * 8;
      const bf16* vb = Ks + ((lane & 7) + ((lane >> 3) & 1) * 8) * ld + kh * half_dims + (lane >> 4) * 8;
#pragma unroll
      for (int ks = 0; ks < C::kN; ks += 16) {
        uint32_t af[4];
        ldsm_x4(af, pa + ks);
#pragma unroll
        for (int np = 0; np < C::kMaxNT / 2; ++np) {
          if (2 * np >= nt_used) break;
          uint32_t b[4];
          ldsm_x4_trans(b, vb + ks * ld + 16 * np);
          mma16816(acc[2 * np], af, b[0], b[1]);
          mma16816(acc[2 * np + 1], af, b[2], b[3]);
        }
      }
    }
    if (has_next) asm volatile("cp.async.wait_all;" ::: "memory");
    __syncthreads();
    if (has_next) {
      decode(next);
      __syncthreads();
    }
  }

  // Row sums over the quad and the two key halves.
#pragma unroll
  for (int o = 1; o <= 2; o <<= 1) {
    l_a += __shfl_xor_sync(0xffffffffu, l_a, o);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, o);
  }
  if (tig == 0) {
    lsum[kh * C::kM + ra] = l_a;
    lsum[kh * C::kM + rb] = l_b;
  }
  __syncthreads();
  const float L_a = lsum[ra] + lsum[C::kM + ra], L_b = lsum[rb] + lsum[C::kM + rb];
  const int d0 = kh * half_dims + 2 * tig;
  if (splits > 1) {  // unnormalized o, then m and l (the combine kernel's layout)
    const int pstride = Dh + 4;
    auto put = [&](int row, float m, float L, int c0) {
      if (row >= hb) return;
      float* base = part + ((r * a.H + h0 + row) * splits + blockIdx.z) * pstride;
#pragma unroll
      for (int nt = 0; nt < C::kMaxNT; ++nt)
        if (nt < nt_used) *reinterpret_cast<float2*>(base + d0 + 8 * nt) = make_float2(acc[nt][c0], acc[nt][c0 + 1]);
      if (kh == 0 && tig == 0) {
        base[Dh] = m;
        base[Dh + 1] = L;
      }
    };
    put(ra, m_a, L_a, 0);
    put(rb, m_b, L_b, 2);
    return;
  }
  auto put = [&](int row, float L, int c0) {
    if (row >= hb) return;
    const float inv = 1.0f / L;
    float* out = o + (r * a.H + h0 + row) * Dh + d0;
#pragma unroll
    for (int nt = 0; nt < C::kMaxNT; ++nt)
      if (nt < nt_used) *reinterpret_cast<float2*>(out + 8 * nt) = make_float2(acc[nt][c0] * inv, acc[nt][c0 + 1] * inv);
  };
  put(ra, L_a, 0);
  put(rb, L_b, 2);
}

// Encodes float32 kv rows (FP8-simulated nope dims, bf16-rounded RoPE dims) into the compact form.
__device__ __forceinline__ void encode_compact_row(const float* src, RowFormat f, const CacheRows& c, int64_t row) {
  const int N = f.d - f.R, nblocks = (N + 63) / 64;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  for (int b = warp; b < nblocks; b += nwarps) {
    const int b0 = b * 64, b1 = min(N, b0 + 64);
    float amax = 0.0f;
    for (int i = b0 + lane; i < b1; i += 32) amax = fmaxf(amax, fabsf(src[i]));
    amax = dev::warp_max(amax);
    const int k = dev::fp8_scale_exp(amax);
    const float s = ldexpf(1.0f, k);
    for (int i = b0 + lane; i < b1; i += 32) c.codes[row * N + i] = dev::e4m3_code(src[i] / s);
    if (lane == 0) c.scales[row * nblocks + b] = static_cast<uint8_t>(k + 127);
  }
  for (int i = N + threadIdx.x; i < f.d; i += blockDim.x) c.rope[row * f.R + (i - N)] = __float2bfloat16_rn(src[i]);
}
__global__ void encode_rows_kernel(const float* kv, RowFormat f, CacheRows out) {
  encode_compact_row(kv + static_cast<int64_t>(blockIdx.x) * f.d, f, out, blockIdx.x);
}

bool use_mma(const AttnShape& a) {
  const int N = a.Dh - a.R;
  return a.bf16_products && a.compact && a.Dh % 16 == 0 && a.Dh <= MmaAttn::kMaxDh && N % 16 == 0 && a.R % 8 == 0 &&
         (N + 63) / 64 <= MmaAttn::kMaxScaleBlocks && (a.m != 4 || a.K <= MmaAttn::kMaxK) &&
         a.H % std::min(MmaAttn::kM, a.H) == 0;
}
int mma_splits(int64_t rows, const AttnShape& a) {
  const int64_t blocks = rows * (a.H / std::min(MmaAttn::kM, a.H));
  const int64_t target = 132;  // one block on each SM
  if (blocks >= target) return 1;
  int64_t splits = std::min<int64_t>(kMaxSplits, (target + blocks - 1) / blocks);
  if (a.max_keys > 0) splits = std::min<int64_t>(splits, (a.max_keys + MmaAttn::kN - 1) / MmaAttn::kN);
  return static_cast<int>(std::max<int64_t>(1, splits));
}
size_t mma_smem(const AttnShape& a) {
  using C = MmaAttn;
  const int ld = a.Dh + C::kPad, N = a.Dh - a.R;
  return sizeof(bf16) * (static_cast<size_t>(C::kM + C::kN) * ld + C::kM * (C::kN + C::kPad)) +
         static_cast<size_t>(C::kN) * (N + 2 * a.R) + C::kN * C::kMaxScaleBlocks + sizeof(float) * 4 * C::kM +
         sizeof(int32_t) * (a.m == 4 ? a.K : 0);
}
// Bytes of the chunk's encoded rows in the work buffer (16-byte aligned pieces).
int64_t encoded_bytes(int64_t rows, const AttnShape& a) {
  const int64_t N = a.Dh - a.R, nblk = (N + 63) / 64;
  auto up16 = [](int64_t b) { return (b + 15) / 16 * 16; };
  return up16(rows * N) + up16(rows * nblk) + up16(rows * a.R * 2);
}

}  // namespace

int64_t sparse_attention_work(int64_t rows, const AttnShape& a) {
  if (use_mma(a)) {
    const int splits = mma_splits(rows, a);
    return (splits > 1 ? rows * a.H * splits * (a.Dh + 4) : 0) + (encoded_bytes(rows, a) + 15) / 16 * 4;
  }
  const int splits = attention_splits(rows, a);
  return splits > 1 ? rows * a.H * splits * (a.Dh + 4) : 0;
}

void sparse_attention_cuda(const float* q, const float* kv, const float* sink, const AttnShape& a,
                           const int32_t* slot, const int32_t* pos, int64_t rows, const SeqRows* seqs,
                           const LayerCache* caches, const int32_t* selected, float* o, float* work,
                           cudaStream_t s) {
  using C = AttnConfig;
  DSV4_CHECK(a.Dh <= C::kMaxDh && a.Dh % 4 == 0, "attention", "head_dim ", a.Dh, " must be a multiple of 4 up to ",
             C::kMaxDh);
  if (rows == 0) return;
  if (use_mma(a)) {
    DSV4_CHECK(work, "attention", "the tensor-core attention needs its work buffer");
    const int splits = mma_splits(rows, a);
    const int64_t part_floats = splits > 1 ? rows * a.H * splits * (a.Dh + 4) : 0;
    // The chunk's rows, encoded as the caches keep them, after the partials (16-byte aligned).
    unsigned char* enc = reinterpret_cast<unsigned char*>(work + (part_floats + 3) / 4 * 4);
    const int64_t N = a.Dh - a.R, nblk = (N + 63) / 64;
    auto up16 = [](int64_t b) { return (b + 15) / 16 * 16; };
    CacheRows chunk;
    chunk.codes = enc;
    chunk.scales = enc + up16(rows * N);
    chunk.rope = reinterpret_cast<bf16*>(chunk.scales + up16(rows * nblk));
    encode_rows_kernel<<<static_cast<unsigned>(rows), 128, 0, s>>>(kv, RowFormat{a.Dh, a.R, true, false}, chunk);
    DSV4_CUDA_LAUNCHED("encode_rows_kernel");
    const size_t smem = mma_smem(a);
    static size_t raised = 0;
    if (smem > 48 * 1024 && smem > raised) {
      DSV4_CUDA_CHECK(cudaFuncSetAttribute(sparse_attention_mma_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem)));
      raised = smem;
    }
    const int hb = std::min(MmaAttn::kM, a.H);
    dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(a.H / hb), static_cast<unsigned>(splits));
    sparse_attention_mma_kernel<<<grid, MmaAttn::kThreads, smem, s>>>(q, chunk, sink, a, slot, pos, seqs, caches,
                                                                       selected, o, splits, work);
    DSV4_CUDA_LAUNCHED("sparse_attention_mma_kernel");
    if (splits > 1) launch_combine(work, sink, rows, a.H, a.Dh, splits, o, s);
    return;
  }
  const int hb = heads_per_block(rows, a);
  DSV4_CHECK(a.H % hb == 0, "attention", "num_attention_heads ", a.H, " is not a multiple of ", hb);
  const int kh = hb <= C::kHeadsFew ? C::kHeadsFew : C::kHeads;  // the kernel's (padded) heads
  const size_t smem = (kh * a.Dh + C::kTile * (a.Dh + C::kPad) + C::kTile * kh + 2 * kh) * sizeof(float);
  const int splits = attention_splits(rows, a);
  DSV4_CHECK(splits == 1 || work, "attention", "a split attention needs its work buffer");
  dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(a.H / hb), static_cast<unsigned>(splits));
  auto launch = [&](auto kernel, size_t& raised) {
    if (smem > 48 * 1024 && smem > raised) {
      DSV4_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
      raised = smem;
    }
    kernel<<<grid, C::kThreads, smem, s>>>(q, kv, sink, a, slot, pos, seqs, caches, selected, o, splits, work);
  };
  static size_t raised_few = 0, raised_many = 0;
  if (kh == C::kHeadsFew) launch(sparse_attention_kernel<C::kHeadsFew>, raised_few);
  else launch(sparse_attention_kernel<C::kHeads>, raised_many);
  DSV4_CUDA_LAUNCHED("sparse_attention_kernel");
  if (splits > 1) launch_combine(work, sink, rows, a.H, a.Dh, splits, o, s);
}

void window_keep_cuda(const float* kv, RowFormat f, int W, const SeqRows* seqs, int nseq, const LayerCache* caches,
                      cudaStream_t s) {
  if (nseq == 0) return;
  window_keep_kernel<<<dim3(nseq, W), 128, 0, s>>>(kv, f, W, seqs, caches);
  DSV4_CUDA_LAUNCHED("window_keep_kernel");
}

}  // namespace dsv4::cuda
