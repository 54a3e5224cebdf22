// The lightning indexer's CUDA scores and top-k against the CPU oracle (ops/indexer.h): the few-row
// kernel in several shapes and both cache forms, rows at 1.2M tokens, and the top-k's paths
// (ties, gathered buckets, crowded buckets, slices from global memory, the scores' digit counts).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>
#include <utility>

#include "cache_rows.h"
#include "op_cases.h"
#include "ops/cuda_ops.h"
#include "ops/indexer.h"
#include "ops/quant.h"

using namespace dsv4;
using namespace dsv4::cuda;
using namespace dsv4::testing_gpu;

namespace {

// The rows' scores (GPU, [rows, ld]) and the CPU oracle's for the same rows, each row's count of
// entries (pos + 1) / 4 long, concatenated: {got, ref}.
std::pair<std::vector<float>, std::vector<float>> scores_vs_oracle(const std::vector<float>& gpu, int64_t ld,
                                                                   const std::vector<float>& q,
                                                                   const std::vector<float>& w, float wscale,
                                                                   const std::vector<float>& k,
                                                                   const std::vector<int32_t>& pos, int HI, int DI) {
  std::vector<float> got, ref;
  for (size_t r = 0; r < pos.size(); ++r) {
    const int count = (pos[r] + 1) / 4;
    std::vector<float> ws(HI), sc(count);
    for (int h = 0; h < HI; ++h) ws[h] = w[r * HI + h] * wscale;
    ops::indexer_scores(&q[r * HI * DI], ws.data(), HI, DI, k.data(), count, sc.data());
    ref.insert(ref.end(), sc.begin(), sc.end());
    got.insert(got.end(), gpu.begin() + r * ld, gpu.begin() + r * ld + count);
  }
  return {got, ref};
}

std::vector<Check> op_indexer(std::mt19937& rng) {
  const int K = 512;
  std::vector<Check> out;
  // Short rows: V4's shape (and the top-k there), then the other head dims the kernel is built
  // for, with head counts off the 16-head MMA tiles and, at DI = 256, past one pass of 32 heads;
  // at DI = 128 (the wgmma kernel's compact entries) fewer heads than its 64 and two passes.
  struct Shape {
    int HI, DI;
  };
  for (const Shape sh : {Shape{64, 128}, Shape{3, 64}, Shape{20, 32}, Shape{70, 256}, Shape{24, 128}, Shape{100, 128}}) {
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
      std::tie(got, ref) = scores_vs_oracle(sh, count_max, q, w, wscale, k, pos, HI, DI);
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

  // Compact entries and q far from the typical: entries whose block scales span many binades (a
  // block 2^-15 below the rest, an all-zero block at the FP4 rule's least scale), and a q head with
  // a block 2^-20 below its others. The products stay exact whatever the scales (a faster
  // encoding that only holds a window of binades must fall back for these).
  for (const Shape sh : {Shape{64, 128}, Shape{70, 256}, Shape{20, 32}}) {
    const int HI = sh.HI, DI = sh.DI, count_max = 512;
    const std::vector<int32_t> pos = {2047, 1500, 2047};
    const int rows = static_cast<int>(pos.size());
    std::vector<float> k = randn(rng, count_max * DI);
    for (int i = 0; i < count_max; ++i) {
      float* e = &k[i * DI];
      if (DI >= 64 && i % 3 == 1)
        for (int j = 0; j < 32; ++j) e[DI - 32 + j] *= std::ldexp(1.0f, -15);
      if (DI >= 64 && i % 7 == 2)
        for (int j = 0; j < 32; ++j) e[j] = 0.0f;
      ops::fp4_sim(e, DI, 32);
    }
    std::vector<float> q = randn(rng, rows * HI * DI), w = randn(rng, rows * HI);
    if (DI >= 64)
      for (int j = 0; j < 32; ++j) q[(1 * HI + 5) * DI + 32 + j] *= std::ldexp(1.0f, -20);
    for (int r = 0; r < rows; ++r) ops::fp4_sim(&q[r * HI * DI], HI * DI, 32);
    const float wscale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(DI) * HI));
    HostRows rowsk = make_rows(k, count_max, DI, 0, true, true);
    LayerCache lc;
    lc.idx_entries = rowsk.view();
    DeviceArray<LayerCache> dlc(std::vector<LayerCache>{lc});
    auto dq = dev(q), dw = dev(w);
    auto dslot = dev(std::vector<int32_t>(rows, 0)), dpos = dev(pos);
    DeviceArray<float> score(rows * count_max);
    indexer_scores_cuda(dq.get(), dw.get(), wscale, rows, HI, DI, dslot.get(), dpos.get(), dlc.get(), true, score.get(),
                        count_max, count_max, 0);
    const auto [got, ref] = scores_vs_oracle(host(score), count_max, q, w, wscale, k, pos, HI, DI);
    out.push_back(check(str("scores (compact entries, wide scales, a q block far below) HI=", HI, " DI=", DI), got, ref,
                        f32_rule(HI * DI)));
  }

  // Rows' scores counted by the top-k's first digit (the top bits of the order key), as the
  // scores kernel counts them for the top-k.
  auto digit_counts = [](const std::vector<float>& sc, int64_t ld, const std::vector<int32_t>& tpos) {
    std::vector<uint32_t> c(tpos.size() * kTopkDigits, 0);
    for (size_t r = 0; r < tpos.size(); ++r)
      for (int i = 0; i < (tpos[r] + 1) / 4; ++i) {
        const float v = sc[r * ld + i];
        uint32_t u;
        std::memcpy(&u, &v, 4);
        if (v == 0.0f) u = 0;
        const uint32_t key = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
        ++c[r * kTopkDigits + (key >> (32 - kTopkDigitBits))];
      }
    return c;
  };

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
    std::vector<float> same_got, same_ref;
    for (int r = 0; r < rows; ++r)
      for (int i = 0; i < (pos[r] + 1) / 4; ++i) {
        same_got.push_back(s2[static_cast<size_t>(r) * count_max + i]);
        same_ref.push_back(sh[static_cast<size_t>(r) * count_max + i]);
      }
    const std::vector<uint32_t> want_counts = digit_counts(s2, count_max, pos);
    const std::vector<float> count_got(dh.begin(), dh.end()), count_ref(want_counts.begin(), want_counts.end());
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
  // with_digits: the first digit's counts given (made here on the host), and checked cleared after.
  auto topk_case = [&](const std::string& what, const std::vector<float>& sc, int64_t ld,
                       const std::vector<int32_t>& tpos, bool with_digits = false) {
    const int nr = static_cast<int>(tpos.size());
    auto dsc = dev(sc);
    auto dtp = dev(tpos);
    DeviceArray<int32_t> idx(nr * K);
    DeviceArray<uint32_t> digits(with_digits ? digit_counts(sc, ld, tpos) : std::vector<uint32_t>(1, 0));
    topk_cuda(dsc.get(), ld, nr, dtp.get(), 4, K, idx.get(), 0, with_digits ? digits.get() : nullptr);
    if (with_digits) {
      const std::vector<uint32_t> after = host(digits);
      const std::vector<float> after_f(after.begin(), after.end());
      out.push_back(check(what + ": counters cleared", after_f, std::vector<float>(after.size(), 0.0f), 0));
    }
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
    const std::string what = "long topk (distinct: gathered; a bucket taken whole; one crowded bucket, distinct and tied)";
    topk_case(what, sc, count_max, tpos);
    topk_case(what + ", digits given", sc, count_max, tpos, true);
  }
  {
    // Rows longer than 16 blocks keep in shared memory (here 37504 keys a slice): the passes read
    // the scores from global memory. The scores on a grid (crowded buckets, cluster rounds) and
    // as they came (the few keys of a bucket gathered), counting the first digit or given it.
    const int n = 600000;
    std::vector<float> sc(2 * static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) {
      sc[i] = grid(long_scores[i % count_max], 0.25f);
      sc[n + i] = long_scores[(i * 7) % count_max];
    }
    const std::vector<int32_t> tpos = {4 * n - 1, 4 * n - 1};
    topk_case("long topk (600000, slices from global)", sc, n, tpos);
    topk_case("long topk (600000, slices from global, digits given)", sc, n, tpos, true);
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
    topk_case("topk (40 rows of 20000, digits given)", sc, n, tpos, true);
  }
  {
    // Short rows (K < count ≤ 8192: one block selects from its registers, decode up to 32K tokens):
    // distinct scores at 4K tokens and at the path's longest row; K + 1 keys; a coarse grid (ties at
    // the threshold); a row of equal scores; a bucket taken whole (500 keys at 4, then 12 at 3);
    // distinct keys sharing one first-digit bucket (the later digits). In rows of their own length
    // and in rows long enough for a cluster of blocks (rank 0 alone selects), counting the first
    // digit or given it.
    const int n = 8192;
    const std::vector<int32_t> tpos = {4 * 1024 - 1, 4 * n - 1, 4 * (K + 1) - 1, 4 * 3000 + 2,
                                       4 * 1024 - 1, 4 * 5000 - 1, 4 * 7000 - 1};
    for (const int64_t ld : {static_cast<int64_t>(n), static_cast<int64_t>(262144)}) {
      std::vector<float> sc(tpos.size() * static_cast<size_t>(ld), 0.0f);
      for (int i = 0; i < n; ++i) {
        const float s0 = long_scores[i], s1 = long_scores[count_max + i];
        const int64_t spread = static_cast<int64_t>(i) * 7919;  // a permutation of 0 .. n − 1
        float* row = sc.data();
        row[i] = s0;
        row[ld + i] = s1;
        row[2 * ld + i] = grid(s0, 0.25f);
        row[3 * ld + i] = grid(s1, 1.0f);
        row[4 * ld + i] = 1.0f;
        row[5 * ld + i] = i % 10 == 0 && i < 5000 ? 4.0f : i % 10 == 5 && i < 120 ? 3.0f : grid(s0, 0.25f) / 64.0f;
        row[6 * ld + i] = 1.0f + static_cast<float>(spread % n) * 0x1p-20f;
      }
      const std::string what = str("short topk (ld ", ld, ": distinct, K + 1, coarse grids, equal, a bucket whole, one crowded bucket)");
      topk_case(what, sc, ld, tpos);
      topk_case(what + ", digits given", sc, ld, tpos, true);
    }
  }
  return out;
}

const OpCase kCases[] = {{"indexer", op_indexer}};

}  // namespace

DSV4_OP_CASES(Indexer, CudaIndexerVsCpu);
