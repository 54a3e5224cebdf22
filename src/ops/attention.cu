// CUDA sparse attention with the sink (contract in attention.h / cuda_ops.h). One block per
// (query row, group of kHeads heads, split); the attended rows (window, then compressed
// entries) stream through shared memory in tiles with an online softmax whose initial state is
// the sink (m = sink, l = 1, o = 0): the sink enters only the denominator, it has no value
// vector. When rows are few (decode), the tiles are split over several blocks (split s takes
// tiles s, s + S, ...) and a combine kernel merges the partial (m, l, o) with the sink.
// Float32 arithmetic throughout (both cache forms decode to float32).
#include "cuda/check.h"
#include "cuda/launch.h"
#include "ops/attention_cuda.cuh"
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
  dev::pdl_begin();
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
using attn::kMaxSplits;
struct Combine {
  static constexpr int kDims = 128, kGroups = 8, kThreads = kGroups * kDims / 4;
};
// The four o values of a partial at dims d .. d + 3 (float32, or bf16 with kBf16).
template <bool kBf16>
__device__ __forceinline__ float4 partial_o(const float* row, int d) {
  if constexpr (kBf16) {
    const uint2 u = *reinterpret_cast<const uint2*>(row + d / 2);
    const float2 lo = dev::bf16x2_to_float2(u.x), hi = dev::bf16x2_to_float2(u.y);
    return make_float4(lo.x, lo.y, hi.x, hi.y);
  } else {
    return *reinterpret_cast<const float4*>(row + d);
  }
}
template <bool kBf16>
__global__ void __launch_bounds__(Combine::kThreads)
attention_combine_kernel(const float* part, const float* sink, int H, int Dh, int R, int splits, const int32_t* pos,
                         AttnOutput out, float* o) {
  dev::pdl_release();  // early, as dev::pdl_begin_early (launch.h); the wait follows the angles below
  using C = Combine;
  __shared__ float wgt[kMaxSplits];
  __shared__ float total;
  __shared__ float4 red[C::kGroups][C::kDims / 4];
  const int64_t r = blockIdx.x;
  const int h = blockIdx.y;
  const int pstride = attn::partial_stride(Dh, kBf16), ml = attn::partial_o_floats(Dh, kBf16);  // m at ml
  const float* base = part + (r * H + h) * static_cast<int64_t>(splits) * pstride;
  const int quad = threadIdx.x % (C::kDims / 4), g = threadIdx.x / (C::kDims / 4);
  const int d = blockIdx.z * C::kDims + 4 * quad;
  // Before the wait: the inverse RoPE's angles of the block's RoPE dims (lanes of warp 0; a
  // double-precision sincos) from the position (the batch descriptor, no earlier kernel's output:
  // launch.h), and the sink. Then, before the weights' barrier so that their round trips overlap,
  // the thread's first partials (a decode row at 4K has at most 10 splits).
  const int N = Dh - R;
  const bool rotates = g == 0 && d < Dh && out.freqs && d + 3 >= N;  // lanes of warp 0 only
  dev::RopeAngle ang[2];
  if (rotates) {
    const int p = pos[r];
#pragma unroll
    for (int e = 0; e < 2; ++e)
      if (d + 2 * e >= N)
        ang[e] = dev::rope_angle(out.freqs[(d + 2 * e - N) / 2], p);
  }
  const float sink_h = sink[h];
  dev::pdl_wait();
  constexpr int kAhead = 2;
  float4 ahead[kAhead];
#pragma unroll
  for (int i = 0; i < kAhead; ++i) {
    const int s = g + C::kGroups * i;
    ahead[i] = d < Dh && s < splits ? partial_o<kBf16>(base + s * pstride, d) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
  if (threadIdx.x < 32) {  // one warp: the maximum, the weights, the denominator (lane-parallel, then a butterfly)
    constexpr int kPerLane = kMaxSplits / 32;
    float m[kPerLane], l[kPerLane];
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int s = threadIdx.x + 32 * i;
      m[i] = s < splits ? base[s * pstride + ml] : -INFINITY;
      l[i] = s < splits ? base[s * pstride + ml + 1] : 0.0f;
    }
    float M = sink_h;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) M = fmaxf(M, m[i]);
    M = dev::warp_max(M);
    float L = 0.0f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int s = threadIdx.x + 32 * i;
      if (s >= splits) continue;
      const float w = expf(m[i] - M);
      wgt[s] = w;
      L += l[i] * w;
    }
    L = dev::warp_sum(L);
    if (threadIdx.x == 0) total = L + expf(sink_h - M);
  }
  __syncthreads();
  float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  auto add = [&](const float4& x, int s) {
    const float w = wgt[s];
    v.x += x.x * w, v.y += x.y * w, v.z += x.z * w, v.w += x.w * w;
  };
  if (d < Dh) {
#pragma unroll
    for (int i = 0; i < kAhead; ++i)
      if (g + C::kGroups * i < splits) add(ahead[i], g + C::kGroups * i);
#pragma unroll 8
    for (int s = g + C::kGroups * kAhead; s < splits; s += C::kGroups)
      add(partial_o<kBf16>(base + s * pstride, d), s);
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
    float4 v = make_float4(sum.x * inv, sum.y * inv, sum.z * inv, sum.w * inv);
    // The output step: rope_kernel's inverse rotation of the pairs in the RoPE dims, then (warp 0
    // holds the block's 128 dims, one quantization block) quantize_fp8_kernel's rounding.
    if (rotates) {
      if (d >= N) dev::rope_rotate(v.x, v.y, ang[0].cs, -ang[0].sn);
      if (d + 2 >= N) dev::rope_rotate(v.z, v.w, ang[1].cs, -ang[1].sn);
    }
    *reinterpret_cast<float4*>(o + (r * H + h) * Dh + d) = v;
    if (out.q) {
      const int64_t col = static_cast<int64_t>(h) * Dh + blockIdx.z * C::kDims;
      const float sc = dev::quantize_e4m3_block128(v, out.q + r * H * Dh + col, quad);
      if (quad == 0) out.qs[(col / 128) * gridDim.x + r] = sc;
    }
  }
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

// One block per (sequence, ring slot j of the last W rows): the row re-encoded from its float32
// values (already FP8-simulated on the nope dims, so the same values come back).
__global__ void window_keep_kernel(const float* kv, RowFormat f, int W, const SeqRows* seqs, const LayerCache* caches) {
  dev::pdl_begin();
  const SeqRows seq = seqs[blockIdx.x];
  const int p = seq.pos0 + seq.T - W + static_cast<int>(blockIdx.y);
  if (p < seq.pos0 || p < 0) return;
  const CacheRows& c = caches[blockIdx.x].window;
  const float* src = kv + static_cast<int64_t>(seq.row0 + p - seq.pos0) * f.d;
  dev::write_kv_row(src, f, c, p % W);
}

}  // namespace

namespace attn {

void launch_combine(const float* part, const float* sink, int64_t rows, int H, int Dh, int R, int splits,
                    const int32_t* pos, const AttnOutput& out, float* o, cudaStream_t s, bool bf16_part) {
  DSV4_CHECK(splits <= kMaxSplits && Dh % (bf16_part ? 8 : 4) == 0, "attention", "combine: ", splits,
             " splits, head_dim ", Dh);
  DSV4_CHECK(!out.q || (out.qs && Dh % Combine::kDims == 0), "attention", "an FP8 output needs scales and head_dim ",
             Dh, " a multiple of ", Combine::kDims);
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(H),
                  static_cast<unsigned>((Dh + Combine::kDims - 1) / Combine::kDims));
  launch("attention_combine_kernel", bf16_part ? attention_combine_kernel<true> : attention_combine_kernel<false>, grid,
         Combine::kThreads, 0, s, part, sink, H, Dh, R,
         splits, pos, out, o);
}

void output_step(int64_t rows, int H, int Dh, int R, const int32_t* pos, const AttnOutput& out, float* o,
                 cudaStream_t s) {
  if (rows == 0) return;
  if (out.freqs) rope_cuda(o, rows, H, static_cast<int64_t>(H) * Dh, Dh, Dh - R, R, out.freqs, pos, true, s);
  if (out.q) {
    const int64_t cols = static_cast<int64_t>(H) * Dh;
    DSV4_CHECK(out.qs, "attention", "an FP8 output needs scales");
    quantize_fp8_1x128_cuda(o, rows, cols, out.q, out.qs, rows, s);
  }
}

}  // namespace attn

bool sparse_attention_chunk(float* work, int64_t rows, const AttnShape& a, CacheRows* chunk) {
  if (!attn::mma_fits(a) || !work) return false;
  *chunk = attn::chunk_rows(work, rows, a);
  return true;
}

bool sparse_attention_norms_q(const AttnShape& a) {
  return attn::mma_fits(a) && a.Dh == 512 && a.R % 4 == 0 && a.R <= 128;
}

int64_t sparse_attention_work(int64_t rows, const AttnShape& a) {
  if (attn::mma_fits(a)) return attn::mma_work(rows, a);
  const int splits = attention_splits(rows, a);
  return splits > 1 ? rows * a.H * splits * (a.Dh + 4) : 0;
}

bool sparse_attention_cuda(const float* q, const float* kv, const float* sink, const AttnShape& a,
                           const int32_t* slot, const int32_t* pos, int64_t rows, const SeqRows* seqs,
                           const LayerCache* caches, const int32_t* selected, float* o, float* work,
                           cudaStream_t s, const AttnOutput& out) {
  using C = AttnConfig;
  DSV4_CHECK(a.Dh <= C::kMaxDh && a.Dh % 4 == 0, "attention", "head_dim ", a.Dh, " must be a multiple of 4 up to ",
             C::kMaxDh);
  if (rows == 0) return false;
  DSV4_CHECK(!a.q_rope || sparse_attention_norms_q(a), "attention",
             "q before its normalization needs the tensor-core kernel and head_dim 512");
  if (attn::mma_fits(a)) {
    attn::mma_attention(q, kv, sink, a, slot, pos, rows, seqs, caches, selected, o, work, s, out);
    return out.one_row_each;
  }
  const int hb = heads_per_block(rows, a);
  DSV4_CHECK(a.H % hb == 0, "attention", "num_attention_heads ", a.H, " is not a multiple of ", hb);
  const int kh = hb <= C::kHeadsFew ? C::kHeadsFew : C::kHeads;  // the kernel's (padded) heads
  const size_t smem = (kh * a.Dh + C::kTile * (a.Dh + C::kPad) + C::kTile * kh + 2 * kh) * sizeof(float);
  const int splits = attention_splits(rows, a);
  DSV4_CHECK(splits == 1 || work, "attention", "a split attention needs its work buffer");
  dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(a.H / hb), static_cast<unsigned>(splits));
  auto start = [&](auto kernel, size_t& raised) {
    if (smem > 48 * 1024 && smem > raised) {
      DSV4_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
      raised = smem;
    }
    launch("sparse_attention_kernel", kernel, grid, C::kThreads, smem, s, q, kv, sink, a, slot, pos, seqs, caches,
           selected, o, splits, work);
  };
  static size_t raised_few = 0, raised_many = 0;
  if (kh == C::kHeadsFew) start(sparse_attention_kernel<C::kHeadsFew>, raised_few);
  else start(sparse_attention_kernel<C::kHeads>, raised_many);
  if (splits > 1) attn::launch_combine(work, sink, rows, a.H, a.Dh, a.R, splits, pos, out, o, s);
  else attn::output_step(rows, a.H, a.Dh, a.R, pos, out, o, s);
  return false;
}

void window_keep_cuda(const float* kv, RowFormat f, int W, const SeqRows* seqs, int nseq, const LayerCache* caches,
                      cudaStream_t s) {
  if (nseq == 0) return;
  launch("window_keep_kernel", window_keep_kernel, dim3(nseq, W), 128, 0, s, kv, f, W, seqs, caches);
}

}  // namespace dsv4::cuda
