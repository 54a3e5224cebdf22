// Every CUDA op against its CPU oracle (src/ops), one parametrized test: random inputs, the
// same inputs to both, and the comparison rule of gpu_test_util.h (products, routing and the
// experts are in test_ops_products.cpp, mHC in test_ops_mhc.cpp). Ops whose outputs are
// exactly representable and computed by the same sequence of float operations (the
// quantization simulations, the Hadamard butterfly, the top-k) must agree bit for bit; ops
// with a quantization after a reduction may flip a rounding in a few elements (≤ 1%).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <numeric>
#include <set>

#include "core/dtype.h"
#include "cuda/blas.h"
#include "op_cases.h"
#include "ops/attention.h"
#include "ops/compressor.h"
#include "ops/cuda_ops.h"
#include "ops/indexer.h"
#include "ops/linear.h"
#include "ops/moe.h"
#include "ops/quant.h"
#include "ops/rmsnorm.h"
#include "ops/rope.h"

using namespace dsv4;
using namespace dsv4::cuda;
using namespace dsv4::testing_gpu;

namespace {

// ---- host encoders of the compact cache rows (the CPU rules of core/dtype) ------------------------
int exp_of_pow2(float s) {
  int e;
  std::frexp(s, &e);
  return e - 1;
}
// kv row of d values (first N = d − R FP8-simulated in blocks of 64): codes, scales, bf16 rope.
void encode_kv_row(const float* v, int d, int R, uint8_t* codes, uint8_t* scales, uint16_t* rope) {
  const int N = d - R;
  for (int b = 0; b * 64 < N; ++b) {
    float amax = 1e-4f;
    for (int i = b * 64; i < std::min(N, b * 64 + 64); ++i) amax = std::max(amax, std::fabs(v[i]));
    const float s = pow2_ceil(amax * (1.0f / 448.0f));
    scales[b] = static_cast<uint8_t>(exp_of_pow2(s) + 127);
    for (int i = b * 64; i < std::min(N, b * 64 + 64); ++i) codes[i] = f32_to_e4m3(v[i] / s);
  }
  for (int i = 0; i < R; ++i) rope[i] = f32_to_bf16(v[N + i]);
}
float decode_kv(const uint8_t* codes, const uint8_t* scales, const uint16_t* rope, int d, int R, int i) {
  const int N = d - R;
  return i < N ? e4m3_to_f32(codes[i]) * e8m0_to_f32(scales[i / 64]) : bf16_to_f32(rope[i - N]);
}
void encode_idx_row(const float* v, int d, uint8_t* codes, uint8_t* scales) {
  for (int b = 0; b < d / 32; ++b) {
    float amax = 6.0f * std::ldexp(1.0f, -126);
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(v[b * 32 + i]));
    const float s = pow2_ceil(amax * (1.0f / 6.0f));
    scales[b] = static_cast<uint8_t>(exp_of_pow2(s) + 127);
    for (int i = 0; i < 32; i += 2)
      codes[(b * 32 + i) / 2] = static_cast<uint8_t>(f32_to_e2m1(v[b * 32 + i] / s) | (f32_to_e2m1(v[b * 32 + i + 1] / s) << 4));
  }
}
float decode_idx(const uint8_t* codes, const uint8_t* scales, int i) {
  const uint8_t byte = codes[i / 2];
  return e2m1_to_f32((i & 1) ? byte >> 4 : byte & 0xf) * e8m0_to_f32(scales[i / 32]);
}

// Device rows of a cache in either form, built from float32 values (already on the grid).
struct HostRows {
  int rows = 0, d = 0, R = 0;
  bool compact = false, indexer = false;
  DeviceArray<float> f32;
  DeviceArray<uint8_t> codes, scales;
  DeviceArray<bf16> rope;
  CacheRows view() {
    return {f32.get(), codes.get(), scales.get(), rope.get()};
  }
};
HostRows make_rows(const std::vector<float>& v, int rows, int d, int R, bool compact, bool indexer) {
  HostRows h;
  h.rows = rows, h.d = d, h.R = R, h.compact = compact, h.indexer = indexer;
  if (!compact) {
    h.f32 = dev(v);
    return h;
  }
  if (indexer) {
    std::vector<uint8_t> c(rows * d / 2), s(rows * d / 32);
    for (int r = 0; r < rows; ++r) encode_idx_row(&v[r * d], d, &c[r * d / 2], &s[r * d / 32]);
    h.codes = dev(c);
    h.scales = dev(s);
    return h;
  }
  const int N = d - R, nb = (N + 63) / 64;
  std::vector<uint8_t> c(rows * N), s(rows * nb);
  std::vector<uint16_t> rp(rows * R);
  for (int r = 0; r < rows; ++r) encode_kv_row(&v[r * d], d, R, &c[r * N], &s[r * nb], &rp[r * R]);
  h.codes = dev(c);
  h.scales = dev(s);
  h.rope = DeviceArray<bf16>(rows * R);
  DSV4_CUDA_CHECK(cudaMemcpy(h.rope.get(), rp.data(), rp.size() * 2, cudaMemcpyHostToDevice));
  return h;
}
// The float32 values a cache row holds (what the CPU reference must attend).
std::vector<float> cache_values(const std::vector<float>& v, int rows, int d, int R, bool compact, bool indexer) {
  if (!compact) return v;
  std::vector<float> out(v.size());
  if (indexer) {
    std::vector<uint8_t> c(d / 2), s(d / 32);
    for (int r = 0; r < rows; ++r) {
      encode_idx_row(&v[r * d], d, c.data(), s.data());
      for (int i = 0; i < d; ++i) out[r * d + i] = decode_idx(c.data(), s.data(), i);
    }
    return out;
  }
  const int N = d - R;
  std::vector<uint8_t> c(N), s((N + 63) / 64);
  std::vector<uint16_t> rp(R);
  for (int r = 0; r < rows; ++r) {
    encode_kv_row(&v[r * d], d, R, c.data(), s.data(), rp.data());
    for (int i = 0; i < d; ++i) out[r * d + i] = decode_kv(c.data(), s.data(), rp.data(), d, R, i);
  }
  return out;
}
std::vector<float> download_rows(HostRows& h, int rows) {
  std::vector<float> out(static_cast<size_t>(rows) * h.d);
  if (!h.compact) {
    std::vector<float> all = host(h.f32);
    std::copy(all.begin(), all.begin() + out.size(), out.begin());
    return out;
  }
  std::vector<uint8_t> c = host(h.codes), s = host(h.scales);
  if (h.indexer) {
    for (int r = 0; r < rows; ++r)
      for (int i = 0; i < h.d; ++i) out[r * h.d + i] = decode_idx(&c[r * h.d / 2], &s[r * h.d / 32], i);
    return out;
  }
  std::vector<uint16_t> rp(h.rope.size());
  DSV4_CUDA_CHECK(cudaMemcpy(rp.data(), h.rope.get(), rp.size() * 2, cudaMemcpyDeviceToHost));
  const int N = h.d - h.R, nb = (N + 63) / 64;
  for (int r = 0; r < rows; ++r)
    for (int i = 0; i < h.d; ++i) out[r * h.d + i] = decode_kv(&c[r * N], &s[r * nb], &rp[r * h.R], h.d, h.R, i);
  return out;
}
std::vector<float> fp8_sim_rows(std::vector<float> v, int rows, int d, int N) {
  for (int r = 0; r < rows; ++r) ops::fp8_sim(&v[r * d], N, 64);
  return v;
}

// ---- the cases -------------------------------------------------------------------------------------

std::vector<Check> op_rmsnorm(std::mt19937& rng) {
  std::vector<Check> out;
  for (auto [T, D, weighted] : {std::tuple{37, 4096, true}, std::tuple{512, 512, false}}) {
    std::vector<float> x = randn(rng, T * D, 3.0f), w = randn(rng, D), ref(T * D);
    ops::rmsnorm(x.data(), T, D, weighted ? w.data() : nullptr, kEps, ref.data());
    auto dx = dev(x), dw = dev(w);
    DeviceArray<float> dy(T * D);
    rmsnorm_cuda(dx.get(), T, D, weighted ? dw.get() : nullptr, kEps, dy.get(), 0);
    out.push_back(check(str("D=", D), host(dy), ref, f32_rule(D)));
    // With the FP8 output fused in (in place, as the query's low rank uses it): the same y, and
    // the codes and scales quantize_fp8_1x128_cuda makes of it.
    DeviceArray<uint8_t> q1(T * D), q2(T * D);
    DeviceArray<float> s1(T * D / 128), s2(T * D / 128);
    auto dz = dev(x);
    rmsnorm_cuda(dz.get(), T, D, weighted ? dw.get() : nullptr, kEps, dz.get(), 0, q1.get(), s1.get());
    quantize_fp8_1x128_cuda(dy.get(), T, D, q2.get(), s2.get(), T, 0);
    out.push_back(check(str("D=", D, " + fp8 y"), host(dz), host(dy), 0));
    out.push_back(check(str("D=", D, " + fp8 codes"), as_float(host(q1)), as_float(host(q2)), 0));
    out.push_back(check(str("D=", D, " + fp8 scales"), host(s1), host(s2), 0));
  }
  return out;
}

std::vector<Check> op_rope(std::mt19937& rng) {
  const int rows = 5, heads = 8, stride = 576, offset = 448, R = 64, ld = heads * stride;
  const std::vector<float> freqs = ops::rope_frequencies(R, 160000.0f, {16.0f, 32.0f, 1.0f, 65536});
  const std::vector<int32_t> pos = {0, 1, 4095, 65537, 1000000};
  std::vector<Check> out;
  for (bool inverse : {false, true}) {
    std::vector<float> x = randn(rng, rows * ld), ref = x;
    for (int r = 0; r < rows; ++r) ops::rope_apply_heads(&ref[r * ld], heads, stride, offset, R, freqs.data(), pos[r], inverse);
    auto dx = dev(x), df = dev(freqs);
    auto dp = dev(pos);
    rope_cuda(dx.get(), rows, heads, ld, stride, offset, R, df.get(), dp.get(), inverse, 0);
    out.push_back(check(inverse ? "inverse" : "forward", host(dx), ref, f32_rule(1)));
  }
  return out;
}

// The fused rmsnorm + RoPE (+ FP8 simulation + bf16 RoPE dims) equals the separate kernels bit
// for bit: the query form (several heads, no weight) and the window key form.
std::vector<Check> op_rmsnorm_rope(std::mt19937& rng) {
  const int rows = 5, R = 64;
  const std::vector<float> freqs = ops::rope_frequencies(R, 160000.0f, {16.0f, 32.0f, 1.0f, 65536});
  const std::vector<int32_t> pos = {0, 1, 4095, 65537, 1000000};
  auto df = dev(freqs);
  auto dp = dev(pos);
  std::vector<Check> out;
  for (int D : {512, 96})
    for (bool key : {false, true}) {
      const int heads = key ? 1 : 4, N = D - R;
      std::vector<float> x = randn(rng, rows * heads * D, 3.0f), w = randn(rng, D);
      auto dw = dev(w);
      auto a = dev(x), b = dev(x);
      const float* wp = key ? dw.get() : nullptr;
      rmsnorm_cuda(a.get(), rows * heads, D, wp, kEps, a.get(), 0);
      rope_cuda(a.get(), rows, heads, heads * D, D, N, R, df.get(), dp.get(), false, 0);
      if (key) {
        fp8_sim_cuda(a.get(), rows, N, D, 64, 0);
        round_rope_bf16_cuda(a.get(), rows, D, R, 0);
      }
      rmsnorm_rope_cuda(b.get(), rows, heads, D, wp, kEps, R, df.get(), dp.get(), key ? 64 : 0, key, 0);
      out.push_back(check(str(key ? "window key" : "query heads", " D=", D), host(b), host(a), 0));
    }
  // Both forms in one launch (the decode step's query heads and window key) = one launch each.
  const int D = 512, H = 4;
  std::vector<float> q = randn(rng, rows * H * D, 3.0f), kv = randn(rng, rows * D, 3.0f), w = randn(rng, D);
  auto dw = dev(w);
  auto q1 = dev(q), q2 = dev(q), k1 = dev(kv), k2 = dev(kv);
  rmsnorm_rope_cuda(q1.get(), rows, H, D, nullptr, kEps, R, df.get(), dp.get(), 0, false, 0);
  rmsnorm_rope_cuda(k1.get(), rows, 1, D, dw.get(), kEps, R, df.get(), dp.get(), 64, true, 0);
  rmsnorm_rope2_cuda(RmsRopeRows{q2.get(), rows, H, D, nullptr, 0, false}, RmsRopeRows{k2.get(), rows, 1, D, dw.get(), 64, true},
                     kEps, R, df.get(), dp.get(), 0);
  out.push_back(check("two in one launch: query", host(q2), host(q1), 0));
  out.push_back(check("two in one launch: key", host(k2), host(k1), 0));
  return out;
}

std::vector<Check> op_quant(std::mt19937& rng) {
  std::vector<Check> out;
  {  // The indexer's query heads in one launch = RoPE, Hadamard and FP4 simulation one after another
    const int rows = 3, heads = 64, d = 128, R = 64;
    const std::vector<float> freqs = ops::rope_frequencies(R, 160000.0f, {16.0f, 32.0f, 1.0f, 65536});
    const std::vector<int32_t> pos = {0, 4095, 1000000};
    auto df = dev(freqs);
    auto dp = dev(pos);
    const std::vector<float> x = randn(rng, rows * heads * d, 2.0f);
    auto a = dev(x), b = dev(x);
    rope_cuda(a.get(), rows, heads, heads * d, d, d - R, R, df.get(), dp.get(), false, 0);
    hadamard_cuda(a.get(), rows * heads, d, 0);
    fp4_sim_cuda(a.get(), rows, heads * d, heads * d, 0);
    indexer_query_cuda(b.get(), rows, heads, d, R, df.get(), dp.get(), 0);
    out.push_back(check("indexer query heads", host(b), host(a), 0));
  }
  {  // FP8 simulation: rows of very different magnitudes (subnormal codes, the 1e-4 floor, saturation)
    const int rows = 9, n = 448, ld = 512;
    std::vector<float> x = randn(rng, rows * ld);
    for (int r = 0; r < rows; ++r)
      for (int i = 0; i < ld; ++i) x[r * ld + i] *= std::pow(10.0f, static_cast<float>(r - 5));
    std::vector<float> ref = x;
    for (int r = 0; r < rows; ++r) ops::fp8_sim(&ref[r * ld], n, 64);
    auto dx = dev(x);
    fp8_sim_cuda(dx.get(), rows, n, ld, 64, 0);
    out.push_back(check("fp8_sim", host(dx), ref, 0));
  }
  {
    const int rows = 3, n = 4096;
    std::vector<float> x = randn(rng, rows * n), ref = x;
    for (int r = 0; r < rows; ++r) ops::fp4_sim(&ref[r * n], n, 32);
    auto dx = dev(x);
    fp4_sim_cuda(dx.get(), rows, n, n, 0);
    out.push_back(check("fp4_sim", host(dx), ref, 0));
  }
  {
    const int count = 64, d = 128;
    std::vector<float> x = randn(rng, count * d), ref = x;
    for (int c = 0; c < count; ++c) ops::hadamard(&ref[c * d], d);
    auto dx = dev(x);
    hadamard_cuda(dx.get(), count, d, 0);
    out.push_back(check("hadamard", host(dx), ref, 0));
  }
  {  // GEMM-input rounding of the fast path = FP8 simulation in blocks of 128
    const int M = 5, K = 1024;
    std::vector<float> x = randn(rng, M * K, 0.1f), ref = x;
    for (int r = 0; r < M; ++r) ops::fp8_sim(&ref[r * K], K, 128);
    auto dx = dev(x);
    DeviceArray<uint8_t> q(M * K);
    DeviceArray<float> s(M * K / 128);
    quantize_fp8_1x128_cuda(dx.get(), M, K, q.get(), s.get(), M, 0);
    std::vector<uint8_t> qh = host(q);
    std::vector<float> sh = host(s), got(M * K);
    for (int r = 0; r < M; ++r)
      for (int k = 0; k < K; ++k) got[r * K + k] = e4m3_to_f32(qh[r * K + k]) * sh[(k / 128) * M + r];
    out.push_back(check("quantize_fp8_1x128", got, ref, 0));
  }
  return out;
}

// Two chunks of one sequence through compress_entries + compressor_keep (ape added as they read z), against the
// CPU pooling, norm, RoPE and quantization of every entry (as attention_layer.cpp does them).
std::vector<Check> op_compressor(std::mt19937& rng) {
  struct Shape_ { int m, d; bool indexer, compact; };
  const int R = 64, T1 = 13, T2 = 22, T = T1 + T2;
  const std::vector<float> freqs = ops::rope_frequencies(R, 160000.0f, {16.0f, 32.0f, 1.0f, 65536});
  std::vector<Check> out;
  for (Shape_ sh : {Shape_{4, 512, false, false}, Shape_{4, 512, false, true}, Shape_{4, 128, true, false},
                    Shape_{4, 128, true, true}, Shape_{16, 512, false, true}}) {
    const int m = sh.m, d = sh.d, width = (m == 4 ? 2 : 1) * d, ring_rows = m == 4 ? 8 : m, count = T / m;
    std::vector<float> u = randn(rng, T * width), z = randn(rng, T * width), ape = randn(rng, m * width, 0.5f);
    std::vector<float> norm = randn(rng, d);
    // CPU
    std::vector<float> zf = z, ref(count * d);
    for (int t = 0; t < T; ++t)
      for (int f = 0; f < width; ++f) zf[t * width + f] += ape[(t % m) * width + f];
    for (int i = 0; i < count; ++i) {
      float* e = &ref[i * d];
      const bool prev = m == 4 && i > 0;
      ops::compress_pool(&u[i * m * width], &zf[i * m * width], prev ? &u[(i - 1) * m * width] : nullptr,
                         prev ? &zf[(i - 1) * m * width] : nullptr, m, d, m == 4, e);
      ops::rmsnorm(e, 1, d, norm.data(), kEps, e);
      ops::rope_apply(e + d - R, R, freqs.data(), static_cast<int64_t>(i) * m);
      if (sh.indexer) {
        ops::hadamard(e, d);
        ops::fp4_sim(e, d, 32);
      } else {
        ops::fp8_sim(e, d - R, 64);
        if (sh.compact)  // the compact cache keeps the RoPE dims in bf16
          for (int j = d - R; j < d; ++j) e[j] = bf16_to_f32(f32_to_bf16(e[j]));
      }
    }
    // GPU: a sequence with an entry cache and the pending ring
    HostRows entries = make_rows(std::vector<float>(count * d, 0.0f), count, d, R, sh.compact, sh.indexer);
    DeviceArray<float> ru(ring_rows * width), rz(ring_rows * width);
    LayerCache lc;
    (sh.indexer ? lc.idx_entries : lc.entries) = entries.view();
    (sh.indexer ? lc.idx_u : lc.comp_u) = ru.get();
    (sh.indexer ? lc.idx_z : lc.comp_z) = rz.get();
    DeviceArray<LayerCache> dlc(std::vector<LayerCache>{lc});
    auto dfreqs = dev(freqs), dape = dev(ape), dnorm = dev(norm);
    int p0 = 0;
    for (int Tc : {T1, T2}) {
      std::vector<float> uc(u.begin() + p0 * width, u.begin() + (p0 + Tc) * width);
      std::vector<float> zc(z.begin() + p0 * width, z.begin() + (p0 + Tc) * width);
      std::vector<CompressJob> jobs;
      for (int i = p0 / m; i < (p0 + Tc) / m; ++i) jobs.push_back({0, i});
      auto du = dev(uc), dz = dev(zc);
      DeviceArray<SeqRows> dseq(std::vector<SeqRows>{{0, Tc, p0}});
      DeviceArray<CompressJob> djobs(jobs.empty() ? std::vector<CompressJob>{{0, 0}} : jobs);
      DeviceArray<int32_t> dnjobs(std::vector<int32_t>{static_cast<int32_t>(jobs.size())});
      compress_entries_cuda(du.get(), dz.get(), dape.get(), m, RowFormat{d, R, sh.compact, sh.indexer}, dnorm.get(),
                            kEps, dfreqs.get(), djobs.get(), dnjobs.get(), static_cast<int>(jobs.size()) + 1, dseq.get(),
                            dlc.get(), sh.indexer ? 1 : 0, 0);
      compressor_keep_cuda(du.get(), dz.get(), dape.get(), m, width, ring_rows, dseq.get(), 1, dlc.get(),
                           sh.indexer ? 1 : 0, 0);
      DSV4_CUDA_CHECK(cudaDeviceSynchronize());
      p0 += Tc;
    }
    out.push_back(check(str("m=", m, " d=", d, sh.indexer ? " indexer" : " main", sh.compact ? " compact" : " f32"),
                        download_rows(entries, count), ref, f32_rule(m * 2 + d), 0.01));
  }
  return out;
}

std::vector<Check> op_indexer(std::mt19937& rng) {
  const int K = 512;
  std::vector<Check> out;
  // Short rows: V4's shape (and the top-k there), then the other head dims the kernel is built
  // for, with head counts off the 16-head MMA tiles and, at DI = 256, past one pass of 32 heads.
  struct Shape {
    int HI, DI;
  };
  for (const Shape sh : {Shape{64, 128}, Shape{3, 64}, Shape{20, 32}, Shape{70, 256}}) {
    const int HI = sh.HI, DI = sh.DI;
    const bool v4 = HI == 64 && DI == 128;
    const std::string shape = v4 ? "" : str(" HI=", HI, " DI=", DI);
    const std::vector<int32_t> pos = {3, 40, 999, 2047, 2047};
    const int count_max = 512;
    for (bool compact : {false, true}) {
      std::vector<float> k = randn(rng, count_max * DI);
      for (int i = 0; i < count_max; ++i) ops::fp4_sim(&k[i * DI], DI, 32);
      const int rows = static_cast<int>(pos.size());
      std::vector<float> q = randn(rng, rows * HI * DI), w = randn(rng, rows * HI);
      for (int r = 0; r < rows; ++r) ops::fp4_sim(&q[r * HI * DI], HI * DI, 32);
      const float wscale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(DI) * HI));
      std::vector<float> ref, got;
      HostRows rowsk = make_rows(k, count_max, DI, 0, compact, true);
      LayerCache lc;
      lc.idx_entries = rowsk.view();
      DeviceArray<LayerCache> dlc(std::vector<LayerCache>{lc});
      std::vector<int32_t> slot(rows, 0);
      auto dq = dev(q), dw = dev(w);
      auto dslot = dev(slot), dpos = dev(pos);
      DeviceArray<float> score(rows * count_max);
      indexer_scores_cuda(dq.get(), dw.get(), wscale, rows, HI, DI, dslot.get(), dpos.get(), dlc.get(), compact,
                          score.get(), count_max, count_max, 0);
      std::vector<float> sh = host(score);
      for (int r = 0; r < rows; ++r) {
        const int count = (pos[r] + 1) / 4;
        std::vector<float> ws(HI), sc(count);
        for (int h = 0; h < HI; ++h) ws[h] = w[r * HI + h] * wscale;
        ops::indexer_scores(&q[r * HI * DI], ws.data(), HI, DI, k.data(), count, sc.data());
        ref.insert(ref.end(), sc.begin(), sc.end());
        got.insert(got.end(), sh.begin() + r * count_max, sh.begin() + r * count_max + count);
      }
      out.push_back(check((compact ? "scores (compact entries)" : "scores") + shape, got, ref, f32_rule(HI * DI)));
      if (!v4) continue;
      // top-k on the same scores (the GPU's), with many ties: bit-equal selections.
      std::vector<float> tied = sh;
      for (float& v : tied) v = std::round(v * 4.0f) / 4.0f;
      if (!compact)
        for (int i = 0; i < count_max; ++i) tied[4 * count_max + i] = 1.0f;  // a row of equal scores
      auto dt = dev(tied);
      DeviceArray<int32_t> idx(rows * K);
      topk_cuda(dt.get(), count_max, rows, dpos.get(), 4, K, idx.get(), 0);
      std::vector<int32_t> ih = host(idx);
      std::vector<float> gsel, rsel;
      for (int r = 0; r < rows; ++r) {
        const int count = (pos[r] + 1) / 4;
        std::vector<int32_t> want = ops::topk_lower_index(&tied[r * count_max], count, K);
        for (int i = 0; i < K; ++i) {
          gsel.push_back(static_cast<float>(ih[r * K + i]));
          rsel.push_back(i < static_cast<int>(want.size()) ? static_cast<float>(want[i]) : -1.0f);
        }
      }
      out.push_back(check(compact ? "topk (ties)" : "topk (ties, equal row)", gsel, rsel, 0));
    }
  }

  // Long rows: decode at ~1.2M tokens, count ≈ 300000 entries of one sequence, the entries made
  // as random e2m1 codes and E8M0 scales (what the compressor writes), in both cache forms. The
  // oracle is checked on a sample of entries (all of it would take the CPU seconds).
  const int HI = 64, DI = 128, count_max = 300000, rows = 2;
  const std::vector<int32_t> pos = {4 * count_max - 1, 4 * (count_max - 5) + 2};  // counts 300000, 299995
  std::vector<uint8_t> codes(static_cast<size_t>(count_max) * DI / 2), scales(static_cast<size_t>(count_max) * DI / 32);
  for (size_t i = 0; i < codes.size(); i += 4) {
    const uint32_t v = rng();
    for (int b = 0; b < 4; ++b) codes[i + b] = static_cast<uint8_t>(v >> (8 * b));
  }
  for (uint8_t& sc : scales) sc = static_cast<uint8_t>(125 + rng() % 5);  // 2^-2 .. 2^2
  std::vector<float> k(static_cast<size_t>(count_max) * DI);
  for (size_t i = 0; i < static_cast<size_t>(count_max); ++i)
    for (int j = 0; j < DI; ++j) k[i * DI + j] = decode_idx(&codes[i * DI / 2], &scales[i * DI / 32], j);
  std::vector<float> q = randn(rng, rows * HI * DI), w = randn(rng, rows * HI);
  for (int r = 0; r < rows; ++r) ops::fp4_sim(&q[r * HI * DI], HI * DI, 32);
  const float wscale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(DI) * HI));
  auto dq = dev(q), dw = dev(w);
  auto dslot = dev(std::vector<int32_t>(rows, 0)), dpos = dev(pos);
  std::vector<float> long_scores;
  for (bool compact : {true, false}) {
    HostRows h;
    h.rows = count_max, h.d = DI, h.compact = compact, h.indexer = true;
    if (compact) {
      h.codes = dev(codes);
      h.scales = dev(scales);
    } else {
      h.f32 = dev(k);
    }
    LayerCache lc;
    lc.idx_entries = h.view();
    DeviceArray<LayerCache> dlc(std::vector<LayerCache>{lc});
    DeviceArray<float> score(static_cast<size_t>(rows) * count_max);
    DSV4_CUDA_CHECK(cudaMemset(score.get(), 0xFF, score.size() * sizeof(float)));  // NaN: "not written"
    indexer_scores_cuda(dq.get(), dw.get(), wscale, rows, HI, DI, dslot.get(), dpos.get(), dlc.get(), compact,
                        score.get(), count_max, count_max, 0);
    std::vector<float> sh = host(score);
    std::vector<float> got, ref;
    Diff past;  // scores past the count that were written
    for (int r = 0; r < rows; ++r) {
      const int count = (pos[r] + 1) / 4;
      std::vector<float> ws(HI);
      for (int hh = 0; hh < HI; ++hh) ws[hh] = w[r * HI + hh] * wscale;
      for (int i = 0; i < count; ++i) {
        if (!(i < 64 || i >= count - 64 || i % 97 == 0)) continue;
        float want = 0.0f;
        ops::indexer_scores(&q[r * HI * DI], ws.data(), HI, DI, &k[static_cast<size_t>(i) * DI], 1, &want);
        ref.push_back(want);
        got.push_back(sh[static_cast<size_t>(r) * count_max + i]);
      }
      for (int i = count; i < count_max; ++i, ++past.n) past.far += !std::isnan(sh[static_cast<size_t>(r) * count_max + i]);
    }
    const std::string form = compact ? " (compact)" : " (f32)";
    out.push_back(check("long scores, sampled" + form, got, ref, f32_rule(HI * DI)));
    out.push_back({"long: nothing past the count" + form, past, 0});
    if (!compact) continue;
    long_scores = sh;
    // Decode's pairing: the scores kernel also counts its scores by the top-k's first digit, and
    // the top-k takes those counts instead of counting, then clears them. The same scores, the
    // counts of their digits, the same selection as the top-k's own count and as the oracle's, and
    // the counters back at zero.
    DeviceArray<uint32_t> digits(static_cast<size_t>(rows) * kTopkDigits);
    DSV4_CUDA_CHECK(cudaMemset(digits.get(), 0, digits.size() * sizeof(uint32_t)));
    DeviceArray<float> score2(static_cast<size_t>(rows) * count_max);
    const bool counted = indexer_scores_cuda(dq.get(), dw.get(), wscale, rows, HI, DI, dslot.get(), dpos.get(),
                                             dlc.get(), compact, score2.get(), count_max, count_max, 0, digits.get());
    const std::vector<float> s2 = host(score2);
    const std::vector<uint32_t> dh = host(digits);
    std::vector<float> same_got, same_ref, count_got, count_ref(dh.size(), 0.0f);
    for (int r = 0; r < rows; ++r) {
      const int count = (pos[r] + 1) / 4;
      for (int i = 0; i < count; ++i) {
        const float v = s2[static_cast<size_t>(r) * count_max + i];
        same_got.push_back(v);
        same_ref.push_back(sh[static_cast<size_t>(r) * count_max + i]);
        uint32_t u;
        std::memcpy(&u, &v, 4);
        if (v == 0.0f) u = 0;
        const uint32_t key = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
        count_ref[static_cast<size_t>(r) * kTopkDigits + (key >> (32 - kTopkDigitBits))] += 1.0f;
      }
    }
    for (uint32_t c : dh) count_got.push_back(static_cast<float>(c));
    out.push_back(check("long scores with digit counts: the same scores", same_got, same_ref, 0));
    out.push_back(check(counted ? "long scores: the digit counts" : "long scores: digits not counted", count_got,
                        count_ref, 0));
    DeviceArray<int32_t> idx_paired(rows * K), idx_own(rows * K);
    topk_cuda(score2.get(), count_max, rows, dpos.get(), 4, K, idx_paired.get(), 0, digits.get());
    topk_cuda(score2.get(), count_max, rows, dpos.get(), 4, K, idx_own.get(), 0);
    const std::vector<int32_t> ip = host(idx_paired), io = host(idx_own);
    std::vector<float> pg, og, want_sel;
    for (int r = 0; r < rows; ++r) {
      const int count = (pos[r] + 1) / 4;
      std::vector<int32_t> want = ops::topk_lower_index(&s2[static_cast<size_t>(r) * count_max], count, K);
      for (int i = 0; i < K; ++i) {
        pg.push_back(static_cast<float>(ip[r * K + i]));
        og.push_back(static_cast<float>(io[r * K + i]));
        want_sel.push_back(i < static_cast<int>(want.size()) ? static_cast<float>(want[i]) : -1.0f);
      }
    }
    out.push_back(check("long topk from the scores' digit counts", pg, want_sel, 0));
    out.push_back(check("long topk counting its own digits", og, want_sel, 0));
    const std::vector<uint32_t> after = host(digits);
    std::vector<float> after_f(after.begin(), after.end());
    out.push_back(check("digit counters cleared by the top-k", after_f, std::vector<float>(after.size(), 0.0f), 0));
  }

  // top-k at that length with ties everywhere: the scores on coarse grids, a row of equal
  // scores, a row of fewer than K; then a row too long for the blocks' shared memory (read from
  // global memory at every digit), and 40 shorter rows (clusters of a few blocks).
  auto grid = [](float v, float step) { return std::round(v / step) * step; };
  auto topk_case = [&](const std::string& what, const std::vector<float>& sc, int64_t ld,
                       const std::vector<int32_t>& tpos) {
    const int nr = static_cast<int>(tpos.size());
    auto dsc = dev(sc);
    auto dtp = dev(tpos);
    DeviceArray<int32_t> idx(nr * K);
    topk_cuda(dsc.get(), ld, nr, dtp.get(), 4, K, idx.get(), 0);
    std::vector<int32_t> ih = host(idx);
    std::vector<float> gsel, rsel;
    for (int r = 0; r < nr; ++r) {
      const int count = (tpos[r] + 1) / 4;
      std::vector<int32_t> want = ops::topk_lower_index(&sc[static_cast<size_t>(r) * ld], count, K);
      for (int i = 0; i < K; ++i) {
        gsel.push_back(static_cast<float>(ih[r * K + i]));
        rsel.push_back(i < static_cast<int>(want.size()) ? static_cast<float>(want[i]) : -1.0f);
      }
    }
    out.push_back(check(what, gsel, rsel, 0));
  };
  {
    const std::vector<int32_t> tpos = {4 * count_max - 1, 4 * (count_max - 5) + 2, 4 * count_max - 1,
                                       4 * 123457 - 1, 4 * 300 - 1};
    std::vector<float> sc(tpos.size() * count_max, 0.0f);
    for (int i = 0; i < count_max; ++i) {
      const float s0 = long_scores[i], s1 = long_scores[count_max + i];
      sc[i] = grid(s0, 0.25f);
      sc[count_max + i] = i < count_max - 5 ? grid(s1, 0.5f) : 0.0f;
      sc[2 * count_max + i] = 1.0f;
      sc[3 * count_max + i] = grid(s0, 1.0f);
      sc[4 * count_max + i] = grid(s0, 0.25f);
    }
    topk_case("long topk (ties, equal row, short row)", sc, count_max, tpos);
  }
  {
    // The select's three ways past its first digit (the top 12 bits of the key): distinct scores,
    // whose threshold bucket holds few keys (gathered in one block); a bucket that is taken whole
    // (500 keys at 4, 12 at 3 for K = 512); distinct keys of which 37856 share the bucket
    // (counted by the whole cluster, digit by digit); and the same with K-th key among ties.
    const std::vector<int32_t> tpos = {4 * count_max - 1, 4 * count_max - 1, 4 * count_max - 1, 4 * count_max - 1};
    std::vector<float> sc(tpos.size() * count_max);
    for (int i = 0; i < count_max; ++i) {
      sc[i] = long_scores[i];
      const int64_t spread = static_cast<int64_t>(i) * 7919;  // a permutation of 0 .. count_max − 1
      sc[count_max + i] = i % 500 == 0 ? (i / 500 < 500 ? 4.0f : i / 500 < 512 ? 3.0f : 1.0f) : grid(long_scores[i], 0.25f) / 64.0f;
      sc[2 * count_max + i] = 1.0f + static_cast<float>(spread % count_max) * 0x1p-20f;
      sc[3 * count_max + i] = 1.0f + static_cast<float>(spread % 20000) * 0x1p-20f;
    }
    topk_case("long topk (distinct: gathered; a bucket taken whole; one crowded bucket, distinct and tied)", sc,
              count_max, tpos);
  }
  {
    const int n = 400000;
    std::vector<float> sc(n);
    for (int i = 0; i < n; ++i) sc[i] = grid(long_scores[i % count_max], 0.25f);
    topk_case("long topk (400000, slices from global)", sc, n, {4 * n - 1});
  }
  {
    const int nr = 40, n = 20000;
    std::vector<int32_t> tpos(nr);
    std::vector<float> sc(static_cast<size_t>(nr) * n);
    for (int r = 0; r < nr; ++r) {
      tpos[r] = 4 * (n - 37 * r) - 1;
      for (int i = 0; i < n; ++i) sc[static_cast<size_t>(r) * n + i] = grid(long_scores[(static_cast<size_t>(r) * n + i) % count_max], 0.25f);
    }
    topk_case("topk (40 rows of 20000)", sc, n, tpos);
  }
  return out;
}

// One sequence: a window ring and compressed entries in the cache, a chunk of T rows after them
// at positions pos0.. (CSA: K random entries per row; HCA: all of them).
struct AttnCase {
  int H, Dh, R, W, T, pos0, K, m;
  bool compact, bf16;  // bf16: the fast path's tensor-core kernel (compact caches)
};
void attention_case(std::mt19937& rng, const AttnCase& c, std::vector<Check>& out) {
  const int H = c.H, Dh = c.Dh, R = c.R, N = Dh - R, W = c.W, T = c.T, pos0 = c.pos0, K = c.K, m = c.m;
  const bool compact = c.compact;
  const int ent_rows = (pos0 + T) / std::max(m, 1) + 1;
  std::vector<float> ring = fp8_sim_rows(randn(rng, W * Dh), W, Dh, N);
  std::vector<float> ent = fp8_sim_rows(randn(rng, ent_rows * Dh), ent_rows, Dh, N);
  std::vector<float> kv = fp8_sim_rows(randn(rng, T * Dh), T, Dh, N);
  if (compact)
    for (int r = 0; r < T; ++r)
      for (int i = N; i < Dh; ++i) kv[r * Dh + i] = bf16_to_f32(f32_to_bf16(kv[r * Dh + i]));
  std::vector<float> q = randn(rng, T * H * Dh, 0.05f), sink = randn(rng, H);
  // The tensor-core kernel rounds q to bf16: so does the reference. Its one other rounding, the
  // probabilities to bf16 (relative error ≤ 2^-8 each), moves output d of a head by at most
  // 2^-8 · Σ_j p_j |v_j[d]| / l: the bound below adds the norm of that to the float32 rule.
  std::vector<float> qr = q;
  if (c.bf16)
    for (float& v : qr) v = bf16_to_f32(f32_to_bf16(v));
  const std::vector<float> ring_v = cache_values(ring, W, Dh, R, compact, false);
  const std::vector<float> ent_v = cache_values(ent, ent_rows, Dh, R, compact, false);
  std::vector<int32_t> sel(T * K, -1), pos(T), slot(T, 0);
  std::vector<float> ref(T * H * Dh), absref(T * H * Dh);
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(Dh)));
  int64_t longest = 0;
  for (int t = 0; t < T; ++t) {
    const int p = pos0 + t;
    pos[t] = p;
    std::vector<float> keys;
    for (int kp = std::max(0, p - W + 1); kp <= p; ++kp) {
      const float* src = kp >= pos0 ? &kv[(kp - pos0) * Dh] : &ring_v[(kp % W) * Dh];
      keys.insert(keys.end(), src, src + Dh);
    }
    if (m > 0) {
      const int count = (p + 1) / m;
      std::vector<int32_t> chosen(count);
      std::iota(chosen.begin(), chosen.end(), 0);
      if (m == 4) {
        std::shuffle(chosen.begin(), chosen.end(), rng);
        chosen.resize(std::min(K, count));
        std::sort(chosen.begin(), chosen.end());
        std::copy(chosen.begin(), chosen.end(), &sel[t * K]);
      }
      for (int i : chosen) keys.insert(keys.end(), &ent_v[i * Dh], &ent_v[(i + 1) * Dh]);
    }
    const int64_t S = static_cast<int64_t>(keys.size()) / Dh;
    longest = std::max(longest, S);
    ops::sink_attention(&qr[t * H * Dh], H, Dh, keys.data(), S, sink.data(), scale, &ref[t * H * Dh]);
    for (int h = 0; h < H; ++h) {  // Σ_j p_j |v_j| / l, in double
      const float* qh = &qr[(t * H + h) * Dh];
      std::vector<double> sc(S);
      double mx = sink[h];
      for (int64_t j = 0; j < S; ++j) {
        double d = 0;
        for (int i = 0; i < Dh; ++i) d += static_cast<double>(qh[i]) * keys[j * Dh + i];
        sc[j] = d * scale;
        mx = std::max(mx, sc[j]);
      }
      double l = std::exp(sink[h] - mx);
      for (int64_t j = 0; j < S; ++j) l += std::exp(sc[j] - mx);
      for (int i = 0; i < Dh; ++i) {
        double a = 0;
        for (int64_t j = 0; j < S; ++j) a += std::exp(sc[j] - mx) * std::fabs(keys[j * Dh + i]);
        absref[(t * H + h) * Dh + i] = static_cast<float>(a / l);
      }
    }
  }
  HostRows dring = make_rows(ring, W, Dh, R, compact, false), dent = make_rows(ent, ent_rows, Dh, R, compact, false);
  LayerCache lc;
  lc.window = dring.view();
  lc.entries = dent.view();
  DeviceArray<LayerCache> dlc(std::vector<LayerCache>{lc});
  DeviceArray<SeqRows> dseq(std::vector<SeqRows>{{0, T, pos0}});
  auto dq = dev(q), dkv = dev(kv), dsink = dev(sink);
  auto dpos = dev(pos), dslot = dev(slot), dsel = dev(sel);
  DeviceArray<float> o(T * H * Dh);
  AttnShape shape{H, Dh, R, W, m, K, scale, compact};
  shape.bf16_products = c.bf16;
  shape.max_keys = W + (m == 4 ? K : m > 0 ? ent_rows : 0);
  DeviceArray<float> work(std::max<int64_t>(1, sparse_attention_work(T, shape)));
  sparse_attention_cuda(dq.get(), dkv.get(), dsink.get(), shape, dslot.get(), dpos.get(), T, dseq.get(), dlc.get(),
                        m == 4 ? dsel.get() : nullptr, o.get(), work.get(), 0);
  double tol = f32_rule(Dh + longest);
  if (c.bf16) {
    double na = 0, nr = 0;
    for (size_t i = 0; i < ref.size(); ++i) na += double(absref[i]) * absref[i], nr += double(ref[i]) * ref[i];
    tol += std::ldexp(1.0, -8) * std::sqrt(na / nr);
  }
  const std::string name = str("m=", m, compact ? " compact" : " f32", c.bf16 ? " bf16" : "", " H=", H, " Dh=", Dh,
                               " T=", T, " pos0=", pos0);
  out.push_back(check(name, host(o), ref, tol));
  // The output step (inverse RoPE, FP8 rounding for wo_a), fused into the combine where there is
  // one, equals rope_cuda and quantize_fp8_1x128_cuda run on o afterwards, bit for bit.
  const std::vector<float> freqs = ops::rope_frequencies(R, 160000.0f, {16.0f, 32.0f, 1.0f, 65536});
  auto dfreqs = dev(freqs);
  const bool fp8 = Dh % 128 == 0;
  DeviceArray<float> o2(T * H * Dh), s1(fp8 ? T * H * Dh / 128 : 1), s2(fp8 ? T * H * Dh / 128 : 1);
  DeviceArray<uint8_t> q1(T * H * Dh), q2(T * H * Dh);
  sparse_attention_cuda(dq.get(), dkv.get(), dsink.get(), shape, dslot.get(), dpos.get(), T, dseq.get(), dlc.get(),
                        m == 4 ? dsel.get() : nullptr, o2.get(), work.get(), 0,
                        AttnOutput{dfreqs.get(), fp8 ? q2.get() : nullptr, fp8 ? s2.get() : nullptr});
  rope_cuda(o.get(), T, H, H * Dh, Dh, N, R, dfreqs.get(), dpos.get(), true, 0);
  out.push_back(check(name + " + inverse rope", host(o2), host(o), 0));
  // Decode's path: the window key's normalization launch also writes its compact chunk rows;
  // the attention then skips its own encode step: the same key values and the same o.
  CacheRows enc;
  if (sparse_attention_chunk(work.get(), T, shape, &enc)) {
    const std::vector<float> knorm = randn(rng, Dh);
    auto dknorm = dev(knorm);
    auto kv1 = dev(kv), kv2 = dev(kv);
    DeviceArray<float> oa(T * H * Dh), ob(T * H * Dh), work2(work.size());
    RmsRopeRows k1{kv1.get(), T, 1, Dh, dknorm.get(), 64, compact};
    rmsnorm_rope2_cuda(RmsRopeRows{}, k1, kEps, R, dfreqs.get(), dpos.get(), 0);
    sparse_attention_cuda(dq.get(), kv1.get(), dsink.get(), shape, dslot.get(), dpos.get(), T, dseq.get(), dlc.get(),
                          m == 4 ? dsel.get() : nullptr, oa.get(), work.get(), 0);
    RmsRopeRows k2{kv2.get(), T, 1, Dh, dknorm.get(), 64, compact};
    k2.encode = sparse_attention_chunk(work2.get(), T, shape, &k2.enc);
    rmsnorm_rope2_cuda(RmsRopeRows{}, k2, kEps, R, dfreqs.get(), dpos.get(), 0);
    AttnOutput pre;
    pre.chunk_encoded = true;
    sparse_attention_cuda(dq.get(), kv2.get(), dsink.get(), shape, dslot.get(), dpos.get(), T, dseq.get(), dlc.get(),
                          m == 4 ? dsel.get() : nullptr, ob.get(), work2.get(), 0, pre);
    out.push_back(check(name + " key encoded by its norm: key", host(kv2), host(kv1), 0));
    out.push_back(check(name + " key encoded by its norm: o", host(ob), host(oa), 0));
  }
  if (fp8) {
    quantize_fp8_1x128_cuda(o.get(), T, H * Dh, q1.get(), s1.get(), T, 0);
    out.push_back(check(name + " + fp8 codes", as_float(host(q2)), as_float(host(q1)), 0));
    out.push_back(check(name + " + fp8 scales", host(s2), host(s1), 0));
  }
}

std::vector<Check> op_attention(std::mt19937& rng) {
  std::vector<Check> out;
  for (auto [m, compact] : {std::pair{0, false}, std::pair{128, true}, std::pair{4, false}, std::pair{4, true}})
    attention_case(rng, {64, 512, 64, 128, 5, 300, 16, m, compact, false}, out);
  return out;
}

// The tensor-core kernel: decode-like rows (splits and their combine), many rows (one block per
// row), CSA selections, two head groups, and the tiny model's shape (4 heads padded to 64).
std::vector<Check> op_attention_bf16(std::mt19937& rng) {
  std::vector<Check> out;
  for (const AttnCase& c : {AttnCase{64, 512, 64, 128, 5, 5000, 16, 128, true, true},
                            AttnCase{64, 512, 64, 128, 5, 5000, 64, 4, true, true},
                            AttnCase{64, 512, 64, 128, 3, 300, 16, 0, true, true},
                            AttnCase{64, 512, 64, 128, 140, 2000, 16, 128, true, true},
                            AttnCase{64, 512, 64, 128, 150, 900, 100, 4, true, true},
                            AttnCase{128, 512, 64, 128, 3, 1000, 16, 128, true, true},
                            AttnCase{4, 128, 64, 16, 7, 40, 8, 4, true, true}})
    attention_case(rng, c, out);
  return out;
}

const OpCase kCases[] = {
    {"rmsnorm", op_rmsnorm},     {"rope", op_rope},       {"rmsnorm_rope", op_rmsnorm_rope},
    {"quant", op_quant},         {"compressor", op_compressor},
    {"indexer", op_indexer},     {"attention", op_attention}, {"attention_bf16", op_attention_bf16},
};

}  // namespace

class CudaVsCpu : public ::testing::TestWithParam<OpCase> {};

TEST_P(CudaVsCpu, MatchesTheOracle) { expect_case(GetParam()); }

INSTANTIATE_TEST_SUITE_P(Ops, CudaVsCpu, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return std::string(info.param.name); });
