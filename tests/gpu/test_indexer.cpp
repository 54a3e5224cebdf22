// The indexer scores of many query rows (prefill: indexer_scores_cuda above 64 rows) against
// the CPU oracle, on batches shaped like prefill chunks: several sequences (so that blocks of
// rows straddle a sequence boundary), rows at position 0..2 (no entries), counts off the
// kernel's tiles, a row count off its blocks, head counts off its passes, both cache forms. The
// rule is test_ops.cpp's for the few-row kernel: float32 in another summation order
// (f32_rule over HI·DI products), and nothing written past a row's count. Then the throughput
// of both kernels on the same rows at 128K and 1M tokens (printed, not asserted).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "op_cases.h"
#include "ops/cuda_ops.h"
#include "ops/indexer.h"
#include "ops/quant.h"

using namespace dsv4;
using namespace dsv4::cuda;
using namespace dsv4::testing_gpu;

namespace {

// One sequence's indexer entries as the compressor writes them: e2m1 codes (two a byte, element
// 2j in the low nibble) and E8M0 scales per 32, here random (scales 2^-2..2^2), and their values.
struct Entries {
  int count = 0, DI = 0;
  std::vector<uint8_t> codes, scales;
  std::vector<float> values;  // [count, DI]
  DeviceArray<float> d_f32;
  DeviceArray<uint8_t> d_codes, d_scales;

  Entries(std::mt19937& rng, int count_, int DI_, bool compact) : count(count_), DI(DI_) {
    const int rows = std::max(1, count);  // a sequence without entries still has a (never read) row
    codes.resize(static_cast<size_t>(rows) * DI / 2);
    scales.resize(static_cast<size_t>(rows) * DI / 32);
    for (uint8_t& c : codes) c = static_cast<uint8_t>(rng());
    for (uint8_t& s : scales) s = static_cast<uint8_t>(125 + rng() % 5);
    values.resize(static_cast<size_t>(rows) * DI);
    for (size_t i = 0; i < static_cast<size_t>(rows); ++i)
      for (int j = 0; j < DI; ++j) {
        const uint8_t byte = codes[(i * DI + j) / 2];
        values[i * DI + j] = e2m1_to_f32((j & 1) ? byte >> 4 : byte & 0xf) * e8m0_to_f32(scales[(i * DI + j) / 32]);
      }
    if (compact) {
      d_codes = dev(codes);
      d_scales = dev(scales);
    } else {
      d_f32 = dev(values);
    }
  }
  CacheRows view() { return {d_f32.get(), d_codes.get(), d_scales.get(), nullptr}; }
};

// A chunk of one sequence: T rows at positions pos0.. (decode: T = 1).
struct Chunk {
  int T, pos0;
};

// Whether entry i of a row with `count` entries is compared (all of short rows; the ends and a
// stride of long ones, whose full CPU reference would take seconds).
bool compared(int i, int count) { return count <= 512 || i < 80 || i >= count - 80 || i % 61 == 0; }

// Scores of a batch of chunks (sequence s in slot s) through indexer_scores_cuda against the
// oracle: the compared scores, then every score past each row's count (must stay NaN).
std::vector<Check> scores_case(std::mt19937& rng, const std::string& what, int HI, int DI, bool compact,
                               const std::vector<Chunk>& chunks) {
  std::vector<int32_t> slot, pos;
  std::vector<Entries> entries;
  entries.reserve(chunks.size());
  int max_count = 0;
  for (size_t s = 0; s < chunks.size(); ++s) {
    const Chunk& c = chunks[s];
    for (int t = 0; t < c.T; ++t) slot.push_back(static_cast<int32_t>(s)), pos.push_back(c.pos0 + t);
    const int count = (c.pos0 + c.T) / 4;
    entries.emplace_back(rng, count, DI, compact);
    max_count = std::max(max_count, count);
  }
  const int rows = static_cast<int>(slot.size());
  const int64_t ld = max_count + 5;  // a row stride past the longest row
  std::vector<float> q = randn(rng, static_cast<size_t>(rows) * HI * DI), w = randn(rng, static_cast<size_t>(rows) * HI);
  for (int r = 0; r < rows; ++r) ops::fp4_sim(&q[static_cast<size_t>(r) * HI * DI], HI * DI, 32);
  const float wscale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(DI) * HI));

  std::vector<LayerCache> table(chunks.size());
  for (size_t s = 0; s < chunks.size(); ++s) table[s].idx_entries = entries[s].view();
  DeviceArray<LayerCache> dtable(table);
  auto dq = dev(q), dw = dev(w);
  auto dslot = dev(slot), dpos = dev(pos);
  DeviceArray<float> score(static_cast<size_t>(rows) * ld);
  DSV4_CUDA_CHECK(cudaMemset(score.get(), 0xFF, score.bytes()));  // NaN: "not written"
  indexer_scores_cuda(dq.get(), dw.get(), wscale, rows, HI, DI, dslot.get(), dpos.get(), dtable.get(), compact,
                      score.get(), ld, max_count, 0);
  const std::vector<float> sh = host(score);

  std::vector<float> got, ref;
  Diff past;  // scores past the count that were written
  for (int r = 0; r < rows; ++r) {
    const int count = (pos[r] + 1) / 4;
    const Entries& e = entries[slot[r]];
    std::vector<float> ws(HI);
    for (int h = 0; h < HI; ++h) ws[h] = w[static_cast<size_t>(r) * HI + h] * wscale;
    for (int i = 0; i < count; ++i) {
      if (!compared(i, count)) continue;
      float want = 0.0f;
      ops::indexer_scores(&q[static_cast<size_t>(r) * HI * DI], ws.data(), HI, DI, &e.values[static_cast<size_t>(i) * DI],
                          1, &want);
      ref.push_back(want);
      got.push_back(sh[static_cast<size_t>(r) * ld + i]);
    }
    for (int64_t i = count; i < ld; ++i, ++past.n) past.far += !std::isnan(sh[static_cast<size_t>(r) * ld + i]);
  }
  const std::string name = str(what, " HI=", HI, " DI=", DI, compact ? " compact" : " f32", " (", rows, " rows)");
  return {check(name, got, ref, f32_rule(static_cast<int64_t>(HI) * DI)), {name + ": nothing past the count", past, 0}};
}

std::vector<Check> op_indexer_prefill(std::mt19937& rng) {
  std::vector<Check> out;
  auto add = [&](std::vector<Check> c) { out.insert(out.end(), c.begin(), c.end()); };
  // V4's shape: a prompt's first chunk (counts 0..37, rows 148..151 straddle into the next
  // sequence), a chunk deep into a prompt (counts 5000..5050: several parts stride over ~80
  // tiles), a lone row (353: the last block has one row of three).
  const std::vector<Chunk> prefill = {{150, 0}, {203, 20000}, {1, 2599}};
  for (bool compact : {true, false}) add(scores_case(rng, "prefill", 64, 128, compact, prefill));
  // Heads off the 64-head pass: two passes (the second of 6 heads), and one mostly empty pass.
  for (int HI : {70, 3}) add(scores_case(rng, "heads", HI, 128, true, {{90, 1000}}));
  // A decode batch past 64 rows: every row its own sequence, so every block takes one pass a row.
  std::vector<Chunk> decode;
  for (int s = 0; s < 70; ++s) decode.push_back({1, 37 * s + 2});
  add(scores_case(rng, "one row a sequence", 64, 128, true, decode));
  // A head dim the many-row kernel is not built for stays on the few-row kernel.
  add(scores_case(rng, "few-row fallback", 8, 64, true, {{80, 500}}));
  return out;
}

const OpCase kCases[] = {{"indexer_prefill", op_indexer_prefill}};

// Seconds of the fastest of `reps` runs of f (after one warm-up).
template <class F>
double best_seconds(F&& f, int reps = 5) {
  cudaEvent_t a, b;
  DSV4_CUDA_CHECK(cudaEventCreate(&a));
  DSV4_CUDA_CHECK(cudaEventCreate(&b));
  f();
  float best = 1e30f;
  for (int i = 0; i < reps; ++i) {
    DSV4_CUDA_CHECK(cudaEventRecord(a));
    f();
    DSV4_CUDA_CHECK(cudaEventRecord(b));
    DSV4_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    DSV4_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    best = std::min(best, ms);
  }
  DSV4_CUDA_CHECK(cudaEventDestroy(a));
  DSV4_CUDA_CHECK(cudaEventDestroy(b));
  return best * 1e-3;
}

}  // namespace

DSV4_OP_CASES(Indexer, IndexerPrefillVsCpu);

// A prefill chunk of 256 rows at 128K and at 1M tokens (V4-Flash: HI = 64, DI = 128, compact
// entries): the many-row kernel in one call, the few-row kernel on the same rows in calls of 64,
// and the top-k that follows. Checked first (both against the oracle on a sample), then timed.
TEST(IndexerPrefill, Throughput) {
  const int HI = 64, DI = 128, rows = 256, K = 512;
  std::mt19937 rng(99);
  for (const int tokens : {131072, 1048576}) {
    const int count_max = tokens / 4;
    std::vector<int32_t> pos(rows), slot(rows, 0);
    int64_t scores = 0;
    for (int r = 0; r < rows; ++r) pos[r] = tokens - rows + r, scores += (pos[r] + 1) / 4;
    Entries e(rng, count_max, DI, true);
    std::vector<float> q = randn(rng, static_cast<size_t>(rows) * HI * DI), w = randn(rng, static_cast<size_t>(rows) * HI);
    for (int r = 0; r < rows; ++r) ops::fp4_sim(&q[static_cast<size_t>(r) * HI * DI], HI * DI, 32);
    const float wscale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(DI) * HI));
    LayerCache lc;
    lc.idx_entries = e.view();
    DeviceArray<LayerCache> dlc(std::vector<LayerCache>{lc});
    auto dq = dev(q), dw = dev(w);
    auto dslot = dev(slot), dpos = dev(pos);
    DeviceArray<float> many(static_cast<size_t>(rows) * count_max), few(static_cast<size_t>(rows) * count_max);
    DeviceArray<int32_t> idx(static_cast<size_t>(rows) * K);
    auto run_many = [&] {
      indexer_scores_cuda(dq.get(), dw.get(), wscale, rows, HI, DI, dslot.get(), dpos.get(), dlc.get(), true,
                          many.get(), count_max, count_max, 0);
    };
    auto run_few = [&] {
      for (int r0 = 0; r0 < rows; r0 += 64)
        indexer_scores_cuda(dq.get() + static_cast<size_t>(r0) * HI * DI, dw.get() + static_cast<size_t>(r0) * HI, wscale,
                            64, HI, DI, dslot.get() + r0, dpos.get() + r0, dlc.get(), true,
                            few.get() + static_cast<size_t>(r0) * count_max, count_max, count_max, 0);
    };
    auto run_topk = [&] { topk_cuda(many.get(), count_max, rows, dpos.get(), 4, K, idx.get(), 0); };
    run_many();
    run_few();
    const std::vector<float> hm = host(many), hf = host(few);
    std::vector<float> got_many, got_few, ref;
    for (int r : {0, 77, rows - 1}) {
      const int count = (pos[r] + 1) / 4;
      std::vector<float> ws(HI);
      for (int h = 0; h < HI; ++h) ws[h] = w[static_cast<size_t>(r) * HI + h] * wscale;
      for (int i = 0; i < count; i += 997) {
        float want = 0.0f;
        ops::indexer_scores(&q[static_cast<size_t>(r) * HI * DI], ws.data(), HI, DI,
                            &e.values[static_cast<size_t>(i) * DI], 1, &want);
        ref.push_back(want);
        got_many.push_back(hm[static_cast<size_t>(r) * count_max + i]);
        got_few.push_back(hf[static_cast<size_t>(r) * count_max + i]);
      }
    }
    const double tol = f32_rule(static_cast<int64_t>(HI) * DI);
    const Diff dm = diff(got_many, ref, tol * 1e3), df = diff(got_few, ref, tol * 1e3);
    ASSERT_TRUE(dm.finite && dm.rel <= tol) << "many-row scores at " << tokens << " tokens: rel " << dm.rel;
    ASSERT_TRUE(df.finite && df.rel <= tol) << "few-row scores at " << tokens << " tokens: rel " << df.rel;

    const double t_many = best_seconds(run_many), t_few = best_seconds(run_few), t_topk = best_seconds(run_topk);
    const double flops = 2.0 * HI * DI;  // tensor-core flops of one score
    std::printf("  indexer %4dK tokens, %d rows, %.3g scores:\n", tokens / 1024, rows, static_cast<double>(scores));
    std::printf("    many-row  %8.3f ms  %.3g scores/s  %6.1f TFLOP/s  (%.2fx the few-row kernel)\n", t_many * 1e3,
                scores / t_many, scores * flops / t_many * 1e-12, t_few / t_many);
    std::printf("    few-row   %8.3f ms  %.3g scores/s  %6.1f TFLOP/s\n", t_few * 1e3, scores / t_few,
                scores * flops / t_few * 1e-12);
    std::printf("    top-k     %8.3f ms  (K = %d; with the many-row scores: %.3g scores/s)\n", t_topk * 1e3, K,
                scores / (t_many + t_topk));
  }
}
