// Device helpers shared by the CUDA ops: reductions, the number formats of the
// quantization simulation (bit-for-bit the CPU rules of core/dtype.cpp), RoPE pairs and
// cache-row encoding. Header-only, included by src/ops/*.cu.
#pragma once
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include "ops/cuda_ops.h"

namespace dsv4::cuda::dev {

constexpr int kWarp = 32;

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
// i / n and i % n along i = i0, i0 + step, i0 + 2·step, ... (n > 0): one division at the start,
// then a carry per step. A division by a runtime n costs about twenty instructions, which in the
// latency-bound kernels of a decode step (one to a few blocks) is time on the critical path.
struct DivSeq {
  int q, r, dq, dr, n;
  __device__ __forceinline__ DivSeq(int i0, int step, int n_)
      : q(i0 / n_), r(i0 % n_), dq(step / n_), dr(step % n_), n(n_) {}
  __device__ __forceinline__ void next() {
    q += dq;
    r += dr;
    if (r >= n) r -= n, ++q;
  }
};

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (any blockDim multiple of 32, ≤ 1024); every thread gets the result.
// `scratch` holds 33 floats of shared memory.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float t = lane < nwarps ? scratch[lane] : 0.0f;
    t = warp_sum(t);
    if (lane == 0) scratch[32] = t;
  }
  __syncthreads();
  return scratch[32];
}
__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float t = lane < nwarps ? scratch[lane] : -INFINITY;
    t = warp_max(t);
    if (lane == 0) scratch[32] = t;
  }
  __syncthreads();
  return scratch[32];
}

// Order-preserving key of a float (larger float -> larger key; -0 as +0): the top-k's radix keys.
__device__ __forceinline__ uint32_t order_key(float v) {
  const uint32_t u = __float_as_uint(v == 0.0f ? 0.0f : v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// A bf16 pair (the low half first) as two floats: exact, a shift and a mask.
__device__ __forceinline__ float2 bf16x2_to_float2(uint32_t w) {
  return make_float2(__uint_as_float(w << 16), __uint_as_float(w & 0xffff0000u));
}

// Nearest value with `mbits` mantissa bits and smallest normal exponent `emin`, ties to even
// (round_minifloat of core/dtype.cpp): the software rule the GPU test of e4m3x2_rn checks the
// hardware conversion against.
__device__ __forceinline__ float round_minifloat(float v, int mbits, int emin) {
  if (v == 0.0f || !isfinite(v)) return v;
  int e;
  frexpf(v, &e);
  const int exponent = max(e - 1, emin);
  const float step = ldexpf(1.0f, exponent - mbits);
  return rintf(v / step) * step;
}
__device__ __forceinline__ float round_e4m3(float v) { return round_minifloat(v, 3, -6); }

// 2^ceil(log2(x)) from the float32 bits (pow2_ceil of core/dtype.cpp), as an exponent k.
__device__ __forceinline__ int pow2_ceil_exp(float x) {
  const uint32_t u = __float_as_uint(x);
  int e = static_cast<int>((u >> 23) & 0xff) - 127;
  if (u & 0x7fffffu) e += 1;
  return e;
}

// FP8 simulation scale exponent of a block with absolute maximum amax (model.md §8).
__device__ __forceinline__ int fp8_scale_exp(float amax) { return pow2_ceil_exp(fmaxf(amax, 1e-4f) * (1.0f / 448.0f)); }
__device__ __forceinline__ int fp4_scale_exp(float amax) {
  return pow2_ceil_exp(fmaxf(amax, 6.0f * 1.17549435e-38f) * (1.0f / 6.0f));
}
// Two values rounded to e4m3 codes (lo in the low byte): to nearest, ties to even, subnormals
// kept, beyond ±448 to ±448, the sign of zero kept: the hardware conversion, bit for bit the
// software rule e4m3_code(round_e4m3(clamp(v, ±448))) for every finite v (the GPU test sweeps
// every float of magnitude 2^-11 .. 2^10 against it). One instruction for two values, where the
// software rule costs ~80 a value: the latency-bound kernels of a decode step round often.
__device__ __forceinline__ uint16_t e4m3x2_rn(float lo, float hi) {
  uint16_t d;
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(d) : "f"(hi), "f"(lo));
  return d;
}
__device__ __forceinline__ uint8_t e4m3_rn(float v) { return static_cast<uint8_t>(e4m3x2_rn(v, 0.0f)); }
// The FP8 simulation of x in a block of scale s (a power of two): round_e4m3(clamp(x/s)) · s.
__device__ __forceinline__ float fp8_sim_value(float x, float s) {
  const __half_raw h = __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(e4m3_rn(x * __frcp_rn(s))), __NV_E4M3);
  return __half2float(__half(h)) * s;
}
// x / s on the e2m1 grid, times s (s a power of two): core/dtype.cpp's round_e2m1 of the clamped
// quotient without its frexpf, ldexpf and divisions. x · (1/s) is x / s (1/s is exact), and on
// [0, 2), [2, 4), [4, 6] the grid's step is 0.5, 1, 2: rintf (ties to even) of the quotient by the
// step, as round_minifloat computes it. The same bits (the GPU tests compare with the CPU at
// tolerance 0, every tie included); several times fewer instructions than that general rounding.
__device__ __forceinline__ float fp4_sim_value(float x, float s) {
  const float v = fminf(fmaxf(x * __frcp_rn(s), -6.0f), 6.0f), a = fabsf(v);
  const float r = a < 2.0f ? rintf(a * 2.0f) * 0.5f : a < 4.0f ? rintf(a) : rintf(a * 0.5f) * 2.0f;
  return copysignf(r, v) * s;
}

// Codes of values already on the grid (|r| ≤ 448 resp. ≤ 6, r = round_*(r)).
__device__ __forceinline__ uint8_t e4m3_code(float r) {
  const uint8_t sign = signbit(r) ? 0x80 : 0;
  const float a = fabsf(r);
  if (a == 0.0f) return sign;
  if (a < 0.015625f) return sign | static_cast<uint8_t>(a * 512.0f);  // subnormal: steps of 2^-9
  int e;
  const float m = frexpf(a, &e);  // a = m · 2^e, m in [0.5, 1)
  return sign | static_cast<uint8_t>((e - 1 + 7) << 3) | static_cast<uint8_t>((m * 2.0f - 1.0f) * 8.0f);
}
// Decoding, on the hot paths of attention and the indexer: the hardware conversion (exact).
__device__ __forceinline__ float e4m3_value(uint8_t b) {
  const __half_raw h = __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(b), __NV_E4M3);
  return __half2float(__half(h));
}
// 16 bytes of e4m3 codes -> 16 floats (the hardware conversion, exact).
__device__ __forceinline__ void e4m3x16(const uint4& v, float* out) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const __half2_raw r = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(w[i] >> (16 * h)), __NV_E4M3);
      const float2 f = __half22float2(__half2(r));
      out[4 * i + 2 * h] = f.x;
      out[4 * i + 2 * h + 1] = f.y;
    }
  }
}
__device__ __forceinline__ uint8_t e2m1_code(float r) {
  const uint8_t sign = signbit(r) ? 8 : 0;
  const float a = fabsf(r);
  // grid {0, 0.5, 1, 1.5, 2, 3, 4, 6} -> index 0..7
  const uint8_t idx = a < 2.0f ? static_cast<uint8_t>(a * 2.0f) : a < 4.0f ? static_cast<uint8_t>(a + 2.0f) : a < 6.0f ? 6 : 7;
  return sign | idx;
}
__device__ __forceinline__ float e2m1_value(uint8_t nib) {
  const int i = nib & 7;
  const float v = i < 4 ? 0.5f * i : i == 4 ? 2.0f : i == 5 ? 3.0f : i == 6 ? 4.0f : 6.0f;
  return (nib & 8) ? -v : v;
}
__device__ __forceinline__ float e8m0_value(uint8_t b) {
  return b ? __uint_as_float(static_cast<uint32_t>(b) << 23) : 5.877471754111438e-39f;  // 2^(b − 127)
}

// One warp applies the FP8 (or FP4) simulation of model.md §8 to the values x[b0, b1) of one
// block: amax, power-of-two scale, rounding in place (every kernel that simulates uses this).
template <bool kFp4>
__device__ __forceinline__ void sim_block(float* x, int64_t b0, int64_t b1, int lane) {
  float amax = 0.0f;
  for (int64_t i = b0 + lane; i < b1; i += 32) amax = fmaxf(amax, fabsf(x[i]));
  amax = warp_max(amax);
  const float s = ldexpf(1.0f, kFp4 ? fp4_scale_exp(amax) : fp8_scale_exp(amax));
  for (int64_t i = b0 + lane; i < b1; i += 32) x[i] = kFp4 ? fp4_sim_value(x[i], s) : fp8_sim_value(x[i], s);
}

// One warp rounds one 1×128 block to e4m3 with a power-of-two scale (the FP8 GEMM input rule of
// quantize_fp8_1x128_cuda): v holds this lane's 4 consecutive values, the codes go to q[4·lane ..]
// of the block; returns the scale. Every kernel that quantizes uses this, so they agree bit for bit.
__device__ __forceinline__ float quantize_e4m3_block128(const float4 v, uint8_t* q, int lane) {
  float amax = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
  amax = warp_max(amax);
  const int k = fp8_scale_exp(amax);
  const float inv = ldexpf(1.0f, -k);  // exact: x / s = x · 2^-k
  const uint32_t lo = e4m3x2_rn(v.x * inv, v.y * inv), hi = e4m3x2_rn(v.z * inv, v.w * inv);
  *reinterpret_cast<uint32_t*>(q + lane * 4) = lo | hi << 16;
  return ldexpf(1.0f, k);
}

// The fast Walsh–Hadamard transform of v [d] in shared memory (d a power of two), unscaled: the
// butterfly stages in the CPU's order (h = 1, 2, 4, ...), the block's threads splitting each
// stage, a barrier after each (so after the last too).
__device__ __forceinline__ void hadamard_butterflies(float* v, int d) {
  for (int h = 1; h < d; h *= 2) {
    for (int t = threadIdx.x; t < d / 2; t += blockDim.x) {
      const int j = (t / h) * 2 * h + (t % h);
      const float a = v[j], b = v[j + h];
      v[j] = a + b;
      v[j + h] = a - b;
    }
    __syncthreads();
  }
}

// sin and cos of a RoPE angle θ (a float32), rounded to float32 from double precision. sincosf
// leaves its fast path beyond |θ| ≈ 10^5 (the high-frequency pairs past position ~10^5): its
// Payne–Hanek reduction cost a 1M-token decode step ~5 µs in every kernel that rotates (one warp
// computing the angles while the block waits). The double-precision path reduces exactly far
// beyond 10^6, and the rounding of its result to float32 is the correctly rounded sin and cos of
// θ nearly always, as the CPU's sinf and cosf are. Every kernel that rotates uses this.
__device__ __forceinline__ void rope_sincos(float theta, float* sn, float* cs) {
  double s, c;
  sincos(static_cast<double>(theta), &s, &c);
  *sn = static_cast<float>(s);
  *cs = static_cast<float>(c);
}

// RoPE on one pair (re, im) with frequency f at position pos: θ = fp32(fp32(pos) · f).
// The rotation of one pair (re, im) by the angle whose cos and sin are cs, sn. One explicit fused
// multiply-add per output, so that every kernel that rotates gets the same bits whatever the
// compiler would contract (the GPU fixtures agree best this way; the CPU rounds both products).
__device__ __forceinline__ void rope_rotate(float& re, float& im, float cs, float sn) {
  const float a = re, b = im;
  re = __fmaf_rn(a, cs, -__fmul_rn(b, sn));
  im = __fmaf_rn(a, sn, __fmul_rn(b, cs));
}
// The sin and cos of the angle θ = fp32(fp32(pos) · f): every rotating kernel's, so that each can
// make it where it likes (before a PDL wait: the double-precision sincos costs ~600 cycles).
struct RopeAngle {
  float sn = 0.0f, cs = 1.0f;
};
__device__ __forceinline__ RopeAngle rope_angle(float f, int pos) {
  RopeAngle a;
  rope_sincos(__fmul_rn(static_cast<float>(pos), f), &a.sn, &a.cs);
  return a;
}
__device__ __forceinline__ void rope_pair(float& re, float& im, float f, int pos, bool inverse) {
  const RopeAngle a = rope_angle(f, pos);
  rope_rotate(re, im, a.cs, inverse ? -a.sn : a.sn);
}
// A block's RoPE of the R / 2 pairs (v[2i], v[2i + 1]) at pos, thread t taking pairs t, t + blockDim.x,
// ...: rope_pair's bits, with the angle of the thread's first pair made ahead (rope_first_angle).
__device__ __forceinline__ RopeAngle rope_first_angle(const float* freqs, int R, int pos) {
  return static_cast<int>(threadIdx.x) < R / 2 ? rope_angle(freqs[threadIdx.x], pos) : RopeAngle{};
}
__device__ __forceinline__ void rope_pairs(float* v, const float* freqs, int R, int pos, RopeAngle first) {
  for (int i = threadIdx.x; i < R / 2; i += blockDim.x) {
    if (i == static_cast<int>(threadIdx.x)) rope_rotate(v[2 * i], v[2 * i + 1], first.cs, first.sn);
    else rope_pair(v[2 * i], v[2 * i + 1], freqs[i], pos, false);
  }
}

// One value of cache row `row`, dim `i` (format f).
__device__ __forceinline__ float cache_value(const CacheRows& c, const RowFormat& f, int64_t row, int i) {
  if (!f.compact) return c.f32[row * f.d + i];
  if (f.indexer) {
    const uint8_t byte = c.codes[row * (f.d / 2) + i / 2];
    return e2m1_value((i & 1) ? byte >> 4 : byte & 0xf) * e8m0_value(c.scales[row * (f.d / 32) + i / 32]);
  }
  const int N = f.d - f.R;
  if (i >= N) return __bfloat162float(c.rope[row * f.R + (i - N)]);
  return e4m3_value(c.codes[row * N + i]) * e8m0_value(c.scales[row * ((N + 63) / 64) + i / 64]);
}

// Writes kv row `row` of a cache (float32 or compact) from its values e: the nope dims are
// FP8-simulated here in blocks of 64 (the identity on values that already are: a recomputed
// scale can halve, the values stay), the RoPE dims copied (compact: rounded to bf16).
__device__ __forceinline__ void write_kv_row(const float* e, const RowFormat& f, const CacheRows& c, int64_t row) {
  const int N = f.d - f.R, nblocks = (N + 63) / 64;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  for (int b = warp; b < nblocks; b += nwarps) {
    const int b0 = b * 64, b1 = min(N, b0 + 64);
    float amax = 0.0f;
    for (int i = b0 + lane; i < b1; i += 32) amax = fmaxf(amax, fabsf(e[i]));
    amax = warp_max(amax);
    const int k = fp8_scale_exp(amax);
    const float s = ldexpf(1.0f, k), inv = ldexpf(1.0f, -k);
    for (int i = b0 + lane; i < b1; i += 32) {
      if (f.compact) c.codes[row * N + i] = e4m3_rn(e[i] * inv);  // the code of fp8_sim_value(e[i], s)
      else c.f32[row * f.d + i] = fp8_sim_value(e[i], s);
    }
    if (f.compact && lane == 0) c.scales[row * nblocks + b] = static_cast<uint8_t>(k + 127);
  }
  for (int i = N + threadIdx.x; i < f.d; i += blockDim.x) {
    if (f.compact) c.rope[row * f.R + (i - N)] = __float2bfloat16_rn(e[i]);
    else c.f32[row * f.d + i] = e[i];
  }
}

}  // namespace dsv4::cuda::dev
