// The products of the CUDA model against their CPU oracle, as test_ops.cpp does for the other
// ops: MoE routing, grouping and experts (gemv and grouped, decode- and prefill-sized), swiglu
// with its FP8 rounding, the cuBLASLt GEMMs and the few-row GEMV.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include "core/dtype.h"
#include "cuda/blas.h"
#include "op_cases.h"
#include "ops/cuda_ops.h"
#include "ops/linear.h"
#include "ops/moe.h"
#include "ops/quant.h"

using namespace dsv4;
using namespace dsv4::cuda;
using namespace dsv4::testing_gpu;

namespace {

std::vector<Check> op_moe_route(std::mt19937& rng) {
  const int T = 9, E = 256, k = 6, V = 50;
  std::vector<Check> out;
  for (ScoringFunc f : {ScoringFunc::SqrtSoftplus, ScoringFunc::Softmax, ScoringFunc::Sigmoid}) {
    for (bool hash : {false, true}) {
      std::vector<float> logits = randn(rng, T * E), bias = randn(rng, E, 0.1f);
      for (float& v : logits) v = std::round(v * 8.0f) / 8.0f;  // ties between experts
      std::vector<int32_t> ids(T), table(V * k);
      for (int t = 0; t < T; ++t) ids[t] = static_cast<int32_t>(rng() % V);
      for (int v = 0; v < V; ++v)
        for (int i = 0; i < k; ++i) table[v * k + i] = (v * 7 + i * 37) % E;
      std::vector<float> rw(T * k), p(E);
      std::vector<int32_t> re(T * k);
      for (int t = 0; t < T; ++t) {
        ops::moe_scores(&logits[t * E], E, f, p.data());
        std::vector<int64_t> h(k);
        for (int i = 0; i < k; ++i) h[i] = table[ids[t] * k + i];
        ops::moe_route(p.data(), hash ? nullptr : bias.data(), E, k, hash ? h.data() : nullptr, f, 1.5f, &re[t * k],
                       &rw[t * k]);
      }
      auto dl = dev(logits), db = dev(bias);
      auto dids = dev(ids), dtab = dev(table);
      DeviceArray<int32_t> ex(T * k);
      DeviceArray<float> wt(T * k);
      moe_route_cuda(dl.get(), T, E, k, f, hash ? nullptr : db.get(), hash ? dtab.get() : nullptr, dids.get(), 1.5f,
                     ex.get(), wt.get(), 0);
      std::vector<int32_t> eh = host(ex);
      std::vector<float> ge(eh.begin(), eh.end()), rex(re.begin(), re.end());
      const std::string name = str(static_cast<int>(f), hash ? " hash" : " learned");
      out.push_back(check(name + " experts", ge, rex, 0));
      out.push_back(check(name + " weights", host(wt), rw, f32_rule(E)));
    }
  }
  return out;
}

// Few rows: routing and grouping in one launch (moe_route_group_cuda) against moe_route_cuda then
// moe_group_cuda, bit for bit, for every scoring function, learned and hash routing (an expert
// repeated in the one-row case), one row (its own one-warp kernel) to 64.
std::vector<Check> op_moe_route_group(std::mt19937& rng) {
  const int E = 256, k = 6, V = 50;
  std::vector<Check> out;
  for (int T : {1, 2, 7, 64})
    for (ScoringFunc f : {ScoringFunc::SqrtSoftplus, ScoringFunc::Softmax, ScoringFunc::Sigmoid})
      for (bool hash : {false, true}) {
        std::vector<float> logits = randn(rng, T * E, 3.0f), bias = randn(rng, E, 0.1f);
        for (float& v : logits) v = std::round(v * 8.0f) / 8.0f;  // ties between experts
        std::vector<int32_t> ids(T), table(V * k);
        for (int t = 0; t < T; ++t) ids[t] = static_cast<int32_t>(rng() % V);
        for (auto& e : table) e = static_cast<int32_t>(rng() % E);
        if (T == 1) table[ids[0] * k + 3] = table[ids[0] * k + 1];  // one row's hash experts may repeat
        auto dl = dev(logits), db = dev(bias);
        auto dids = dev(ids), dtab = dev(table);
        const float* bp = hash ? nullptr : db.get();
        const int32_t* tp = hash ? dtab.get() : nullptr;
        const int n = T * k, tile_rows = 1 << 30, max_tiles = std::min(E, n);
        struct Out {
          DeviceArray<int32_t> ex, counts, offsets, perm, inv, ntiles;
          DeviceArray<float> wt;
          DeviceArray<int2> tiles;
        };
        auto make = [&] {  // outputs start out different: a write that is missing shows
          return Out{DeviceArray<int32_t>(std::vector<int32_t>(n, -7)), DeviceArray<int32_t>(std::vector<int32_t>(E, 5)),
                     DeviceArray<int32_t>(std::vector<int32_t>(E + 1, -7)), DeviceArray<int32_t>(std::vector<int32_t>(n, -7)),
                     DeviceArray<int32_t>(std::vector<int32_t>(n, -7)), DeviceArray<int32_t>(std::vector<int32_t>(1, -7)),
                     DeviceArray<float>(std::vector<float>(n, -7.0f)),
                     DeviceArray<int2>(std::vector<int2>(max_tiles, int2{-7, -7}))};
        };
        Out two = make(), one = make();
        moe_route_cuda(dl.get(), T, E, k, f, bp, tp, dids.get(), 1.5f, two.ex.get(), two.wt.get(), 0);
        moe_group_cuda(two.ex.get(), T, k, E, two.counts.get(), two.offsets.get(), two.perm.get(), two.inv.get(),
                       tile_rows, two.tiles.get(), two.ntiles.get(), 0);
        moe_route_group_cuda(dl.get(), T, E, k, f, bp, tp, dids.get(), 1.5f, one.ex.get(), one.wt.get(),
                             one.counts.get(), one.offsets.get(), one.perm.get(), one.inv.get(), tile_rows,
                             one.tiles.get(), one.ntiles.get(), 0);
        auto ints = [](const DeviceArray<int32_t>& d) {
          std::vector<int32_t> h = host(d);
          return std::vector<float>(h.begin(), h.end());
        };
        auto tile_list = [](const DeviceArray<int2>& d) {
          std::vector<float> v;
          for (const int2& t : host(d)) v.push_back(static_cast<float>(t.x)), v.push_back(static_cast<float>(t.y));
          return v;
        };
        const std::string name = str("T=", T, " f=", static_cast<int>(f), hash ? " hash" : " learned");
        out.push_back(check(name + " experts", ints(one.ex), ints(two.ex), 0));
        out.push_back(check(name + " weights", host(one.wt), host(two.wt), 0));
        out.push_back(check(name + " counts", ints(one.counts), ints(two.counts), 0));
        out.push_back(check(name + " offsets", ints(one.offsets), ints(two.offsets), 0));
        out.push_back(check(name + " perm", ints(one.perm), ints(two.perm), 0));
        out.push_back(check(name + " inv", ints(one.inv), ints(two.inv), 0));
        out.push_back(check(name + " ntiles", ints(one.ntiles), ints(two.ntiles), 0));
        out.push_back(check(name + " tiles", tile_list(one.tiles), tile_list(two.tiles), 0));
      }
  return out;
}

// The routed experts of one layer through grouping, the two expert-product paths (gemv: few rows,
// decode; grouped: many rows, prefill) and the combine, for both weight forms, against the CPU
// with the expert inputs (x and h) rounded to bf16 as both paths round them. `pick(t, i)` is the
// i-th expert of token t (distinct for one token).
std::vector<Check> moe_experts_case(std::mt19937& rng, int T, int E, int k, int D, int F,
                                    const std::function<int32_t(int, int)>& pick) {
  const float limit = 10.0f;
  std::vector<int32_t> experts(T * k);
  for (int t = 0; t < T; ++t)
    for (int i = 0; i < k; ++i) experts[t * k + i] = pick(t, i);
  std::vector<float> weights = randn(rng, T * k, 0.5f), x = randn(rng, T * D), shared = randn(rng, T * D);
  // FP4 weights with random scales, and their float32 values.
  auto make_fp4 = [&](int rows, int cols, std::vector<uint8_t>& codes, std::vector<uint8_t>& scales) {
    codes.resize(static_cast<size_t>(E) * rows * cols / 2);
    scales.resize(static_cast<size_t>(E) * rows * cols / 32);
    for (auto& c : codes) c = static_cast<uint8_t>(rng() & 0xff);
    for (auto& s : scales)  // mostly 2^-7..2^-5; one block in 8 at 2^2..2^4 (bytes above 128)
      s = static_cast<uint8_t>(rng() % 8 == 0 ? 129 + rng() % 3 : 120 + rng() % 3);
    std::vector<float> w(static_cast<size_t>(E) * rows * cols);
    for (size_t i = 0; i < w.size(); ++i)
      w[i] = e2m1_to_f32((i & 1) ? codes[i / 2] >> 4 : codes[i / 2] & 0xf) * e8m0_to_f32(scales[i / 32]);
    return w;
  };
  std::vector<uint8_t> c1, s1, c3, s3, c2, s2;
  std::vector<float> w1 = make_fp4(F, D, c1, s1), w3 = make_fp4(F, D, c3, s3), w2 = make_fp4(D, F, c2, s2);
  // CPU reference with bf16 rounding of the expert inputs (x and h).
  auto rnd = [](float v) { return bf16_to_f32(f32_to_bf16(v)); };
  std::vector<float> want = shared, g(F), u(F), h(F), y(D), xr(D);
  for (int t = 0; t < T; ++t)
    for (int i = 0; i < k; ++i) {
      const int e = experts[t * k + i];
      for (int d = 0; d < D; ++d) xr[d] = rnd(x[t * D + d]);
      ops::linear(xr.data(), 1, D, &w1[static_cast<size_t>(e) * F * D], F, g.data());
      ops::linear(xr.data(), 1, D, &w3[static_cast<size_t>(e) * F * D], F, u.data());
      ops::swiglu(g.data(), u.data(), F, limit, h.data());
      for (int f = 0; f < F; ++f) h[f] = rnd(h[f] * weights[t * k + i]);
      ops::linear(h.data(), 1, F, &w2[static_cast<size_t>(e) * D * F], D, y.data());
      for (int d = 0; d < D; ++d) want[t * D + d] += y[d];
    }
  auto dex = dev(experts);
  auto dw = dev(weights), dx = dev(x), dsh = dev(shared);
  // On the GPU in tiles, as the weights' loader stores them (E experts of `rows` rows stacked).
  auto tiles = [&](const std::vector<uint8_t>& codes, const std::vector<uint8_t>& scales, int rows, int cols) {
    auto c = dev(codes), sc = dev(scales);
    const int64_t n = static_cast<int64_t>(E) * rows * fp4_tiled_cols(cols);
    std::pair<DeviceArray<uint8_t>, DeviceArray<uint8_t>> t{DeviceArray<uint8_t>(n / 2), DeviceArray<uint8_t>(n / 32)};
    fp4_tile_cuda(c.get(), sc.get(), static_cast<int64_t>(E) * rows, cols, t.first.get(), t.second.get(), 0);
    return t;
  };
  auto [dc1, ds1] = tiles(c1, s1, F, D);
  auto [dc3, ds3] = tiles(c3, s3, F, D);
  auto [dc2, ds2] = tiles(c2, s2, D, F);
  // The same values as bf16 matrices (e2m1 × 2^k is exact in bf16).
  auto as_bf16 = [](const std::vector<float>& w) {
    std::vector<uint16_t> hb(w.size());
    for (size_t i = 0; i < w.size(); ++i) hb[i] = f32_to_bf16(w[i]);
    DeviceArray<bf16> d(w.size());
    DSV4_CUDA_CHECK(cudaMemcpy(d.get(), hb.data(), hb.size() * 2, cudaMemcpyHostToDevice));
    return d;
  };
  DeviceArray<bf16> b1 = as_bf16(w1), b3 = as_bf16(w3), b2 = as_bf16(w2);
  DeviceArray<bf16> xtok = as_bf16(x);  // the token rows as the fused hc_pre writes them for decode
  std::vector<Check> out;
  for (bool fp4 : {true, false})
    for (bool grouped : {false, true}) {
      ExpertMatrix m1{fp4 ? dc1.get() : nullptr, fp4 ? ds1.get() : nullptr, fp4 ? nullptr : b1.get(), F, D},
          m3{fp4 ? dc3.get() : nullptr, fp4 ? ds3.get() : nullptr, fp4 ? nullptr : b3.get(), F, D},
          m2{fp4 ? dc2.get() : nullptr, fp4 ? ds2.get() : nullptr, fp4 ? nullptr : b2.get(), D, F};
      const int n = T * k, tile_rows = grouped ? kMoeTileRows : 1 << 30;
      const int max_tiles = grouped ? n / kMoeTileRows + E : E;
      DeviceArray<int32_t> counts(E), offsets(E + 1), perm(n), inv(n), ntiles(1);
      DeviceArray<int2> tiles(max_tiles);
      DSV4_CUDA_CHECK(cudaMemset(counts.get(), 0, E * sizeof(int32_t)));
      moe_group_cuda(dex.get(), T, k, E, counts.get(), offsets.get(), perm.get(), inv.get(), tile_rows, tiles.get(),
                     ntiles.get(), 0);
      DeviceArray<float> ys(n * D), result(T * D), ys_tok(n * D), result_tok(T * D);
      DeviceArray<bf16> xs(n * D), hd(n * F);
      moe_gather_cuda(dx.get(), D, perm.get(), n, k, nullptr, xs.get(), 0);
      if (grouped) {
        moe_grouped_swiglu_cuda(xs.get(), m1, m3, tiles.get(), ntiles.get(), max_tiles, tile_rows, offsets.get(),
                                limit, dw.get(), perm.get(), hd.get(), 0);
        moe_grouped_down_cuda(hd.get(), m2, tiles.get(), ntiles.get(), max_tiles, tile_rows, offsets.get(), ys.get(),
                              0);
      } else {
        moe_gemv_swiglu_cuda(xs.get(), m1, m3, tiles.get(), ntiles.get(), max_tiles, offsets.get(), limit, dw.get(),
                             perm.get(), hd.get(), 0);
        moe_gemv_down_cuda(hd.get(), m2, tiles.get(), ntiles.get(), max_tiles, offsets.get(), ys.get(), 0);
        // The decode step's form: y rows in assignment order (out_rows = perm), combined without inv.
        moe_gemv_down_cuda(hd.get(), m2, tiles.get(), ntiles.get(), max_tiles, offsets.get(), ys_tok.get(), 0,
                           perm.get());
        moe_combine_cuda(ys_tok.get(), nullptr, dsh.get(), T, k, D, result_tok.get(), 0);
        // Without the gather: the rows of x read through perm and rounded on load, the same h bit for bit.
        DeviceArray<bf16> hg(std::vector<bf16>(n * F, __float2bfloat16(-7.0f)));
        moe_gemv_swiglu_gather_cuda(dx.get(), k, m1, m3, tiles.get(), ntiles.get(), max_tiles, offsets.get(), limit,
                                    dw.get(), perm.get(), hg.get(), 0);
        auto as_f32 = [](const DeviceArray<bf16>& d) {
          std::vector<float> v;
          for (const bf16& b : host(d)) v.push_back(__bfloat162float(b));
          return v;
        };
        out.push_back(check(str("gemv without gather", fp4 ? " (fp4 weights)" : " (bf16 weights)"), as_f32(hg),
                            as_f32(hd), 0));
        // The token rows already in bf16, read through perm: the same h.
        DeviceArray<bf16> ht(std::vector<bf16>(n * F, __float2bfloat16(-7.0f)));
        moe_gemv_swiglu_tokens_cuda(xtok.get(), k, m1, m3, tiles.get(), ntiles.get(), max_tiles, offsets.get(), limit,
                                    dw.get(), perm.get(), ht.get(), 0);
        out.push_back(check(str("gemv on bf16 token rows", fp4 ? " (fp4 weights)" : " (bf16 weights)"), as_f32(ht),
                            as_f32(hd), 0));
      }
      moe_combine_cuda(ys.get(), inv.get(), dsh.get(), T, k, D, result.get(), 0);
      if (!grouped)
        out.push_back(check(str("gemv, y in assignment order", fp4 ? " (fp4 weights)" : " (bf16 weights)"),
                            host(result_tok), host(result), 0));
      // bf16 inputs on both sides; a float32 summation-order difference can still move an element
      // of h across a bf16 rounding boundary (2^-8 relative), so a few outputs may differ by that.
      out.push_back(check(str(grouped ? "grouped" : "gemv", fp4 ? " (fp4 weights)" : " (bf16 weights)"), host(result),
                          want, 4e-3, 0.05));
    }
  // Scales with no byte above 128, as a checkpoint's: fp4_scale_max_cuda finds the largest byte of
  // either set, and the decode products told so (narrow_scales: no per-step check) give the bits of
  // the checked form.
  auto narrowed = [](std::vector<uint8_t> v) {
    for (uint8_t& b : v) b = std::min<uint8_t>(b, 128);
    return v;
  };
  auto host_max = [](const std::vector<uint8_t>& v) { return static_cast<float>(*std::max_element(v.begin(), v.end())); };
  const std::vector<uint8_t> n1 = narrowed(s1), n3 = narrowed(s3), n2 = narrowed(s2);
  auto [nc1, ns1] = tiles(c1, n1, F, D);
  auto [nc3, ns3] = tiles(c3, n3, F, D);
  auto [nc2, ns2] = tiles(c2, n2, D, F);
  out.push_back(check("fp4 scale max", {static_cast<float>(fp4_scale_max_cuda(ds1.get(), ds1.size(), 0)),
                                        static_cast<float>(fp4_scale_max_cuda(ns2.get(), ns2.size(), 0))},
                      {host_max(s1), std::max(host_max(n2), 127.0f)}, 0));
  {
    const int n = T * k;
    DeviceArray<int32_t> counts(E), offsets(E + 1), perm(n), inv(n), ntiles(1);
    DeviceArray<int2> tl(E);
    DSV4_CUDA_CHECK(cudaMemset(counts.get(), 0, E * sizeof(int32_t)));
    moe_group_cuda(dex.get(), T, k, E, counts.get(), offsets.get(), perm.get(), inv.get(), 1 << 30, tl.get(), ntiles.get(), 0);
    std::vector<std::vector<float>> hs, ys;
    for (bool flag : {false, true}) {
      const ExpertMatrix m1{nc1.get(), ns1.get(), nullptr, F, D, flag}, m3{nc3.get(), ns3.get(), nullptr, F, D, flag},
          m2{nc2.get(), ns2.get(), nullptr, D, F, flag};
      DeviceArray<bf16> hd(n * F);
      DeviceArray<float> y(n * D);
      moe_gemv_swiglu_tokens_cuda(xtok.get(), k, m1, m3, tl.get(), ntiles.get(), E, offsets.get(), limit, dw.get(),
                                  perm.get(), hd.get(), 0);
      moe_gemv_down_cuda(hd.get(), m2, tl.get(), ntiles.get(), E, offsets.get(), y.get(), 0, perm.get());
      std::vector<float> hv;
      for (const bf16& b : host(hd)) hv.push_back(__bfloat162float(b));
      hs.push_back(hv);
      ys.push_back(host(y));
    }
    out.push_back(check("gemv with narrow_scales: h", hs[1], hs[0], 0));
    out.push_back(check("gemv with narrow_scales: y", ys[1], ys[0], 0));
  }
  return out;
}

// Decode-sized: ~10 rows per expert (partial tiles only; the gemv in two passes of 8). D and F not
// multiples of 64 or 128 (row and column tails), scales on both sides of 2^1. Then 6 of 64 experts
// per token, ~3 rows each: more gemv work items (16-row slices of a tile: ~600 and ~1100) than its
// persistent grid has blocks, so that blocks run several items of several experts.
std::vector<Check> op_moe_experts(std::mt19937& rng) {
  const int E = 8;
  std::vector<int32_t> first(40);
  for (auto& e : first) e = static_cast<int32_t>(rng() % E);
  std::vector<Check> out = moe_experts_case(rng, 40, E, 2, 288, 160, [&](int t, int i) {
    return i == 0 ? first[t] : (first[t] + 1 + static_cast<int32_t>(rng() % (E - 1))) % E;
  });
  const int T = 32, E_many = 64;
  std::vector<int32_t> base(T), stride(T);  // expert base + i · stride (odd: distinct mod 64)
  for (int t = 0; t < T; ++t) {
    base[t] = static_cast<int32_t>(rng() % E_many);
    stride[t] = static_cast<int32_t>(2 * (rng() % (E_many / 2)) + 1);
  }
  for (Check& c : moe_experts_case(rng, T, E_many, 6, 288, 160,
                                   [&](int t, int i) { return (base[t] + i * stride[t]) % E_many; })) {
    c.what = "64 experts: " + c.what;
    out.push_back(c);
  }
  return out;
}

// Prefill-sized: one expert with ~420 rows (three full tiles and a partial one), experts of ~190
// and of ~25 rows (tiles whose second half of warps has no rows), two experts with none; K tails of half
// a stage (D = 544, F = 160) and feature blocks cut short (F = 160 of 128-feature blocks, D = 544
// of 256) in both products; the ring of stages wraps (D: 9 stages of 64 columns).
std::vector<Check> op_moe_experts_prefill(std::mt19937& rng) {
  const int T = 600, E = 8;
  const int32_t busy = 0, rare = 7, common[] = {1, 2, 4, 5};  // 3 and 6: no rows
  std::vector<int32_t> first(T);
  for (auto& e : first) {
    const uint32_t r = rng() % 100;
    e = r < 70 ? busy : r < 74 ? rare : common[rng() % 4];
  }
  return moe_experts_case(rng, T, E, 2, 544, 160, [&](int t, int i) {
    if (i == 0) return first[t];
    int32_t e = common[rng() % 4];
    if (e == first[t]) e = first[t] == common[0] ? common[1] : common[0];
    return e;
  });
}

// swiglu + FP8 rounding in one launch equals swiglu_cuda then quantize_fp8_1x128_cuda, bit for bit.
std::vector<Check> op_swiglu_quant(std::mt19937& rng) {
  const int rows = 3, F = 384;
  std::vector<float> g = randn(rng, rows * F, 4.0f), u = randn(rng, rows * F, 4.0f);
  auto dg = dev(g), du = dev(u);
  DeviceArray<float> h1(rows * F), h2(rows * F), s1(rows * F / 128), s2(rows * F / 128);
  DeviceArray<uint8_t> q1(rows * F), q2(rows * F);
  swiglu_quant_cuda(dg.get(), du.get(), rows, F, 10.0f, h1.get(), q1.get(), s1.get(), 0);
  swiglu_cuda(dg.get(), du.get(), rows, F, 10.0f, nullptr, nullptr, h2.get(), 0);
  quantize_fp8_1x128_cuda(h2.get(), rows, F, q2.get(), s2.get(), rows, 0);
  return {check("h", host(h1), host(h2), 0), check("codes", as_float(host(q1)), as_float(host(q2)), 0),
          check("scales", host(s1), host(s2), 0)};
}

// Grouping by expert, both launch paths (one block for few assignments, three kernels beyond),
// against a stable sort on the host: offsets, perm, inv and the tile list, bit for bit.
std::vector<Check> op_moe_group(std::mt19937& rng) {
  std::vector<Check> out;
  for (int T : {1, 7, 300, 700})
    for (int tile_rows : {64, 1 << 30}) {
      const int k = 6, E = 64, n = T * k;
      std::vector<int32_t> experts(n);
      for (int t = 0; t < T; ++t)
        for (int i = 0; i < k; ++i) experts[t * k + i] = static_cast<int32_t>((t * 7 + i * 11 + rng() % 5) % E);
      std::vector<int32_t> want_off(E + 1, 0), want_perm, want_inv(n);
      for (int a = 0; a < n; ++a) ++want_off[experts[a] + 1];
      for (int e = 0; e < E; ++e) want_off[e + 1] += want_off[e];
      std::vector<int2> want_tiles;
      for (int e = 0; e < E; ++e) {
        for (int a = 0; a < n; ++a)
          if (experts[a] == e) want_inv[a] = static_cast<int32_t>(want_perm.size()), want_perm.push_back(a);
        for (int r = want_off[e]; r < want_off[e + 1]; r += tile_rows) want_tiles.push_back({e, r});
      }
      auto dex = dev(experts);
      const int max_tiles = n / std::min(tile_rows, n) + E;
      DeviceArray<int32_t> counts(std::vector<int32_t>(E, 5)), offsets(E + 1), perm(n), inv(n), ntiles(1);
      DeviceArray<int2> tiles(max_tiles);
      moe_group_cuda(dex.get(), T, k, E, counts.get(), offsets.get(), perm.get(), inv.get(), tile_rows, tiles.get(),
                     ntiles.get(), 0);
      std::vector<int32_t> nt = host(ntiles);
      std::vector<int2> th = host(tiles);
      std::vector<float> got, want;
      auto put = [](std::vector<float>& v, const std::vector<int32_t>& x) { v.insert(v.end(), x.begin(), x.end()); };
      put(got, host(offsets)), put(want, want_off);
      put(got, host(perm)), put(want, want_perm);
      put(got, host(inv)), put(want, want_inv);
      got.push_back(static_cast<float>(nt[0])), want.push_back(static_cast<float>(want_tiles.size()));
      for (size_t i = 0; i < want_tiles.size() && i < th.size(); ++i) {
        got.push_back(static_cast<float>(th[i].x)), got.push_back(static_cast<float>(th[i].y));
        want.push_back(static_cast<float>(want_tiles[i].x)), want.push_back(static_cast<float>(want_tiles[i].y));
      }
      out.push_back(check(str("T=", T, " k=", k, tile_rows < 1000 ? " tiles of 64" : " one tile per expert"), got, want,
                          0));
    }
  return out;
}

std::vector<Check> op_gemm(std::mt19937& rng) {
  const int M = 37, N = 256, K = 1024;
  Blas blas;
  std::vector<Check> out;
  std::vector<float> x = randn(rng, M * K), w = randn(rng, N * K, 0.03f);
  {
    std::vector<float> ref(M * N);
    ops::linear(x.data(), M, K, w.data(), N, ref.data());
    auto dx = dev(x), dw = dev(w);
    DeviceArray<float> y(M * N);
    GemmArgs g{GemmKind::F32, M, N, K, dx.get(), K, nullptr, dw.get(), K, nullptr, y.get(), N};
    blas.gemm(g, 0);
    out.push_back(check("f32", host(y), ref, f32_rule(K)));
  }
  {
    std::vector<float> xr = x, wr = w, ref(M * N);
    std::vector<uint16_t> xb(M * K), wb(N * K);
    for (size_t i = 0; i < xr.size(); ++i) xr[i] = bf16_to_f32(xb[i] = f32_to_bf16(x[i]));
    for (size_t i = 0; i < wr.size(); ++i) wr[i] = bf16_to_f32(wb[i] = f32_to_bf16(w[i]));
    ops::linear(xr.data(), M, K, wr.data(), N, ref.data());
    DeviceArray<bf16> dx(M * K), dw(N * K);
    DSV4_CUDA_CHECK(cudaMemcpy(dx.get(), xb.data(), xb.size() * 2, cudaMemcpyHostToDevice));
    DSV4_CUDA_CHECK(cudaMemcpy(dw.get(), wb.data(), wb.size() * 2, cudaMemcpyHostToDevice));
    DeviceArray<float> y(M * N);
    GemmArgs g{GemmKind::BF16, M, N, K, dx.get(), K, nullptr, dw.get(), K, nullptr, y.get(), N};
    blas.gemm(g, 0);
    out.push_back(check("bf16 (exact bf16 products)", host(y), ref, f32_rule(K)));
  }
  if (blas.fp8_block_supported()) {
    // W = e4m3 codes × a different power-of-two scale per 128×128 block; x rounded in 1×128 blocks.
    std::vector<uint8_t> codes(N * K);
    std::vector<float> scales((N / 128) * (K / 128)), wq(N * K), xq = x, ref(M * N);
    for (float& s : scales) s = std::ldexp(1.0f, -12 + static_cast<int>(rng() % 6));
    for (int r = 0; r < N; ++r)
      for (int c = 0; c < K; ++c) {
        const float s = scales[(r / 128) * (K / 128) + c / 128];
        codes[r * K + c] = f32_to_e4m3(std::clamp(w[r * K + c] / s, -448.0f, 448.0f));
        wq[r * K + c] = e4m3_to_f32(codes[r * K + c]) * s;
      }
    for (int r = 0; r < M; ++r) ops::fp8_sim(&xq[r * K], K, 128);
    ops::linear(xq.data(), M, K, wq.data(), N, ref.data());
    // cuBLASLt wants the row count a multiple of fp8_row_align(): zero rows (codes and scales) pad it.
    const int align = blas.fp8_row_align(), Mp = (M + align - 1) / align * align;
    std::printf("  [fp8 block-scaled GEMM: rows padded to a multiple of %d]\n", align);
    auto dx = dev(x), dsc = dev(scales);
    auto dcodes = dev(codes);
    DeviceArray<uint8_t> q(Mp * K);
    DeviceArray<float> qs(Mp * K / 128), yp(Mp * N);
    DSV4_CUDA_CHECK(cudaMemset(q.get(), 0, Mp * K));
    DSV4_CUDA_CHECK(cudaMemset(qs.get(), 0, Mp * K / 128 * sizeof(float)));
    quantize_fp8_1x128_cuda(dx.get(), M, K, q.get(), qs.get(), Mp, 0);
    GemmArgs g{GemmKind::FP8Block, Mp, N, K, q.get(), K, qs.get(), dcodes.get(), K, dsc.get(), yp.get(), N};
    blas.gemm(g, 0);
    std::vector<float> all = host(yp);
    DeviceArray<float> y(std::vector<float>(all.begin(), all.begin() + M * N));
    out.push_back(check("fp8 block-scaled", host(y), ref, fp8_mma_rule()));
  } else {
    std::printf("  [fp8 block-scaled GEMM: not offered by this cuBLASLt; the fast path uses bf16]\n");
  }
  return out;
}

// The few-row kernel (decode) against the CPU product of the same rounded operands, for every
// row count 1..8, each weight form, the grouped form (output projection) and beta = 1. N is not
// a multiple of 128 (a partial weight scale block), and the ungrouped cases stop 8 rows short of
// it: the FP8 kernel's last 16-row group is half past the end, and the rows after stay as they were.
std::vector<Check> op_gemv(std::mt19937& rng) {
  const int N = 416, K = 1024, G = 2;  // groups: rows [g·N/G, (g+1)·N/G) read columns [g·K, (g+1)·K)
  std::vector<Check> out;
  std::vector<float> x = randn(rng, kGemvMaxRows * G * K), w = randn(rng, N * K, 0.03f);
  std::vector<float> y0 = randn(rng, kGemvMaxRows * N);
  // W as e4m3 codes with a power-of-two scale per 128×128 block.
  std::vector<uint8_t> codes(N * K);
  std::vector<float> scales(((N + 127) / 128) * (K / 128)), wq(N * K), wb(N * K);
  std::vector<uint16_t> wbits(N * K);
  for (float& sc : scales) sc = std::ldexp(1.0f, -12 + static_cast<int>(rng() % 6));
  for (int r = 0; r < N; ++r)
    for (int c = 0; c < K; ++c) {
      const float sc = scales[(r / 128) * (K / 128) + c / 128];
      codes[r * K + c] = f32_to_e4m3(std::clamp(w[r * K + c] / sc, -448.0f, 448.0f));
      wq[r * K + c] = e4m3_to_f32(codes[r * K + c]) * sc;
      wb[r * K + c] = bf16_to_f32(wbits[r * K + c] = f32_to_bf16(w[r * K + c]));
    }
  auto dx = dev(x), dw = dev(w), dy0 = dev(y0), dsc = dev(scales);
  auto dcodes = dev(codes);
  DeviceArray<bf16> dwb(N * K);
  DSV4_CUDA_CHECK(cudaMemcpy(dwb.get(), wbits.data(), wbits.size() * 2, cudaMemcpyHostToDevice));
  const int64_t ldx = G * K;
  for (int M = 1; M <= kGemvMaxRows; ++M) {
    // x rounded as each form reads it: fp8 blocks, bf16 hi + lo halves, float32.
    std::vector<float> x8(x.begin(), x.begin() + M * ldx), xs(M * ldx);
    for (int r = 0; r < M; ++r) ops::fp8_sim(&x8[r * ldx], ldx, 128);
    for (int i = 0; i < M * ldx; ++i) {
      const float hi = bf16_to_f32(f32_to_bf16(x[i]));
      xs[i] = hi + bf16_to_f32(f32_to_bf16(x[i] - hi));
    }
    DeviceArray<uint8_t> q(M * ldx);
    DeviceArray<float> qs(M * ldx / 128);
    quantize_fp8_1x128_cuda(dx.get(), M, ldx, q.get(), qs.get(), M, 0);
    for (GemvWeights kind : {GemvWeights::F32, GemvWeights::BF16, GemvWeights::FP8Block})
      for (bool grouped : {false, true}) {
        const std::vector<float>& xr = kind == GemvWeights::FP8Block ? x8 : kind == GemvWeights::BF16 ? xs : x;
        const std::vector<float>& wr = kind == GemvWeights::FP8Block ? wq : kind == GemvWeights::BF16 ? wb : w;
        const bool beta = grouped && M % 2 == 1;  // accumulate into y0 on some cases
        const int Nc = grouped ? N : N - 8;       // the rows computed
        std::vector<float> ref(M * N);
        for (int r = 0; r < M; ++r)
          for (int n = 0; n < N; ++n) {
            if (n >= Nc) {
              ref[r * N + n] = y0[r * N + n];
              continue;
            }
            const int64_t c0 = grouped ? (n / (N / G)) * K : 0;
            double acc = 0;
            for (int k = 0; k < K; ++k) acc += static_cast<double>(xr[r * ldx + c0 + k]) * wr[n * K + k];
            ref[r * N + n] = static_cast<float>(acc + (beta ? y0[r * N + n] : 0.0));
          }
        DeviceArray<float> y(std::vector<float>(y0.begin(), y0.begin() + M * N));
        GemvArgs g;
        g.weights = kind;
        g.M = M, g.N = Nc, g.K = K, g.ldw = K;
        g.w_f32 = dw.get(), g.w_bf16 = dwb.get(), g.w_fp8 = dcodes.get(), g.w_scale = dsc.get(), g.ldw_scale = K / 128;
        g.x = dx.get(), g.ldx = ldx, g.xq = q.get(), g.ldxq = ldx, g.xs = qs.get(), g.ldxs = M;
        if (grouped) g.group_rows = N / G, g.group_stride = K;
        g.y = y.get(), g.ldy = N, g.beta = beta ? 1.0f : 0.0f;
        gemv_cuda(g, 0);
        const char* kn = kind == GemvWeights::FP8Block ? "fp8" : kind == GemvWeights::BF16 ? "bf16" : "f32";
        out.push_back(check(str(kn, " M=", M, grouped ? " grouped" : "", beta ? " beta=1" : ""), host(y), ref,
                            f32_rule(K)));
      }
    // The three forms in one launch (linear_many's decode launch) = one launch each, bit for bit.
    std::vector<GemvArgs> mats;
    std::vector<DeviceArray<float>> alone, together;
    for (GemvWeights kind : {GemvWeights::F32, GemvWeights::FP8Block, GemvWeights::BF16}) {
      GemvArgs g;
      g.weights = kind;
      g.M = M, g.N = N, g.K = K, g.ldw = K;
      g.w_f32 = dw.get(), g.w_bf16 = dwb.get(), g.w_fp8 = dcodes.get(), g.w_scale = dsc.get(), g.ldw_scale = K / 128;
      g.x = dx.get(), g.ldx = ldx, g.xq = q.get(), g.ldxq = ldx, g.xs = qs.get(), g.ldxs = M;
      g.ldy = N;
      alone.emplace_back(M * N);
      together.emplace_back(M * N);
      g.y = alone.back().get();
      gemv_cuda(g, 0);
      g.y = together.back().get();
      mats.push_back(g);
    }
    gemv_many_cuda(mats.data(), static_cast<int>(mats.size()), 0);
    for (size_t i = 0; i < mats.size(); ++i)
      out.push_back(check(str("mixed launch, product ", i, " M=", M), host(together[i]), host(alone[i]), 0));
  }
  return out;
}

// An FP8 product that also rounds its output (GemvArgs::yq, the last block of each 128 rows):
// y as the plain launch makes it, and its codes and scales as quantize_fp8_1x128_cuda makes them
// from that y, bit for bit; the counters are zero again after each launch, so a second launch
// (a replayed graph) agrees too. Shapes whose 128-row blocks are split over 1 to 8 blocks (the
// column splits of short and long products), one row and several, alone and beside a product
// without the FP8 output in one launch.
std::vector<Check> op_gemv_fp8_out(std::mt19937& rng) {
  std::vector<Check> out;
  struct Shape {
    int N, K;
  };
  for (const Shape sh : {Shape{128, 4096}, Shape{1024, 1024}, Shape{4096, 512}, Shape{8192, 256}})
    for (int M : {1, 3, 8}) {
      const int N = sh.N, K = sh.K;
      const std::vector<float> w = randn(rng, static_cast<size_t>(N) * K, 40.0f);
      std::vector<uint8_t> codes(w.size());
      for (size_t i = 0; i < w.size(); ++i) codes[i] = f32_to_e4m3(std::clamp(w[i], -448.0f, 448.0f));
      std::vector<float> scales((N / 128) * (K / 128));
      for (float& sc : scales) sc = std::ldexp(1.0f, -10 + static_cast<int>(rng() % 6));
      auto dcodes = dev(codes);
      auto dsc = dev(scales), dx = dev(randn(rng, M * K));
      DeviceArray<uint8_t> xq(M * K);
      DeviceArray<float> xs(M * K / 128);
      quantize_fp8_1x128_cuda(dx.get(), M, K, xq.get(), xs.get(), M, 0);
      GemvArgs g;
      g.weights = GemvWeights::FP8Block;
      g.M = M, g.N = N, g.K = K, g.ldw = K;
      g.w_fp8 = dcodes.get(), g.w_scale = dsc.get(), g.ldw_scale = K / 128;
      g.xq = xq.get(), g.ldxq = K, g.xs = xs.get(), g.ldxs = M, g.ldy = N;
      DeviceArray<float> y_plain(M * N), y(M * N), y_other(M * N), ref_s(M * N / 128), ys(M * N / 128);
      DeviceArray<uint8_t> ref_q(M * N), yq(M * N);
      DeviceArray<uint32_t> done(std::vector<uint32_t>(N / 128, 0));
      g.y = y_plain.get();
      gemv_cuda(g, 0);
      quantize_fp8_1x128_cuda(y_plain.get(), M, N, ref_q.get(), ref_s.get(), M, 0);
      GemvArgs gq = g;
      gq.y = y.get(), gq.yq = yq.get(), gq.ldyq = N, gq.ys = ys.get(), gq.ldys = M, gq.done = done.get();
      const std::string name = str("N=", N, " K=", K, " M=", M);
      for (int launch = 0; launch < 2; ++launch) {
        DSV4_CUDA_CHECK(cudaMemset(yq.get(), 0, M * N));
        DSV4_CUDA_CHECK(cudaMemset(ys.get(), 0, M * N / 128 * sizeof(float)));
        const std::string when = launch ? " (again, beside another product)" : "";
        if (launch == 1) {  // beside a plain product in one launch
          GemvArgs other = g;
          other.y = y_other.get();
          const GemvArgs both[2] = {other, gq};
          gemv_many_cuda(both, 2, 0);
          out.push_back(check(str(name, when, ": other y"), host(y_other), host(y_plain), 0));
        } else {
          gemv_cuda(gq, 0);
        }
        out.push_back(check(str(name, when, ": y"), host(y), host(y_plain), 0));
        out.push_back(check(str(name, when, ": codes"), as_float(host(yq)), as_float(host(ref_q)), 0));
        out.push_back(check(str(name, when, ": scales"), host(ys), host(ref_s), 0));
        std::vector<uint32_t> left = host(done);
        out.push_back(check(str(name, when, ": counters back to zero"), std::vector<float>(left.begin(), left.end()),
                            std::vector<float>(left.size(), 0.0f), 0));
      }
    }
  return out;
}

const OpCase kCases[] = {
    {"moe_route", op_moe_route},     {"moe_experts", op_moe_experts}, {"moe_experts_prefill", op_moe_experts_prefill},
    {"moe_group", op_moe_group},     {"moe_route_group", op_moe_route_group}, {"swiglu_quant", op_swiglu_quant},
    {"gemm", op_gemm},
    {"gemv", op_gemv},               {"gemv_fp8_out", op_gemv_fp8_out},
};

}  // namespace

DSV4_OP_CASES(Products, CudaProductsVsCpu);
