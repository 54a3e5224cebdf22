// Every CUDA op against its CPU oracle (src/ops), one parametrized test: random inputs, the
// same inputs to both, and the comparison rule of gpu_test_util.h (products, routing and the
// experts are in test_ops_products.cpp, mHC in test_ops_mhc.cpp). Ops whose outputs are
// exactly representable and computed by the same sequence of float operations (the
// quantization simulations, the Hadamard butterfly, the top-k) must agree bit for bit; ops
// with a quantization after a reduction may flip a rounding in a few elements (≤ 1%).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <numeric>
#include <set>

#include "core/dtype.h"
#include "cuda/blas.h"
#include "cache_rows.h"
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
  // The indexer's query heads in one launch = RoPE, Hadamard and FP4 simulation one after another:
  // V4's d = 128 (the warp kernel) and d = 64 (the block kernel).
  for (const int d : {128, 64}) {
    const int rows = 3, heads = 64, R = d / 2;
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
    out.push_back(check(str("indexer query heads, d = ", d), host(b), host(a), 0));
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
  {  // FP4 rounding at every tie and step: blocks of 32 whose first value (±6) fixes the scale, the
     // rest every multiple of 2^-6 in [-6, 6], at scales 2^0, 2^-20, 2^-130
     // (the least scale: subnormal quotients) and 2^20; signed zeros.
    std::vector<float> grid;
    for (int i = -6 * 64; i <= 6 * 64; ++i) grid.push_back(static_cast<float>(i) / 64.0f);
    grid.push_back(-0.0f);
    std::vector<float> x;
    for (const int e : {0, -20, -130, 20})
      for (size_t i = 0; i < grid.size(); i += 31) {
        x.push_back(std::ldexp(i % 2 ? 6.0f : -6.0f, e));
        for (size_t j = i; j < i + 31; ++j) x.push_back(j < grid.size() ? std::ldexp(grid[j], e) : 0.0f);
      }
    const int n = static_cast<int>(x.size());
    std::vector<float> ref = x;
    ops::fp4_sim(ref.data(), n, 32);
    auto dx = dev(x);
    fp4_sim_cuda(dx.get(), 1, n, n, 0);
    const std::vector<float> got = host(dx);
    Diff bits;  // bit patterns (the sign of zero included)
    bits.n = n;
    for (int i = 0; i < n; ++i) bits.far += std::memcmp(&got[i], &ref[i], 4) != 0;
    out.push_back({"fp4_sim: every tie and step, bit for bit", bits, 0});
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
                    Shape_{4, 128, true, true}, Shape_{16, 512, false, true},
                    // a pool longer than the kernel's batch of loads (16 rows), its last batch partial
                    Shape_{24, 128, false, true}}) {
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
      // max_rows: the longer chunk's T, so the first chunk's grid has rows to spare
      compressor_keep_cuda(du.get(), dz.get(), dape.get(), m, width, ring_rows, dseq.get(), 1, std::max(T1, T2),
                           dlc.get(), sh.indexer ? 1 : 0, 0);
      DSV4_CUDA_CHECK(cudaDeviceSynchronize());
      p0 += Tc;
    }
    out.push_back(check(str("m=", m, " d=", d, sh.indexer ? " indexer" : " main", sh.compact ? " compact" : " f32"),
                        download_rows(entries, count), ref, f32_rule(m * 2 + d), 0.01));
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
  // The tensor-core kernel rounds q to bf16: so does the reference. Its two other roundings move
  // output d of a head by at most 2^-8 · Σ_j p_j |v_j[d]| / l each: the probabilities to bf16
  // (relative error ≤ 2^-8 each), and a split's partial o to bf16 (|o_s[d]| ≤ Σ_{j in s} p_j
  // |v_j[d]|, weighted into o as its p_j are). The bound below adds the norm of both to the
  // float32 rule.
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
    tol += 2.0 * std::ldexp(1.0, -8) * std::sqrt(na / nr);
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
  // q before its per-head RMSNorm and RoPE (AttnShape::q_rope): the attention's own equal
  // rmsnorm_rope_cuda's, so o is the same, bit for bit.
  if (sparse_attention_norms_q(shape)) {
    auto qn = dev(q);
    rmsnorm_rope_cuda(qn.get(), T, H, Dh, nullptr, kEps, R, dfreqs.get(), dpos.get(), 0, false, 0);
    DeviceArray<float> on(T * H * Dh), oq(T * H * Dh);
    sparse_attention_cuda(qn.get(), dkv.get(), dsink.get(), shape, dslot.get(), dpos.get(), T, dseq.get(), dlc.get(),
                          m == 4 ? dsel.get() : nullptr, on.get(), work.get(), 0);
    AttnShape raw = shape;
    raw.q_rope = dfreqs.get();
    raw.q_eps = kEps;
    sparse_attention_cuda(dq.get(), dkv.get(), dsink.get(), raw, dslot.get(), dpos.get(), T, dseq.get(), dlc.get(),
                          m == 4 ? dsel.get() : nullptr, oq.get(), work.get(), 0);
    out.push_back(check(name + " q normalized in the attention", host(oq), host(on), 0));
  } else {
    AttnShape raw = shape;
    raw.q_rope = dfreqs.get();
    bool refused = false;
    try {
      sparse_attention_cuda(dq.get(), dkv.get(), dsink.get(), raw, dslot.get(), dpos.get(), T, dseq.get(), dlc.get(),
                            m == 4 ? dsel.get() : nullptr, o2.get(), work.get(), 0);
    } catch (const std::exception&) {
      refused = true;
    }
    out.push_back(check(name + " q before its norm refused", {refused ? 1.0f : 0.0f}, {1.0f}, 0));
  }
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
// row), CSA selections, two head groups, and the tiny model's shape (4 heads padded to 64). Its
// warp layouts by heads a block: 8 or 16 (the T = 3 and 5 rows), 32 (one decode row of 2048 CSA
// selections, and one at ~800K tokens in an HCA layer: 6379 keys in 2 × 66 splits) and 64; and
// head dims whose eighths are not whole n-tiles (96: the layout falls back to quarters; 192).
std::vector<Check> op_attention_bf16(std::mt19937& rng) {
  std::vector<Check> out;
  for (const AttnCase& c : {AttnCase{64, 512, 64, 128, 5, 5000, 16, 128, true, true},
                            AttnCase{64, 512, 64, 128, 5, 5000, 64, 4, true, true},
                            AttnCase{64, 512, 64, 128, 3, 300, 16, 0, true, true},
                            AttnCase{64, 512, 64, 128, 140, 2000, 16, 128, true, true},
                            AttnCase{64, 512, 64, 128, 150, 900, 100, 4, true, true},
                            AttnCase{128, 512, 64, 128, 3, 1000, 16, 128, true, true},
                            AttnCase{4, 128, 64, 16, 7, 40, 8, 4, true, true},
                            AttnCase{4, 96, 32, 16, 7, 40, 8, 4, true, true},
                            AttnCase{8, 192, 64, 16, 5, 300, 8, 4, true, true},
                            AttnCase{64, 512, 64, 128, 1, 10000, 2048, 4, true, true},
                            AttnCase{64, 512, 64, 128, 1, 800000, 16, 128, true, true}})
    attention_case(rng, c, out);
  return out;
}

const OpCase kCases[] = {
    {"rmsnorm", op_rmsnorm},     {"rope", op_rope},       {"rmsnorm_rope", op_rmsnorm_rope},
    {"quant", op_quant},         {"compressor", op_compressor},
    {"attention", op_attention}, {"attention_bf16", op_attention_bf16},
};

}  // namespace

DSV4_OP_CASES(Ops, CudaVsCpu);
