// The CUDA mHC ops against the CPU oracle (ops/mhc.h) and against each other: hc_pre from a
// GEMM's mix or from hc_mix's partials, the fused decode kernel (one thread-block cluster per
// token) with its deferred comb, its residual step (hc_post, the MoE combine) and its FP8 output,
// hc_post, and the head. The comparison rules are those of test_ops.cpp (gpu_test_util.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "core/dtype.h"
#include "op_cases.h"
#include "ops/cuda_ops.h"
#include "ops/linear.h"
#include "ops/mhc.h"
#include "ops/moe.h"
#include "ops/rmsnorm.h"

using namespace dsv4;
using namespace dsv4::cuda;
using namespace dsv4::testing_gpu;

namespace {

std::vector<Check> op_mhc(std::mt19937& rng) {
  const int T = 7, n = 4, D = 1024, nD = n * D, rows = (2 + n) * n;
  const ops::HcShape s{n, D, kEps, kEps, 20};
  std::vector<float> X = randn(rng, T * nD), fn = randn(rng, rows * nD, 1.0f / std::sqrt(static_cast<float>(nD)));
  std::vector<float> base = randn(rng, rows), scale = {0.7f, 0.4f, 0.9f}, norm = randn(rng, D);
  std::vector<float> mix(T * rows);
  ops::linear(X.data(), T, nD, fn.data(), rows, mix.data());
  std::vector<float> y(T * D), pre(T * n), post(T * n), comb(T * n * n), a(T * D);
  ops::hc_pre(X.data(), T, s, fn.data(), base.data(), scale.data(), y.data(), pre.data(), post.data(), comb.data());
  ops::rmsnorm(y.data(), T, D, norm.data(), kEps, a.data());
  auto dX = dev(X), dmix = dev(mix), dbase = dev(base), dscale = dev(scale), dnorm = dev(norm);
  DeviceArray<float> da(T * D), dpost(T * n), dcomb(T * n * n);
  hc_pre_cuda(dX.get(), dmix.get(), T, n, D, dbase.get(), dscale.get(), kEps, kEps, 20, false, dnorm.get(), da.get(),
              dpost.get(), dcomb.get(), 0);
  std::vector<Check> out;
  out.push_back(check("hc_pre a", host(da), a, f32_rule(nD)));
  out.push_back(check("hc_pre post", host(dpost), post, f32_rule(nD)));
  out.push_back(check("hc_pre comb", host(dcomb), comb, f32_rule(nD)));
  // hc_post on the same streams
  std::vector<float> o = randn(rng, T * D), Xo(T * nD);
  ops::hc_post(X.data(), o.data(), post.data(), comb.data(), T, s, Xo.data());
  auto dO = dev(o), dP = dev(post), dC = dev(comb);
  DeviceArray<float> dXo(T * nD);
  hc_post_cuda(dX.get(), dO.get(), dP.get(), dC.get(), T, n, D, dXo.get(), 0);
  out.push_back(check("hc_post", host(dXo), Xo, f32_rule(n)));
  // HcHead + the final norm
  std::vector<float> hfn = randn(rng, n * nD, 1.0f / std::sqrt(static_cast<float>(nD))), hbase = randn(rng, n),
                     hscale = {0.5f}, hmix(T * n), hy(T * D);
  ops::linear(X.data(), T, nD, hfn.data(), n, hmix.data());
  ops::hc_head(X.data(), T, s, hfn.data(), hbase.data(), hscale.data(), hy.data());
  ops::rmsnorm(hy.data(), T, D, norm.data(), kEps, hy.data());
  auto dhmix = dev(hmix), dhbase = dev(hbase), dhscale = dev(hscale);
  DeviceArray<float> dhy(T * D);
  hc_pre_cuda(dX.get(), dhmix.get(), T, n, D, dhbase.get(), dhscale.get(), kEps, kEps, 20, true, dnorm.get(), dhy.get(),
              nullptr, nullptr, 0);
  out.push_back(check("hc_head", host(dhy), hy, f32_rule(nD)));
  // The few-token mix product (decode): column-slice partials summed by hc_pre, for the sub-layer
  // mix (24 rows) and the head's (n rows), on the first kHcMixMaxTokens tokens.
  const int Tm = std::min(T, kHcMixMaxTokens), S = 16;
  DeviceArray<float> parts(S * Tm * (rows + 1)), da2(Tm * D), dpost2(Tm * n), dcomb2(Tm * n * n), dhy2(Tm * D);
  auto dfn = dev(fn), dhfn = dev(hfn);
  hc_mix_cuda(dX.get(), dfn.get(), Tm, nD, rows, parts.get(), S, 0);
  hc_pre_cuda(dX.get(), parts.get(), Tm, n, D, dbase.get(), dscale.get(), kEps, kEps, 20, false, dnorm.get(), da2.get(),
              dpost2.get(), dcomb2.get(), 0, S);
  auto first = [](const std::vector<float>& v, size_t k) { return std::vector<float>(v.begin(), v.begin() + k); };
  out.push_back(check("hc_mix + hc_pre a", host(da2), first(a, Tm * D), f32_rule(nD)));
  out.push_back(check("hc_mix + hc_pre comb", host(dcomb2), first(comb, Tm * n * n), f32_rule(nD)));
  hc_mix_cuda(dX.get(), dhfn.get(), Tm, nD, n, parts.get(), S, 0);
  hc_pre_cuda(dX.get(), parts.get(), Tm, n, D, dhbase.get(), dhscale.get(), kEps, kEps, 20, true, dnorm.get(),
              dhy2.get(), nullptr, nullptr, 0, S);
  out.push_back(check("hc_mix + hc_head", host(dhy2), first(hy, Tm * D), f32_rule(nD)));
  // With the FP8 rounding of a fused in: the same a, and the codes and scales of quantize_fp8 on it.
  DeviceArray<uint8_t> q1(Tm * D), q2(Tm * D);
  DeviceArray<float> s1(Tm * D / 128), s2(Tm * D / 128), da3(Tm * D);
  hc_mix_cuda(dX.get(), dfn.get(), Tm, nD, rows, parts.get(), S, 0);
  hc_pre_cuda(dX.get(), parts.get(), Tm, n, D, dbase.get(), dscale.get(), kEps, kEps, 20, false, dnorm.get(), da2.get(),
              dpost2.get(), dcomb2.get(), 0, S);
  hc_pre_cuda(dX.get(), parts.get(), Tm, n, D, dbase.get(), dscale.get(), kEps, kEps, 20, false, dnorm.get(), da3.get(),
              dpost2.get(), dcomb2.get(), 0, S, q1.get(), s1.get());
  quantize_fp8_1x128_cuda(da3.get(), Tm, D, q2.get(), s2.get(), Tm, 0);
  out.push_back(check("hc_pre + fp8 a", host(da3), host(da2), 0));
  out.push_back(check("hc_pre + fp8 codes", as_float(host(q1)), as_float(host(q2)), 0));
  out.push_back(check("hc_pre + fp8 scales", host(s1), host(s2), 0));
  // hc_mix + hc_pre in one launch (decode: a cluster per token) for 1..kHcMixMaxTokens tokens,
  // each count against the oracle's first tokens: D = 1024 (8 blocks of one 128-column unit),
  // 2560 (16 blocks of one or two units) and 4096 (16 blocks of two). A block that missed another's
  // partial mix or Σ y² would be far off; a second run must give the same bits.
  for (const int Df : {1024, 2560, 4096}) {
    const int nDf = n * Df, Tf = kHcMixMaxTokens;
    if (!hc_pre_fused_fits(Tf, n, Df)) {
      ADD_FAILURE() << "hc_pre_fused does not fit " << Tf << " tokens of D = " << Df;
      continue;
    }
    const ops::HcShape sf{n, Df, kEps, kEps, 20};
    std::vector<float> Xf = randn(rng, Tf * nDf), fnf = randn(rng, rows * nDf, 1.0f / std::sqrt(static_cast<float>(nDf)));
    std::vector<float> hfnf = randn(rng, n * nDf, 1.0f / std::sqrt(static_cast<float>(nDf))), normf = randn(rng, Df);
    std::vector<float> yf(Tf * Df), pref(Tf * n), postf(Tf * n), combf(Tf * n * n), af(Tf * Df), hyf(Tf * Df);
    ops::hc_pre(Xf.data(), Tf, sf, fnf.data(), base.data(), scale.data(), yf.data(), pref.data(), postf.data(), combf.data());
    ops::rmsnorm(yf.data(), Tf, Df, normf.data(), kEps, af.data());
    ops::hc_head(Xf.data(), Tf, sf, hfnf.data(), hbase.data(), hscale.data(), hyf.data());
    ops::rmsnorm(hyf.data(), Tf, Df, normf.data(), kEps, hyf.data());
    auto dXf = dev(Xf), dfnf = dev(fnf), dhfnf = dev(hfnf), dnormf = dev(normf);
    std::vector<float> ga, gpost, gcomb, ghy, ra, rpost, rcomb, rhy, ga2, gaq, qcodes, qcodes2, qscales, qscales2, abf, abf_want;
    std::vector<float> gad, gpostd, gcombd;
    auto append = [](std::vector<float>& to, const std::vector<float>& from) { to.insert(to.end(), from.begin(), from.end()); };
    // The previous sub-layer's hc_post done first (post_first), from o or from the MoE combine's
    // parts: [variant][output] got and want: X', a, post, comb (comb deferred, as decode runs it), and
    // the head's X' and y.
    const int kE = 6;
    std::vector<int32_t> invf(Tf * kE);
    std::iota(invf.begin(), invf.end(), 0);
    std::shuffle(invf.begin(), invf.end(), rng);
    auto dOf = dev(randn(rng, Tf * Df)), dys = dev(randn(rng, Tf * kE * Df)), dsh = dev(randn(rng, Tf * Df));
    auto dinv = dev(invf);
    const char* pf_out[6] = {"X'", "a", "post", "comb", "head X'", "head"};
    std::vector<float> pf_got[2][6], pf_want[2][6];
    for (int Tk = 1; Tk <= Tf; ++Tk) {
      DeviceArray<float> fa(Tk * Df), fa2(Tk * Df), fpost(Tk * n), fcomb(Tk * n * n), fhy(Tk * Df), faq(Tk * Df);
      DeviceArray<uint8_t> fq(Tk * Df), fq2(Tk * Df);
      DeviceArray<float> fs(Tk * Df / 128), fs2(Tk * Df / 128);
      DeviceArray<bf16> fab(Tk * Df);
      hc_pre_fused_cuda(dXf.get(), dfnf.get(), Tk, n, Df, dbase.get(), dscale.get(), kEps, kEps, 20, false, dnormf.get(),
                        fa.get(), fpost.get(), fcomb.get(), 0);
      hc_pre_fused_cuda(dXf.get(), dfnf.get(), Tk, n, Df, dbase.get(), dscale.get(), kEps, kEps, 20, false, dnormf.get(),
                        fa2.get(), fpost.get(), fcomb.get(), 0);
      hc_pre_fused_cuda(dXf.get(), dhfnf.get(), Tk, n, Df, dhbase.get(), dhscale.get(), kEps, kEps, 20, true,
                        dnormf.get(), fhy.get(), nullptr, nullptr, 0);
      hc_pre_fused_cuda(dXf.get(), dfnf.get(), Tk, n, Df, dbase.get(), dscale.get(), kEps, kEps, 20, false, dnormf.get(),
                        faq.get(), fpost.get(), fcomb.get(), 0, fq.get(), fs.get(), nullptr, nullptr, fab.get());
      quantize_fp8_1x128_cuda(faq.get(), Tk, Df, fq2.get(), fs2.get(), Tk, 0);
      // post and comb deferred to hc_comb_cuda (decode's side stream): the same a, post and comb.
      DeviceArray<float> fad(Tk * Df), fpostd(Tk * n), fcombd(Tk * n * n), mix_row(Tk * kHcMixRow);
      hc_pre_fused_cuda(dXf.get(), dfnf.get(), Tk, n, Df, dbase.get(), dscale.get(), kEps, kEps, 20, false, dnormf.get(),
                        fad.get(), nullptr, nullptr, 0, nullptr, nullptr, mix_row.get());
      hc_comb_cuda(mix_row.get(), Tk, n, Df, dbase.get(), dscale.get(), kEps, kEps, 20, fpostd.get(), fcombd.get(), 0);
      for (const int moe : {0, 1}) {  // want: moe_combine_cuda, hc_post_cuda, the fused kernel; got: one launch
        DeviceArray<float> oc(Tk * Df), Xw(Tk * nDf), Xg(Tk * nDf), Xh(Tk * nDf), aw(Tk * Df), ag(Tk * Df), hw(Tk * Df),
            hg(Tk * Df), roww(Tk * kHcMixRow), rowg(Tk * kHcMixRow), pw(Tk * n), pg(Tk * n), cw(Tk * n * n), cg(Tk * n * n);
        if (moe) moe_combine_cuda(dys.get(), dinv.get(), dsh.get(), Tk, kE, Df, oc.get(), 0);
        hc_post_cuda(dXf.get(), moe ? oc.get() : dOf.get(), fpost.get(), fcomb.get(), Tk, n, Df, Xw.get(), 0);
        hc_pre_fused_cuda(Xw.get(), dfnf.get(), Tk, n, Df, dbase.get(), dscale.get(), kEps, kEps, 20, false,
                          dnormf.get(), aw.get(), nullptr, nullptr, 0, nullptr, nullptr, roww.get());
        hc_comb_cuda(roww.get(), Tk, n, Df, dbase.get(), dscale.get(), kEps, kEps, 20, pw.get(), cw.get(), 0);
        hc_pre_fused_cuda(Xw.get(), dhfnf.get(), Tk, n, Df, dhbase.get(), dhscale.get(), kEps, kEps, 20, true,
                          dnormf.get(), hw.get(), nullptr, nullptr, 0);
        HcPostArgs step{dXf.get(), dOf.get(), {}, fpost.get(), fcomb.get(), Xg.get()};
        if (moe) step.moe = {dys.get(), dinv.get(), dsh.get(), kE};
        hc_pre_fused_cuda(Xg.get(), dfnf.get(), Tk, n, Df, dbase.get(), dscale.get(), kEps, kEps, 20, false,
                          dnormf.get(), ag.get(), nullptr, nullptr, 0, nullptr, nullptr, rowg.get(), &step);
        hc_comb_cuda(rowg.get(), Tk, n, Df, dbase.get(), dscale.get(), kEps, kEps, 20, pg.get(), cg.get(), 0);
        step.Xout = Xh.get();
        hc_pre_fused_cuda(Xh.get(), dhfnf.get(), Tk, n, Df, dhbase.get(), dhscale.get(), kEps, kEps, 20, true,
                          dnormf.get(), hg.get(), nullptr, nullptr, 0, nullptr, nullptr, nullptr, &step);
        const DeviceArray<float>* got[6] = {&Xg, &ag, &pg, &cg, &Xh, &hg};
        const DeviceArray<float>* want[6] = {&Xw, &aw, &pw, &cw, &Xw, &hw};
        for (int i = 0; i < 6; ++i) {
          append(pf_got[moe][i], host(*got[i]));
          append(pf_want[moe][i], host(*want[i]));
        }
      }
      append(gad, host(fad));
      append(gpostd, host(fpostd));
      append(gcombd, host(fcombd));
      append(ga, host(fa));
      append(ga2, host(fa2));
      append(gaq, host(faq));
      append(gpost, host(fpost));
      append(gcomb, host(fcomb));
      append(ghy, host(fhy));
      append(qcodes, as_float(host(fq)));
      for (const float v : host(faq)) abf_want.push_back(bf16_to_f32(f32_to_bf16(v)));  // a rounded on the host
      for (const bf16& b : host(fab)) abf.push_back(__bfloat162float(b));
      append(qcodes2, as_float(host(fq2)));
      append(qscales, host(fs));
      append(qscales2, host(fs2));
      append(ra, first(af, Tk * Df));
      append(rpost, first(postf, Tk * n));
      append(rcomb, first(combf, Tk * n * n));
      append(rhy, first(hyf, Tk * Df));
    }
    const std::string at = str(" D=", Df);
    out.push_back(check("hc_pre_fused a" + at, ga, ra, f32_rule(nDf)));
    out.push_back(check("hc_pre_fused post" + at, gpost, rpost, f32_rule(nDf)));
    out.push_back(check("hc_pre_fused comb" + at, gcomb, rcomb, f32_rule(nDf)));
    out.push_back(check("hc_pre_fused head" + at, ghy, rhy, f32_rule(nDf)));
    out.push_back(check("hc_pre_fused rerun" + at, ga2, ga, 0));
    out.push_back(check("hc_pre_fused + fp8 a" + at, gaq, ga, 0));
    out.push_back(check("hc_pre_fused + fp8 codes" + at, qcodes, qcodes2, 0));
    out.push_back(check("hc_pre_fused + fp8 scales" + at, qscales, qscales2, 0));
    out.push_back(check("hc_pre_fused + bf16 a" + at, abf, abf_want, 0));
    out.push_back(check("hc_pre_fused, comb deferred: a" + at, gad, ga, 0));
    out.push_back(check("hc_pre_fused, comb deferred: post" + at, gpostd, gpost, 0));
    out.push_back(check("hc_pre_fused, comb deferred: comb" + at, gcombd, gcomb, 0));
    for (int moe = 0; moe < 2; ++moe)
      for (int i = 0; i < 6; ++i)
        out.push_back(check(str("hc_pre_fused, ", moe ? "moe_combine + " : "", "hc_post first: ", pf_out[i], at),
                            pf_got[moe][i], pf_want[moe][i], 0));
  }
  return out;
}

const OpCase kCases[] = {{"mhc", op_mhc}};

}  // namespace

DSV4_OP_CASES(Mhc, CudaMhcVsCpu);
