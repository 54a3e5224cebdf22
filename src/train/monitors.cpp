#include "train/monitors.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/attention.h"
#include "ops/indexer.h"
#include "train/graph_parts.h"

namespace dsv4 {

using train::BlockStats;
using train::BlockTape;
using train::LayerCtx;
using train::SeqLayout;
using train::Vec;

namespace {

// M [rows, n, n] ← Cᵀ M per row, for comb C [rows, n, n] (X'[k] = Σ_j C[j, k] X[j]).
void compose(std::vector<double>& M, const Vec<float>& comb, int64_t rows, int64_t n) {
  std::vector<double> next(n * n);
  for (int64_t r = 0; r < rows; ++r) {
    const float* C = &comb[r * n * n];
    double* m = &M[r * n * n];
    for (int64_t k = 0; k < n; ++k)
      for (int64_t i = 0; i < n; ++i) {
        double s = 0;
        for (int64_t j = 0; j < n; ++j) s += static_cast<double>(C[j * n + k]) * m[j * n + i];
        next[k * n + i] = s;
      }
    std::copy(next.begin(), next.end(), m);
  }
}

// Recall of one CSA layer from its tape: per row, the dense attention mass over all existing
// entries (summed over heads, L1-normalized) that the top-K of the indexer scores holds.
double indexer_recall(const LayerCtx<float>& L, const train::AttnTape<float>& tp) {
  const ModelConfig& c = L.c;
  const int64_t rows = L.layout.rows, H = c.num_attention_heads, Dh = c.head_dim, HI = c.index_n_heads;
  const int64_t DI = c.index_head_dim, K = c.index_topk, W = c.sliding_window;
  const std::vector<int64_t> first = L.layout.entry_offsets(4);
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(Dh)));
  const float* sink = L.w("attn.attn_sink");
  // per row, summed in row order after the loop: the same bits on every run
  std::vector<double> recall(rows, std::numeric_limits<double>::quiet_NaN());
#pragma omp parallel
  {
    std::vector<float> keys, p, mass, score;
#pragma omp for schedule(dynamic)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t pos = L.layout.pos[r], C = (pos + 1) / 4;
      if (C <= K) continue;  // the top-K keeps everything
      // keys: the window rows of this sequence, then every entry (as in dense attention)
      const int64_t nwin = pos - std::max<int64_t>(0, pos - W + 1) + 1, e0 = first[L.layout.seq_of[r]];
      keys.resize((nwin + C) * Dh);
      std::copy(&tp.kv[(r - nwin + 1) * Dh], &tp.kv[(r + 1) * Dh], keys.begin());
      std::copy(&tp.entries[e0 * Dh], &tp.entries[(e0 + C) * Dh], keys.begin() + nwin * Dh);
      p.resize(nwin + C);
      mass.assign(C, 0.0f);
      for (int64_t h = 0; h < H; ++h) {
        ops::sink_attention_probs(&tp.q[(r * H + h) * Dh], Dh, keys.data(), nwin + C, sink[h], scale, p.data());
        for (int64_t i = 0; i < C; ++i) mass[i] += p[nwin + i];
      }
      double sum = 0;
      for (float v : mass) sum += v;
      if (!(sum > 0)) continue;
      score.resize(C);
      ops::indexer_scores(&tp.qI[r * HI * DI], &tp.iw[r * HI], HI, DI, &tp.ientries[e0 * DI], C, score.data());
      double kept = 0;
      for (int32_t i : ops::topk_lower_index(score.data(), C, K)) kept += mass[i];
      recall[r] = kept / sum;
    }
  }
  double total = 0;
  int64_t counted = 0;
  for (double v : recall)
    if (!std::isnan(v)) total += v, counted += 1;
  return counted ? total / counted : std::numeric_limits<double>::quiet_NaN();
}

}  // namespace

HealthStats health_pass(const ModelConfig& c, const Params& params, const PackedRows& rows, AttnPhase phase) {
  const int64_t n = c.hc_mult, D = c.hidden_size;
  std::vector<int64_t> lens;
  for (int64_t b = 0; b < rows.B; ++b)
    for (int64_t len : rows.lengths(b)) lens.push_back(len);
  const SeqLayout layout = SeqLayout::of_lengths(lens);
  TrainOptions opt;
  // The indexer must run to be measured: dense attention with the indexer alongside, or sparse.
  opt.phase = phase == AttnPhase::Sparse ? AttnPhase::Sparse : AttnPhase::IndexerWarmup;
  opt.recompute = false;
  const ParamView<float> P = view_of(params);
  const RopeTables rope = RopeTables::make(c);

  const int64_t R = layout.rows;
  Vec<float> X(R * n * D);
  const Tensor& embed = params.at("embed.weight");
  for (int64_t r = 0; r < R; ++r)
    for (int64_t j = 0; j < n; ++j)
      std::copy(&embed.data[rows.ids[r] * D], &embed.data[(rows.ids[r] + 1) * D], &X[(r * n + j) * D]);

  std::vector<double> M(R * n * n, 0.0);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t j = 0; j < n; ++j) M[(r * n + j) * n + j] = 1.0;
  HealthStats hs;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string prefix = "layers." + std::to_string(l) + ".";
    const LayerCtx<float> L{c,      opt,         P, nullptr, rope, layout, prefix, c.ratio(l), rows.ids.data(),
                            l < c.num_hash_layers, false};
    BlockTape<float> tape;
    BlockStats st;
    Vec<float> Xout;
    train::block_train_forward(L, X, Xout, tape, st);
    compose(M, tape.hc_attn.comb, R, n);
    compose(M, tape.hc_ffn.comb, R, n);
    if (c.ratio(l) == 4) {
      hs.recall_layers.push_back(prefix);
      hs.indexer_recall.push_back(indexer_recall(L, tape.attn));
    }
    X = std::move(Xout);
  }
  for (int64_t r = 0; r < R; ++r) {
    const double* m = &M[r * n * n];
    for (int64_t k = 0; k < n; ++k) {
      double row = 0, col = 0;
      for (int64_t j = 0; j < n; ++j) {
        row += std::abs(m[k * n + j]);
        col += std::abs(m[j * n + k]);
      }
      hs.mhc_gain_fwd = std::max(hs.mhc_gain_fwd, row);
      hs.mhc_gain_bwd = std::max(hs.mhc_gain_bwd, col);
    }
  }
  return hs;
}

double load_imbalance(const std::vector<int64_t>& load) {
  if (load.empty()) return 0;
  int64_t mx = 0, sum = 0;
  for (int64_t l : load) {
    mx = std::max(mx, l);
    sum += l;
  }
  return sum ? static_cast<double>(mx) * static_cast<double>(load.size()) / static_cast<double>(sum) : 0.0;
}

}  // namespace dsv4
