// CUDA sparse attention on the bf16 tensor cores, the fast precision's kernel (contract in
// cuda_ops.h; the float32 kernel, the combine and the entry points are in attention.cu).
//
// One block per (query row, group of 64 heads, split): the 64 heads are the M of mma.sync
// m16n8k16 (bf16 → float32), tiles of 64 attended rows the N (scores) and the K (values), the
// shared kv head is read once per 64 heads. Attended rows are compact cache rows (the chunk's
// own rows are first encoded into the work buffer the same way the window ring keeps them), so
// every key arrives as e4m3 codes + E8M0 scales + bf16 RoPE dims: copied raw with cp.async into
// a staging area while the previous tile computes, then decoded to bf16 (exact) in shared memory.
// q and the probabilities are rounded to bf16; the row sums of the softmax stay float32.
// Warps: 8 = RG row groups (16 heads) × KH = 8 / RG parts (64 / KH keys of the scores, Dh / KH
// dims of the values), so each thread's rows are the same in both phases and the rescaling stays
// in registers. RG covers the block's heads (head_groups): a block of 8 or 16 heads has all 8
// warps on its one row group (with 4 × 2 warps, 6 of them waited at the barriers of the two
// product phases, ~30% of a short attention's time: bench/results/2026-11-30-cuda-14.md).
// Blocks of 32 heads (long rows: one block an SM, each split's tiles one after another) take 16
// warps, 2 row groups × 8 parts: twice the warps to hide a tile's latencies, within 128 registers
// (a warp then stages 4 heads of q at once, not 8). An HCA layer at 1M tokens: B=1 3.11-3.12 ->
// 3.07 ms (20 layers, bench/results/2026-11-30-cuda-24.md). -DDSV4_ATTN_WIDE=0 keeps 8 warps.
#include <algorithm>
#include <cstdlib>
#include <string>

#include "cuda/check.h"
#include "cuda/launch.h"
#include "ops/attention_cuda.cuh"
#include "ops/cuda_device.cuh"
#include "ops/cuda_ptx.cuh"

namespace dsv4::cuda::attn {

namespace {

using namespace ptx;

struct MmaAttn {
  static constexpr int kM = 64, kN = 64, kWarps = 8;
  static constexpr int kWideWarps = 16;  // blocks of 32 heads (see the top of the file)
  static constexpr int kMaxDh = 512, kMaxK = 2048, kMaxScaleBlocks = 8;
  static constexpr int kPad = 8;  // bf16 row pad: ldmatrix rows 16 bytes apart in the banks
  static constexpr int kMaxKH = 8;               // parts of the keys and of the value dims (KH)
};
// The KH of a block of hb heads: the row groups its heads need, the rest of the warps in parts,
// as long as a part's value dims are whole n-tiles (16-byte ldmatrix rows; Dh % 16 == 0 gives 2).
inline int mma_parts(int hb, int Dh) {
  int kh = hb <= 16 ? 8 : hb <= 32 ? 4 : 2;
  while (kh > 2 && Dh % (8 * kh) != 0) kh /= 2;
  return kh;
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

template <int KH, int kW = MmaAttn::kWarps>
__global__ void __launch_bounds__(32 * kW, 1)
sparse_attention_mma_kernel(const float* q, CacheRows chunk, const float* sink, AttnShape a, const int32_t* slot,
                            const int32_t* pos, const SeqRows* seqs, const LayerCache* caches,
                            const int32_t* selected, float* o, int splits, float* part, bool bf16_part) {
  using C = MmaAttn;
  constexpr int kThreads = 32 * kW;
  constexpr int RG = kW / KH, kKeys = C::kN / KH, kQT = kKeys / 8, kNT = C::kMaxDh / KH / 8;
  static_assert(RG * KH == kW && kQT >= 1 && (kQT == 1 || kQT % 2 == 0), "whole warps, n-tiles in pairs");
  const int Dh = a.Dh, N = Dh - a.R, R = a.R, nblk = (N + 63) / 64;
  const int ld = Dh + C::kPad, ldp = C::kN + C::kPad;  // bf16 strides of Q/K and P
  const int stage_ld = N + 2 * R;                       // bytes of one raw row: codes, then RoPE dims
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* Qs = reinterpret_cast<bf16*>(smem_raw);         // [kM][ld]
  bf16* Ks = Qs + C::kM * ld;                           // [kN][ld]
  bf16* Ps = Ks + C::kN * ld;                           // [kM][ldp]
  unsigned char* stage = reinterpret_cast<unsigned char*>(Ps + C::kM * ldp);  // [kN][stage_ld]
  uint8_t* stage_sc = stage + C::kN * stage_ld;         // [kN][kMaxScaleBlocks]
  float* redmax = reinterpret_cast<float*>(stage_sc + C::kN * C::kMaxScaleBlocks);  // [KH][kM]
  float* lsum = redmax + C::kMaxKH * C::kM;             // [KH][kM]
  int32_t* sel_s = reinterpret_cast<int32_t*>(lsum + C::kMaxKH * C::kM);  // [K]
  __shared__ CacheRows src[3];

  const int64_t r = blockIdx.x;
  const int hb = a.H / static_cast<int>(gridDim.y), h0 = blockIdx.y * hb;  // this block's heads (head_groups)
  const int p = pos[r], sl = slot[r];
  const SeqRows seq = seqs[sl];
  const int lo = max(0, p - a.W + 1), nwin = p - lo + 1;
  int nent = 0;
  if (a.m > 0) {
    const int count = (p + 1) / a.m;
    nent = selected ? min(a.K, count) : count;
  }
  const int nkeys = nwin + nent, ntiles = (nkeys + C::kN - 1) / C::kN;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, rg = warp % RG, kh = warp / RG;
  const int gid = lane >> 2, tig = lane & 3;
  if (tid == 0) {
    src[0] = chunk;
    src[1] = caches[sl].window;
    src[2] = caches[sl].entries;
  }
  // The query's RoPE angles at this row's position (AttnShape::q_rope): cos, sin of pair i at
  // redmax[2i], [2i + 1] (free until the tiles). With the row's position, sources and key count
  // above, they come before the wait: the batch descriptor and the frequencies are no earlier
  // kernel's output (launch.h), and the double-precision sincos costs ~600 cycles.
  float* rc = redmax;
  if (a.q_rope)
    for (int i = tid; i < R / 2; i += kThreads) {
      const dev::RopeAngle t = dev::rope_angle(a.q_rope[i], p);
      rc[2 * i] = t.cs;
      rc[2 * i + 1] = t.sn;
    }
  dev::pdl_begin();
  const int32_t* sel = nullptr;
  if (selected) {
    for (int i = tid; i < nent; i += kThreads) sel_s[i] = selected[r * a.K + i];
    sel = sel_s;
  }
  // Staging of tile t: kTPR threads per attended row (four or eight; its source found once); the
  // scale bytes through registers (two or one per thread), codes and RoPE dims by cp.async.
  const int code_pieces = N / 16, pieces = code_pieces + R / 8;
  constexpr int kTPR = kThreads / C::kN, kScales = C::kMaxScaleBlocks / kTPR;
  static_assert(kTPR * C::kN == kThreads && kScales * kTPR == C::kMaxScaleBlocks, "whole rows, whole scale blocks");
  const int srow = tid / kTPR, squad = tid % kTPR;
  uint8_t sc_reg[kScales];
  auto load_scales = [&](int t) {
    const KeyRow kr = key_row(t * C::kN + srow, nkeys, nwin, lo, seq, a.W, sel);
#pragma unroll
    for (int u = 0; u < kScales; ++u) {
      const int b = squad + kTPR * u;
      sc_reg[u] = kr.row >= 0 && b < nblk ? src[kr.which].scales[kr.row * nblk + b] : 0;
    }
  };
  auto store_scales = [&]() {
#pragma unroll
    for (int u = 0; u < kScales; ++u) stage_sc[srow * C::kMaxScaleBlocks + squad + kTPR * u] = sc_reg[u];
  };
  auto issue_copies = [&](int t) {
    const KeyRow kr = key_row(t * C::kN + srow, nkeys, nwin, lo, seq, a.W, sel);
    if (kr.row >= 0) {
      const CacheRows& c = src[kr.which];
      unsigned char* dst = stage + srow * stage_ld;
      for (int pc = squad; pc < pieces; pc += kTPR) {
        if (pc < code_pieces) cp_async<16>(dst + 16 * pc, c.codes + kr.row * N + 16 * pc);
        else cp_async<16>(dst + N + 16 * (pc - code_pieces), c.rope + kr.row * R + 8 * (pc - code_pieces));
      }
    }
    cp_async_commit();
  };
  // The first tile's bytes travel while q is read and normalized (its scale bytes wait in
  // registers: storing them here would wait for them).
  const int t_first = blockIdx.z;
  if (t_first < ntiles) {
    __syncthreads();  // the sources and the selection are in shared memory
    load_scales(t_first);
    issue_copies(t_first);
  }
  if (a.q_rope) {
    // RMSNorm and RoPE of each head on the way in (AttnShape::q_rope), a warp per 8 heads (fewer
    // in a head group), all at once (up to 32 loads in flight a lane: one round trip).
    // rmsnorm_rope_kernel sums with 128 threads: thread t adds x[t + 128i]² for i = 0..3, then
    // block_sum's trees (warps: xor 16, 8, 4, 2, 1; then the four warp totals). Lane l holds float4
    // columns l + 32j, the values of threads 4l .. 4l + 3, so it replays both: xor 16, 8, 4 are
    // lanes ^4, ^2, ^1; xor 2 and 1 are inside the lane.
    // A block with fewer heads (head_groups) gives each warp fewer: hb / kW, at least one (Qs's rows
    // past hb are left as they are: a row of the products depends on its own row only).
    constexpr int kAtOnce = C::kM / kW;  // a warp's heads, all loaded at once
    const int per_warp = max(1, hb / kW), hw = warp * per_warp, hw1 = min(hb, hw + per_warp);
    float4 v[kAtOnce][4];  // in flight while the angles are computed
#pragma unroll
    for (int hh = 0; hh < kAtOnce; ++hh)
#pragma unroll
      for (int j = 0; j < 4; ++j)
        v[hh][j] = hw + hh < hw1 ? *reinterpret_cast<const float4*>(q + (r * a.H + h0 + hw + hh) * Dh + 4 * (lane + 32 * j))
                                 : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    __syncthreads();  // the angles (rc)
#pragma unroll
    for (int hh = 0; hh < kAtOnce; ++hh) {
      if (hw + hh >= hw1) break;
      float part[4];
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        float t = 0.0f;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const float x = reinterpret_cast<const float*>(&v[hh][j])[c];
          t = __fmaf_rn(x, x, t);
        }
#pragma unroll
        for (int o = 4; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
        part[c] = t;
      }
      const float wsum = (part[0] + part[2]) + (part[1] + part[3]);
      const float w0 = __shfl_sync(0xffffffffu, wsum, 0), w1 = __shfl_sync(0xffffffffu, wsum, 8);
      const float w2 = __shfl_sync(0xffffffffu, wsum, 16), w3 = __shfl_sync(0xffffffffu, wsum, 24);
      const float ss = (w0 + w2) + (w1 + w3);
      const float inv = 1.0f / sqrtf(ss / static_cast<float>(Dh) + a.q_eps);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        float y[4];
#pragma unroll
        for (int c = 0; c < 4; ++c) y[c] = reinterpret_cast<const float*>(&v[hh][j])[c] * inv;
        const int d = 4 * (lane + 32 * j);
        if (d >= N) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int i = (d - N) / 2 + e;
            dev::rope_rotate(y[2 * e], y[2 * e + 1], rc[2 * i], rc[2 * i + 1]);
          }
        }
        *reinterpret_cast<uint2*>(Qs + (hw + hh) * ld + d) = uint2{pack_bf16x2(y[0], y[1]), pack_bf16x2(y[2], y[3])};
      }
    }
  } else {
    // q → bf16, heads past hb zero; 16 loads in flight per thread (one round trip per batch).
    constexpr int kBatch = 16;
    const int total = C::kM * Dh / 4;
    dev::DivSeq at(tid, kThreads, Dh / 4);  // (head, float4 column) of element i
    for (int i0 = tid; i0 < total; i0 += kBatch * kThreads) {
      float4 v[kBatch];
      dev::DivSeq in = at;
#pragma unroll
      for (int u = 0; u < kBatch; ++u, in.next()) {
        const int i = i0 + u * kThreads;
        v[u] = i < total && in.q < hb ? *reinterpret_cast<const float4*>(q + (r * a.H + h0 + in.q) * Dh + 4 * in.r)
                                      : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      }
#pragma unroll
      for (int u = 0; u < kBatch; ++u, at.next()) {
        const int i = i0 + u * kThreads;
        if (i < total)
          *reinterpret_cast<uint2*>(Qs + at.q * ld + 4 * at.r) = uint2{pack_bf16x2(v[u].x, v[u].y), pack_bf16x2(v[u].z, v[u].w)};
      }
    }
  }
  __syncthreads();

  // Decode the staged tile into Ks: 8 dims (16 bytes of bf16) per step; rows past the list are zero.
  auto decode = [&](int t) {
    const int p8 = Dh / 8, cp8 = N / 8;
    dev::DivSeq rc(tid, kThreads, p8);
    for (int i = tid; i < C::kN * p8; i += kThreads, rc.next()) {
      const int row = rc.q, pc = rc.r;
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
            packed[j] = pack_bf16x2(f.x * s, f.y * s);
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
  // A row group past the block's heads (head_groups' blocks of fewer than 64) has no products to
  // make: its rows are never written out. It still stages, decodes and meets the barriers.
  const bool rg_active = 16 * rg < hb;
  float m_a, m_b, l_a = 0.0f, l_b = 0.0f;
  if (splits > 1) {
    m_a = m_b = -INFINITY;
  } else {
    m_a = ra < hb ? sink[h0 + ra] : 0.0f;
    m_b = rb < hb ? sink[h0 + rb] : 0.0f;
    if (kh == 0 && tig == 0) l_a = l_b = 1.0f;  // the sink's exp(sink − m), counted once per row
  }
  const int part_dims = Dh / KH, nt_used = part_dims / 8;
  float acc[kNT][4];
#pragma unroll
  for (int i = 0; i < kNT; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;

  int t = blockIdx.z;
  if (t < ntiles) {
    store_scales();
    cp_async_wait<0>();
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
    // Scores: 16 heads × kKeys keys per warp over all Dh dims.
    float s[kQT][4];
#pragma unroll
    for (int i = 0; i < kQT; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
    if (rg_active) {
      const bf16* qa = Qs + (16 * rg + (lane & 15)) * ld + (lane >> 4) * 8;
      const bf16* kb = Ks + (kKeys * kh + (lane & 7) + ((lane >> 4) << 3)) * ld + ((lane >> 3) & 1) * 8;
#pragma unroll 4
      for (int kk = 0; kk < Dh; kk += 16) {
        uint32_t af[4];
        ldmatrix_x4(af, qa + kk);
        if constexpr (kQT == 1) {
          uint32_t b[2];
          ldmatrix_x2(b, kb + kk);
          mma_bf16(s[0], af, b[0], b[1]);
        } else {
#pragma unroll
          for (int pr = 0; pr < kQT / 2; ++pr) {
            uint32_t b[4];
            ldmatrix_x4(b, kb + 16 * pr * ld + kk);
            mma_bf16(s[2 * pr], af, b[0], b[1]);
            mma_bf16(s[2 * pr + 1], af, b[2], b[3]);
          }
        }
      }
    }
    float mx_a = -INFINITY, mx_b = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < kQT; ++nt)
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const bool valid = t * C::kN + kKeys * kh + 8 * nt + 2 * tig + c < nkeys;
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
    float mn_a = m_a, mn_b = m_b;
#pragma unroll
    for (int j = 0; j < KH; ++j) mn_a = fmaxf(mn_a, redmax[j * C::kM + ra]), mn_b = fmaxf(mn_b, redmax[j * C::kM + rb]);
    const float base_a = mn_a == -INFINITY ? 0.0f : mn_a, base_b = mn_b == -INFINITY ? 0.0f : mn_b;
    const float al_a = __expf(m_a - base_a), al_b = __expf(m_b - base_b);
    m_a = mn_a;
    m_b = mn_b;
    float ps_a = 0.0f, ps_b = 0.0f;
#pragma unroll
    for (int nt = 0; nt < kQT; ++nt) {
      const float p0 = __expf(s[nt][0] - base_a), p1 = __expf(s[nt][1] - base_a);
      const float p2 = __expf(s[nt][2] - base_b), p3 = __expf(s[nt][3] - base_b);
      ps_a += p0 + p1;
      ps_b += p2 + p3;
      const int col = kKeys * kh + 8 * nt + 2 * tig;
      *reinterpret_cast<uint32_t*>(Ps + ra * ldp + col) = pack_bf16x2(p0, p1);
      *reinterpret_cast<uint32_t*>(Ps + rb * ldp + col) = pack_bf16x2(p2, p3);
    }
    l_a = l_a * al_a + ps_a;
    l_b = l_b * al_b + ps_b;
    if (has_next) store_scales();
    __syncthreads();
    // Values: 16 heads × Dh / KH dims per warp, rescaled first.
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
      acc[nt][0] *= al_a;
      acc[nt][1] *= al_a;
      acc[nt][2] *= al_b;
      acc[nt][3] *= al_b;
    }
    if (rg_active) {
      const bf16* pa = Ps + (16 * rg + (lane & 15)) * ldp + (lane >> 4) * 8;
      const bf16* vb = Ks + ((lane & 7) + ((lane >> 3) & 1) * 8) * ld + kh * part_dims + (lane >> 4) * 8;
#pragma unroll
      for (int ks = 0; ks < C::kN; ks += 16) {
        uint32_t af[4];
        ldmatrix_x4(af, pa + ks);
#pragma unroll
        for (int np = 0; np < kNT / 2; ++np) {
          if (2 * np >= nt_used) break;
          uint32_t b[4];
          ldmatrix_x4_trans(b, vb + ks * ld + 16 * np);
          mma_bf16(acc[2 * np], af, b[0], b[1]);
          mma_bf16(acc[2 * np + 1], af, b[2], b[3]);
        }
      }
    }
    if (has_next) cp_async_wait<0>();
    __syncthreads();
    if (has_next) {
      decode(next);
      __syncthreads();
    }
  }

  // Row sums over the quad, then over the KH key parts in order.
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
  float L_a = lsum[ra], L_b = lsum[rb];
#pragma unroll
  for (int j = 1; j < KH; ++j) L_a += lsum[j * C::kM + ra], L_b += lsum[j * C::kM + rb];
  const int d0 = kh * part_dims + 2 * tig;
  if (splits > 1) {  // unnormalized o (float32 or bf16), then m and l (the combine kernel's layout)
    const int pstride = partial_stride(Dh, bf16_part), ml = partial_o_floats(Dh, bf16_part);
    // Through shared memory (Qs and Ks are free now), then out in whole rows of float4s: 3.5 µs
    // less a launch than the fragments' 8-byte stores (scripts/experiments/attention_stream.cu).
    __syncthreads();
    float* ost = reinterpret_cast<float*>(smem_raw);  // [kM][pstride] over Qs and Ks (kM·(Dh + 4) floats fit)
    auto stage_row = [&](int row, float m, float L, int c0) {
      float* b = ost + row * pstride;
      if (bf16_part) {
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
          if (nt < nt_used)
            *reinterpret_cast<uint32_t*>(reinterpret_cast<bf16*>(b) + d0 + 8 * nt) =
                pack_bf16x2(acc[nt][c0], acc[nt][c0 + 1]);
      } else {
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
          if (nt < nt_used) *reinterpret_cast<float2*>(b + d0 + 8 * nt) = make_float2(acc[nt][c0], acc[nt][c0 + 1]);
      }
      if (kh == 0 && tig == 0) {
        b[ml] = m;
        b[ml + 1] = L;
      }
    };
    stage_row(ra, m_a, L_a, 0);
    stage_row(rb, m_b, L_b, 2);
    __syncthreads();
    const int v4 = pstride / 4;
    for (int i = tid; i < hb * v4; i += kThreads) {
      const int row = i / v4, c = i - row * v4;
      *reinterpret_cast<float4*>(part + ((r * a.H + h0 + row) * splits + blockIdx.z) * pstride + 4 * c) =
          *reinterpret_cast<const float4*>(ost + row * pstride + 4 * c);
    }
    return;
  }
  auto put = [&](int row, float L, int c0) {
    if (row >= hb) return;
    const float inv = 1.0f / L;
    float* out = o + (r * a.H + h0 + row) * Dh + d0;
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
      if (nt < nt_used) *reinterpret_cast<float2*>(out + 8 * nt) = make_float2(acc[nt][c0] * inv, acc[nt][c0 + 1] * inv);
  };
  put(ra, L_a, 0);
  put(rb, L_b, 2);
}

// Row r of the chunk in compact form for the attention; decode (ring given) also into the window
// ring at slot pos mod W, as window_keep_kernel writes it.
__global__ void encode_rows_kernel(const float* kv, RowFormat f, CacheRows out, const int32_t* slot,
                                   const int32_t* pos, const LayerCache* caches, int W) {
  dev::pdl_begin();
  const float* row = kv + static_cast<int64_t>(blockIdx.x) * f.d;
  dev::write_kv_row(row, f, out, blockIdx.x);
  if (caches) dev::write_kv_row(row, f, caches[slot[blockIdx.x]].window, pos[blockIdx.x] % W);
}

// The most splits of one row's keys: each split stages the row's query heads (64 KB for Flash's 64
// heads) and writes a partial of all of them (66 KB in bf16), so splits cost; but a split's key
// tiles run one after another (~5.7 µs each). The split count is then evened out over the tiles: an HCA layer
// at 1M tokens (130 key tiles) takes 65 splits of 2 tiles, where 64 left two splits 3 tiles and
// took 41 µs, 96 splits 35.6 µs, 128 splits 38 µs (scripts/experiments/attention_stream.cu).
// DSV4_ATTN_SPLITS overrides the most (1..kMaxSplits), for tuning.
int max_splits() {
  static const int n = [] {
    const char* v = std::getenv("DSV4_ATTN_SPLITS");
    return std::clamp(v ? std::atoi(v) : 96, 1, kMaxSplits);
  }();
  return n;
}

// A row's heads in groups of a block each: kM heads (all of Flash's 64), or, when the row's keys
// are few tiles (any CSA layer, the others up to ~8K tokens), as many groups of at least
// DSV4_ATTN_MIN_HEADS heads as keep the blocks (rows · groups · tiles) within one wave: a block's
// q staging and its partials' writes, most of a short attention's time, shrink with its heads,
// while the key tiles (a few, in L2) are read once per group. Long rows (split over the SMs) take
// groups of 32 heads where their splits still fit one wave: an HCA layer at 1M tokens runs 2 × 65
// blocks of 2 tiles instead of 65, 33.6 -> 31.0 µs alone with the same bits (bench/results/
// 2026-11-29-cuda-12.md); the idle row groups' skipped products gave window, CSA and HCA rows at
// 4K ~0.7 µs each.
#ifndef DSV4_ATTN_MIN_HEADS
#define DSV4_ATTN_MIN_HEADS 8
#endif
constexpr int64_t kTargetBlocks = 132;  // one block on each SM
// The splits of each row's keys for `blocks` blocks a split: enough to fill the SMs, evened out.
int split_count(int64_t blocks, const AttnShape& a) {
  const int64_t target = kTargetBlocks;
  if (blocks >= target) return 1;
  int64_t splits = std::min<int64_t>(max_splits(), (target + blocks - 1) / blocks);
  if (a.max_keys > 0) {
    const int64_t tiles = (a.max_keys + MmaAttn::kN - 1) / MmaAttn::kN;
    splits = std::min(splits, tiles);
    const int64_t per = (tiles + splits - 1) / splits;  // tiles of the longest split
    splits = (tiles + per - 1) / per;                    // as few splits as give no split more
  }
  return static_cast<int>(std::max<int64_t>(1, splits));
}
#ifndef DSV4_ATTN_WIDE
#define DSV4_ATTN_WIDE 1
#endif
#ifndef DSV4_ATTN_LONG_MIN_HEADS
#define DSV4_ATTN_LONG_MIN_HEADS 32
#endif
int head_groups(int64_t rows, const AttnShape& a) {
  int groups = a.H / std::min(MmaAttn::kM, a.H);
  if (a.max_keys <= 0) return groups;
  const int64_t tiles = std::min<int64_t>(max_splits(), (a.max_keys + MmaAttn::kN - 1) / MmaAttn::kN);
  while (a.H / groups / 2 >= DSV4_ATTN_MIN_HEADS && a.H % (2 * groups) == 0 &&
         rows * 2 * groups * tiles <= kTargetBlocks)
    groups *= 2;
  // Long rows (the splits fill the SMs): groups of at least DSV4_ATTN_LONG_MIN_HEADS heads as long as
  // their splits of even length still fit in one wave.
  while (a.H / groups / 2 >= DSV4_ATTN_LONG_MIN_HEADS && a.H % (2 * groups) == 0 &&
         rows * 2 * groups * split_count(rows * 2 * groups, a) <= kTargetBlocks)
    groups *= 2;
  return groups;
}

int mma_splits(int64_t rows, const AttnShape& a) { return split_count(rows * head_groups(rows, a), a); }
size_t mma_smem(const AttnShape& a) {
  using C = MmaAttn;
  const int ld = a.Dh + C::kPad, N = a.Dh - a.R;
  return sizeof(bf16) * (static_cast<size_t>(C::kM + C::kN) * ld + C::kM * (C::kN + C::kPad)) +
         static_cast<size_t>(C::kN) * (N + 2 * a.R) + C::kN * C::kMaxScaleBlocks + sizeof(float) * 2 * C::kMaxKH * C::kM +
         sizeof(int32_t) * (a.m == 4 ? a.K : 0);
}
// Bytes of the chunk's encoded rows in the work buffer (16-byte aligned pieces).
int64_t encoded_bytes(int64_t rows, const AttnShape& a) {
  const int64_t N = a.Dh - a.R, nblk = (N + 63) / 64;
  auto up16 = [](int64_t b) { return (b + 15) / 16 * 16; };
  return up16(rows * N) + up16(rows * nblk) + up16(rows * a.R * 2);
}

}  // namespace

CacheRows chunk_rows(float* work, int64_t rows, const AttnShape& a) {
  const int splits = mma_splits(rows, a);
  const int64_t part_floats = splits > 1 ? rows * a.H * splits * (a.Dh + 4) : 0;
  unsigned char* enc = reinterpret_cast<unsigned char*>(work + (part_floats + 3) / 4 * 4);
  const int64_t N = a.Dh - a.R, nblk = (N + 63) / 64;
  auto up16 = [](int64_t b) { return (b + 15) / 16 * 16; };
  CacheRows chunk;
  chunk.codes = enc;
  chunk.scales = enc + up16(rows * N);
  chunk.rope = reinterpret_cast<bf16*>(chunk.scales + up16(rows * nblk));
  return chunk;
}

bool mma_fits(const AttnShape& a) {
  const int N = a.Dh - a.R;
  return a.bf16_products && a.compact && a.Dh % 16 == 0 && a.Dh <= MmaAttn::kMaxDh && N % 16 == 0 && a.R % 8 == 0 &&
         (N + 63) / 64 <= MmaAttn::kMaxScaleBlocks && (a.m != 4 || a.K <= MmaAttn::kMaxK) &&
         a.H % std::min(MmaAttn::kM, a.H) == 0;
}

// The partials' o in bf16: the fast precision's products already round q and the probabilities
// to bf16, and the combine's output is rounded to e4m3 for wo_a. An HCA layer at 1M tokens writes
// 65 splits × 64 heads of them a row, then reads them back: 8.5 MB in float32, 4.3 in bf16. B=1 at
// 1M tokens 3.28 -> 3.24 ms (20 layers), 6.76 -> 6.67 ms (43); at 4K 2.86 -> 2.85, 5.86 -> 5.82
// (bench/results/2026-11-30-cuda-20.md). DSV4_ATTN_PART_F32=1 keeps float32 (side-by-side runs).
static bool bf16_partials() {
  static const bool on = [] {
    const char* v = std::getenv("DSV4_ATTN_PART_F32");
    return !(v && std::string(v) == "1");
  }();
  return on;
}

int64_t mma_work(int64_t rows, const AttnShape& a) {
  const int splits = mma_splits(rows, a);
  return (splits > 1 ? rows * a.H * splits * (a.Dh + 4) : 0) + (encoded_bytes(rows, a) + 15) / 16 * 4;
}

void mma_attention(const float* q, const float* kv, const float* sink, const AttnShape& a, const int32_t* slot,
                   const int32_t* pos, int64_t rows, const SeqRows* seqs, const LayerCache* caches,
                   const int32_t* selected, float* o, float* work, cudaStream_t s, const AttnOutput& out) {
  DSV4_CHECK(work, "attention", "the tensor-core attention needs its work buffer");
  const int splits = mma_splits(rows, a);
  // The chunk's rows, encoded as the caches keep them, after the partials (16-byte aligned).
  const CacheRows chunk = chunk_rows(work, rows, a);
  if (!out.chunk_encoded)
    launch("encode_rows_kernel", encode_rows_kernel, static_cast<unsigned>(rows), 128, 0, s, kv,
           RowFormat{a.Dh, a.R, true, false}, chunk, slot, pos, out.one_row_each ? caches : nullptr, a.W);
  const size_t smem = mma_smem(a);
  const int groups = head_groups(rows, a), hb = a.H / groups, parts = mma_parts(hb, a.Dh);
  // Blocks of 32 heads (long rows) take 16 warps (see the top of the file).
  const bool wide = DSV4_ATTN_WIDE && hb == 32 && a.Dh % 64 == 0;
  auto kernel = wide         ? sparse_attention_mma_kernel<8, MmaAttn::kWideWarps>
                : parts == 8 ? sparse_attention_mma_kernel<8>
                : parts == 4 ? sparse_attention_mma_kernel<4>
                             : sparse_attention_mma_kernel<2>;
  const int threads = 32 * (wide ? MmaAttn::kWideWarps : MmaAttn::kWarps);
  static size_t raised[4] = {};
  size_t& r = raised[wide ? 3 : parts == 8 ? 0 : parts == 4 ? 1 : 2];
  if (smem > 48 * 1024 && smem > r) {
    DSV4_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    r = smem;
  }
  dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(groups), static_cast<unsigned>(splits));
  const bool bf16_part = bf16_partials() && a.Dh % 8 == 0;
  launch("sparse_attention_mma_kernel", kernel, grid, threads, smem, s, q, chunk, sink, a, slot, pos, seqs,
         caches, selected, o, splits, work, bf16_part);
  if (splits > 1) launch_combine(work, sink, rows, a.H, a.Dh, a.R, splits, pos, out, o, s, bf16_part);
  else output_step(rows, a.H, a.Dh, a.R, pos, out, o, s);
}

}  // namespace dsv4::cuda::attn
