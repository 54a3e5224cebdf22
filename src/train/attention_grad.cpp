// The attention sub-layer over whole sequences (model.md §5–§7) with its backward, and the
// indexer's KL loss (training.md §4). Per row the attended set is the window (the rows of
// the same sequence at positions max(0, t−W+1)..t) followed by the attended compressed
// entries, in one softmax with the sink.
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "ops/attention.h"
#include "ops/compressor.h"
#include "ops/indexer.h"
#include "ops/linear.h"
#include "ops/quant.h"
#include "ops/rmsnorm.h"
#include "ops/rope.h"
#include "train/graph_parts.h"

namespace dsv4::train {

template <class S>
size_t AttnTape<S>::bytes() const {
  size_t b = 0;
  for (const Vec<S>* v : {&qr0, &qr, &q0, &q, &kv0, &kv, &o, &og, &cu, &cz, &pooled, &entries, &iu, &iz, &ipooled,
                          &ientries, &qI, &iw})
    b += bytes_of(*v);
  for (const auto& s : selected) b += s.size() * sizeof(int32_t);
  return b;
}

namespace {

// A compressor's entries over every sequence (model.md §6): u = wkv·a, z = wgate·a + ape[t mod m],
// pooled per complete block, then RMSNorm, RoPE at the block's first position and, for the
// main compressor FP8 on the nope dims, for the indexer's Hadamard and FP4.
struct CompressorSpec {
  std::string prefix;  // "attn.compressor." or "attn.indexer.compressor."
  int64_t d;           // entry width
  bool indexer;
};

template <class S>
void compressor_forward(const LayerCtx<S>& L, const CompressorSpec& cs, const Vec<S>& a, Vec<S>& u, Vec<S>& z,
                        Vec<S>& pooled, Vec<S>& entries) {
  const ModelConfig& c = L.c;
  const int m = L.m;
  const bool overlap = m == 4;
  const int64_t rows = L.layout.rows, D = c.hidden_size, d = cs.d, width = (overlap ? 2 : 1) * d;
  const int64_t R = c.qk_rope_head_dim;
  const std::vector<float>& freqs = L.rope.for_ratio(m);
  u.assign(rows * width, S(0));
  z.assign(rows * width, S(0));
  ops::linear(a.data(), rows, D, L.w(cs.prefix + "wkv.weight"), width, u.data());
  ops::linear(a.data(), rows, D, L.w(cs.prefix + "wgate.weight"), width, z.data());
  const S* ape = L.w(cs.prefix + "ape");
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t f = 0; f < width; ++f) z[r * width + f] += ape[(L.layout.pos[r] % m) * width + f];

  const std::vector<int64_t> first = L.layout.entry_offsets(m);
  const int64_t nent = first.back();
  pooled.assign(nent * d, S(0));
  entries.assign(nent * d, S(0));
  const S* norm = L.w(cs.prefix + "norm.weight");
#pragma omp parallel for schedule(dynamic)
  for (int64_t s = 0; s < static_cast<int64_t>(L.layout.seqs.size()); ++s)
    for (int64_t e = first[s]; e < first[s + 1]; ++e) {
      const int64_t i = e - first[s], row0 = L.layout.seqs[s].row0;
      const int64_t cur = (row0 + i * m) * width, prev = (row0 + (i - 1) * m) * width;
      const bool has_prev = overlap && i > 0;
      ops::compress_pool(&u[cur], &z[cur], has_prev ? &u[prev] : nullptr, has_prev ? &z[prev] : nullptr, m, d, overlap,
                         &pooled[e * d]);
      S* en = &entries[e * d];
      ops::rmsnorm(&pooled[e * d], 1, d, norm, c.rms_norm_eps, en);
      ops::rope_apply(en + d - R, static_cast<int>(R), freqs.data(), i * m);
      if (cs.indexer) {
        ops::hadamard(en, d);
        if (L.opt.quant_sim) fp4_sim(en, d);
      } else if (L.opt.quant_sim) {
        fp8_sim(en, d - R, 64);
      }
    }
}

// dentries (consumed) -> the compressor's parameter gradients and da (null: input detached).
template <class S>
void compressor_backward(const LayerCtx<S>& L, const CompressorSpec& cs, const Vec<S>& a, const Vec<S>& u,
                         const Vec<S>& z, const Vec<S>& pooled, Vec<S>& dentries, S* da) {
  const ModelConfig& c = L.c;
  const int m = L.m;
  const bool overlap = m == 4;
  const int64_t rows = L.layout.rows, D = c.hidden_size, d = cs.d, width = (overlap ? 2 : 1) * d;
  const int64_t R = c.qk_rope_head_dim;
  const std::vector<float>& freqs = L.rope.for_ratio(m);
  const std::vector<int64_t> first = L.layout.entry_offsets(m);
  const int64_t nent = first.back();
  // Straight-through quantization; the Hadamard rotation is its own backward; RoPE rotates back.
  for (int64_t s = 0; s < static_cast<int64_t>(L.layout.seqs.size()); ++s)
    for (int64_t e = first[s]; e < first[s + 1]; ++e) {
      S* g = &dentries[e * d];
      if (cs.indexer) ops::hadamard(g, d);
      ops::rope_backward(g + d - R, static_cast<int>(R), freqs.data(), (e - first[s]) * m);
    }
  Vec<S> dpooled(nent * d, S(0));
  ops::rmsnorm_backward(pooled.data(), nent, d, L.w(cs.prefix + "norm.weight"), c.rms_norm_eps, dentries.data(),
                        dpooled.data(), L.g(cs.prefix + "norm.weight"));
  Vec<S> du(rows * width, S(0)), dz(rows * width, S(0));
  // Entries of one sequence touch disjoint (row, column) slots: block i's current half is
  // columns [d, 2d), block i+1's previous half columns [0, d); so sequences run in parallel.
#pragma omp parallel for schedule(dynamic)
  for (int64_t s = 0; s < static_cast<int64_t>(L.layout.seqs.size()); ++s)
    for (int64_t e = first[s]; e < first[s + 1]; ++e) {
      const int64_t i = e - first[s], row0 = L.layout.seqs[s].row0;
      const int64_t cur = (row0 + i * m) * width, prev = (row0 + (i - 1) * m) * width;
      const bool has_prev = overlap && i > 0;
      ops::compress_pool_backward(&u[cur], &z[cur], has_prev ? &u[prev] : nullptr, has_prev ? &z[prev] : nullptr, m, d,
                                  overlap, &dpooled[e * d], &du[cur], &dz[cur], has_prev ? &du[prev] : nullptr,
                                  has_prev ? &dz[prev] : nullptr);
    }
  if (S* dape = L.g(cs.prefix + "ape"))
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t f = 0; f < width; ++f) dape[(L.layout.pos[r] % m) * width + f] += dz[r * width + f];
  ops::linear_backward(a.data(), rows, D, L.w(cs.prefix + "wkv.weight"), width, du.data(), da,
                       L.g(cs.prefix + "wkv.weight"));
  ops::linear_backward(a.data(), rows, D, L.w(cs.prefix + "wgate.weight"), width, dz.data(), da,
                       L.g(cs.prefix + "wgate.weight"));
}

// The compressed entries row r attends: the selected ones (sparse CSA) or all that exist.
template <class S>
std::vector<int32_t> attended_entries(const LayerCtx<S>& L, const AttnTape<S>& tp, int64_t r) {
  if (L.m == 0) return {};
  if (L.sparse()) return tp.selected[r];
  std::vector<int32_t> all((L.layout.pos[r] + 1) / L.m);
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int32_t>(i);
  return all;
}

// Row r's keys: window rows, then entries (indices local to the row's sequence).
template <class S>
int64_t gather_keys(const LayerCtx<S>& L, const AttnTape<S>& tp, const std::vector<int64_t>& first, int64_t r,
                    const std::vector<int32_t>& ents, Vec<S>& keys) {
  const int64_t Dh = L.c.head_dim, pos = L.layout.pos[r];
  const int64_t lo = std::max<int64_t>(0, pos - L.c.sliding_window + 1), nwin = pos - lo + 1;
  keys.resize((nwin + ents.size()) * Dh);
  std::copy_n(tp.kv.data() + (r - nwin + 1) * Dh, nwin * Dh, keys.begin());
  const int64_t e0 = L.m > 0 ? first[L.layout.seq_of[r]] : 0;
  for (size_t i = 0; i < ents.size(); ++i)
    std::copy_n(tp.entries.data() + (e0 + ents[i]) * Dh, Dh, keys.begin() + (nwin + i) * Dh);
  return nwin;
}

// The indexer KL loss of one layer (training.md §4), mean over the rows that have entries:
// target = the main attention's probability of each attended entry summed over heads and
// L1-normalized (detached); p_index = softmax of the indexer scores over the same entries.
// With `grads`, d/dscore = (p_index − target)·weight/count flows to the indexer's tensors
// only: its inputs (a, qr) are detached.
template <class S>
double indexer_kl(const LayerCtx<S>& L, const Vec<S>& a, AttnTape<S>& tp, bool grads) {
  const ModelConfig& c = L.c;
  const int64_t rows = L.layout.rows, H = c.num_attention_heads, Dh = c.head_dim, HI = c.index_n_heads;
  const int64_t DI = c.index_head_dim, Q = c.q_lora_rank, D = c.hidden_size;
  const std::vector<int64_t> first = L.layout.entry_offsets(4);
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(Dh)));
  int64_t count = 0;
  for (int64_t r = 0; r < rows; ++r) count += (L.layout.pos[r] + 1) / 4 > 0;
  if (count == 0) return 0.0;
  const S gscale = S(L.opt.indexer_weight) / S(count);
  const S* sink = L.w("attn.attn_sink");
  Vec<S> dqI(grads ? rows * HI * DI : 0, S(0)), diw(grads ? rows * HI : 0, S(0));
  Vec<S> dient(grads ? tp.ientries.size() : 0, S(0));
  std::vector<double> kl_of_row(rows, 0.0);
  ThreadParts<S> dient_parts(omp_get_max_threads());
#pragma omp parallel
  {
    Vec<S> keys, p, target, score, dscore, kI, dkI;
    Vec<S>* dient_local = grads ? &dient_parts.mine(dient.size(), omp_get_thread_num()) : nullptr;
#pragma omp for schedule(static, 8)
    for (int64_t r = 0; r < rows; ++r) {
      const std::vector<int32_t> ents = attended_entries(L, tp, r);
      const int64_t C = static_cast<int64_t>(ents.size());
      if (C == 0) continue;
      const int64_t nwin = gather_keys(L, tp, first, r, ents, keys), S_len = nwin + C;
      p.resize(S_len);
      target.assign(C, S(0));
      for (int64_t h = 0; h < H; ++h) {
        ops::sink_attention_probs(&tp.q[(r * H + h) * Dh], Dh, keys.data(), S_len, sink[h], scale, p.data());
        for (int64_t i = 0; i < C; ++i) target[i] += p[nwin + i];
      }
      S tsum = 0;
      for (S v : target) tsum += v;
      for (S& v : target) v /= tsum;
      const int64_t e0 = first[L.layout.seq_of[r]];
      kI.resize(C * DI);
      for (int64_t i = 0; i < C; ++i)
        std::copy_n(tp.ientries.data() + (e0 + ents[i]) * DI, DI, &kI[i * DI]);
      score.resize(C);
      ops::indexer_scores(&tp.qI[r * HI * DI], &tp.iw[r * HI], HI, DI, kI.data(), C, score.data());
      const S mx = *std::max_element(score.begin(), score.end());
      S z = 0;
      for (S v : score) z += std::exp(v - mx);
      const S logz = mx + std::log(z);
      double kl = 0;
      dscore.resize(C);
      for (int64_t i = 0; i < C; ++i) {
        const S logq = score[i] - logz;
        if (target[i] > 0) kl += static_cast<double>(target[i] * (std::log(target[i]) - logq));
        dscore[i] = (std::exp(logq) - target[i]) * gscale;
      }
      kl_of_row[r] = kl;
      if (!grads) continue;
      dkI.assign(C * DI, S(0));
      ops::indexer_scores_backward(&tp.qI[r * HI * DI], &tp.iw[r * HI], HI, DI, kI.data(), C, dscore.data(),
                                   &dqI[r * HI * DI], &diw[r * HI], dkI.data());
      for (int64_t i = 0; i < C; ++i)
        for (int64_t j = 0; j < DI; ++j) (*dient_local)[(e0 + ents[i]) * DI + j] += dkI[i * DI + j];
    }
  }
  double total = 0;
  for (double v : kl_of_row) total += v;
  if (grads) {
    dient_parts.add_to(dient.data());
    // queries: FP4 straight-through, Hadamard per head (its own backward), RoPE back; qr detached
    const int64_t R = c.qk_rope_head_dim;
    const std::vector<float>& freqs = L.rope.for_ratio(4);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t h = 0; h < HI; ++h) {
        S* g = &dqI[(r * HI + h) * DI];
        ops::hadamard(g, DI);
        ops::rope_backward(g + DI - R, static_cast<int>(R), freqs.data(), L.layout.pos[r]);
      }
    ops::linear_backward(tp.qr.data(), rows, Q, L.w("attn.indexer.wq_b.weight"), HI * DI, dqI.data(),
                         static_cast<S*>(nullptr), L.g("attn.indexer.wq_b.weight"));
    const S wscale = static_cast<S>(static_cast<float>(1.0 / std::sqrt(static_cast<double>(DI) * HI)));
    for (S& v : diw) v *= wscale;
    ops::linear_backward(a.data(), rows, D, L.w("attn.indexer.weights_proj.weight"), HI, diw.data(),
                         static_cast<S*>(nullptr), L.g("attn.indexer.weights_proj.weight"));
    compressor_backward(L, {"attn.indexer.compressor.", DI, true}, a, tp.iu, tp.iz, tp.ipooled, dient,
                        static_cast<S*>(nullptr));
  }
  return total / static_cast<double>(count);
}

}  // namespace

template <class S>
void attention_train_forward(const LayerCtx<S>& L, const Vec<S>& a, AttnTape<S>& tp, Vec<S>& out, BlockStats& st) {
  const ModelConfig& c = L.c;
  const int64_t rows = L.layout.rows, D = c.hidden_size, H = c.num_attention_heads, Dh = c.head_dim;
  const int64_t R = c.qk_rope_head_dim, N = Dh - R, Q = c.q_lora_rank, G = c.o_groups, O = c.o_lora_rank;
  const int64_t HI = c.index_n_heads, DI = c.index_head_dim;
  const std::vector<float>& freqs = L.rope.for_ratio(L.m);
  const float eps = c.rms_norm_eps;

  // Query: low rank, q_norm, per-head RMS normalization (no weight), RoPE.
  tp.qr0.assign(rows * Q, S(0));
  tp.qr.assign(rows * Q, S(0));
  tp.q0.assign(rows * H * Dh, S(0));
  tp.q.assign(rows * H * Dh, S(0));
  ops::linear(a.data(), rows, D, L.w("attn.wq_a.weight"), Q, tp.qr0.data());
  ops::rmsnorm(tp.qr0.data(), rows, Q, L.w("attn.q_norm.weight"), eps, tp.qr.data());
  ops::linear(tp.qr.data(), rows, Q, L.w("attn.wq_b.weight"), H * Dh, tp.q0.data());
  ops::rmsnorm(tp.q0.data(), rows * H, Dh, static_cast<const S*>(nullptr), eps, tp.q.data());

  // Window key/value: one shared head, kv_norm, RoPE, FP8 simulation of the nope dims.
  tp.kv0.assign(rows * Dh, S(0));
  tp.kv.assign(rows * Dh, S(0));
  ops::linear(a.data(), rows, D, L.w("attn.wkv.weight"), Dh, tp.kv0.data());
  ops::rmsnorm(tp.kv0.data(), rows, Dh, L.w("attn.kv_norm.weight"), eps, tp.kv.data());
#pragma omp parallel for
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t pos = L.layout.pos[r];
    ops::rope_apply_heads(&tp.q[r * H * Dh], H, Dh, N, static_cast<int>(R), freqs.data(), pos);
    ops::rope_apply(&tp.kv[r * Dh + N], static_cast<int>(R), freqs.data(), pos);
    if (L.opt.quant_sim) fp8_sim(&tp.kv[r * Dh], N, 64);
  }

  if (L.m > 0) compressor_forward(L, {"attn.compressor.", Dh, false}, a, tp.cu, tp.cz, tp.pooled, tp.entries);
  if (L.uses_indexer()) {
    compressor_forward(L, {"attn.indexer.compressor.", DI, true}, a, tp.iu, tp.iz, tp.ipooled, tp.ientries);
    tp.qI.assign(rows * HI * DI, S(0));
    ops::linear(tp.qr.data(), rows, Q, L.w("attn.indexer.wq_b.weight"), HI * DI, tp.qI.data());
    tp.iw.assign(rows * HI, S(0));
    ops::linear(a.data(), rows, D, L.w("attn.indexer.weights_proj.weight"), HI, tp.iw.data());
    const float wscale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(DI) * HI));
    for (S& v : tp.iw) v *= wscale;
#pragma omp parallel for
    for (int64_t r = 0; r < rows; ++r) {
      S* qt = &tp.qI[r * HI * DI];
      ops::rope_apply_heads(qt, HI, DI, DI - R, static_cast<int>(R), freqs.data(), L.layout.pos[r]);
      for (int64_t h = 0; h < HI; ++h) ops::hadamard(qt + h * DI, DI);
      if (L.opt.quant_sim) fp4_sim(qt, HI * DI);
    }
  }

  // Attention per row, the indexer's selection first in the sparse phase.
  const std::vector<int64_t> first = L.m > 0 ? L.layout.entry_offsets(L.m) : std::vector<int64_t>{};
  tp.selected.assign(L.sparse() ? rows : 0, {});
  tp.o.assign(rows * H * Dh, S(0));
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(Dh)));
  const S* sink = L.w("attn.attn_sink");
#pragma omp parallel
  {
    Vec<S> keys, score;
#pragma omp for schedule(static, 8)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t pos = L.layout.pos[r];
      if (L.sparse()) {
        const int64_t count = (pos + 1) / 4, e0 = first[L.layout.seq_of[r]];
        score.resize(count);
        ops::indexer_scores(&tp.qI[r * HI * DI], &tp.iw[r * HI], HI, DI, tp.ientries.data() + e0 * DI, count,
                            score.data());
        tp.selected[r] = ops::topk_lower_index(score.data(), count, c.index_topk);
      }
      const std::vector<int32_t> ents = attended_entries(L, tp, r);
      gather_keys(L, tp, first, r, ents, keys);
      S* ot = &tp.o[r * H * Dh];
      ops::sink_attention(&tp.q[r * H * Dh], H, Dh, keys.data(), static_cast<int64_t>(keys.size()) / Dh, sink, scale,
                          ot);
      ops::rope_apply_heads(ot, H, Dh, N, static_cast<int>(R), freqs.data(), pos, /*inverse=*/true);
    }
  }
  if (L.uses_indexer()) st.indexer_kl = indexer_kl(L, a, tp, L.indexer_grads && L.opt.indexer_weight > 0);

  // Grouped low-rank output: group g's heads through its slice of wo_a, then wo_b.
  const int64_t gin = H * Dh / G;
  tp.og.assign(rows * G * O, S(0));
  Vec<S> o_g(rows * gin), og_g(rows * O);
  for (int64_t g = 0; g < G; ++g) {
    for (int64_t r = 0; r < rows; ++r)
      std::copy_n(tp.o.data() + r * H * Dh + g * gin, gin, o_g.data() + r * gin);
    ops::linear(o_g.data(), rows, gin, L.w("attn.wo_a.weight") + g * O * gin, O, og_g.data());
    for (int64_t r = 0; r < rows; ++r) std::copy_n(og_g.data() + r * O, O, tp.og.data() + r * G * O + g * O);
  }
  out.assign(rows * D, S(0));
  ops::linear(tp.og.data(), rows, G * O, L.w("attn.wo_b.weight"), D, out.data());
}

template <class S>
void attention_train_backward(const LayerCtx<S>& L, const Vec<S>& a, const AttnTape<S>& tp, const Vec<S>& dout,
                              Vec<S>& da) {
  const ModelConfig& c = L.c;
  const int64_t rows = L.layout.rows, D = c.hidden_size, H = c.num_attention_heads, Dh = c.head_dim;
  const int64_t R = c.qk_rope_head_dim, N = Dh - R, Q = c.q_lora_rank, G = c.o_groups, O = c.o_lora_rank;
  const std::vector<float>& freqs = L.rope.for_ratio(L.m);
  const float eps = c.rms_norm_eps;

  // Output projections.
  const int64_t gin = H * Dh / G;
  Vec<S> dog(rows * G * O, S(0));
  ops::linear_backward(tp.og.data(), rows, G * O, L.w("attn.wo_b.weight"), D, dout.data(), dog.data(),
                       L.g("attn.wo_b.weight"));
  Vec<S> d_o(rows * H * Dh, S(0)), o_g(rows * gin), do_g(rows * gin), dog_g(rows * O);
  S* dwo_a = L.g("attn.wo_a.weight");
  for (int64_t g = 0; g < G; ++g) {
    for (int64_t r = 0; r < rows; ++r) {
      std::copy_n(tp.o.data() + r * H * Dh + g * gin, gin, o_g.data() + r * gin);
      std::copy_n(dog.data() + r * G * O + g * O, O, dog_g.data() + r * O);
    }
    std::fill(do_g.begin(), do_g.end(), S(0));
    ops::linear_backward(o_g.data(), rows, gin, L.w("attn.wo_a.weight") + g * O * gin, O, dog_g.data(), do_g.data(),
                         dwo_a ? dwo_a + g * O * gin : nullptr);
    for (int64_t r = 0; r < rows; ++r) std::copy_n(do_g.data() + r * gin, gin, d_o.data() + r * H * Dh + g * gin);
  }

  // Attention: dq per row; key/value and sink gradients summed over the rows that attend them.
  const std::vector<int64_t> first = L.m > 0 ? L.layout.entry_offsets(L.m) : std::vector<int64_t>{};
  const int64_t nent = L.m > 0 ? first.back() : 0;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(Dh)));
  const S* sink = L.w("attn.attn_sink");
  Vec<S> dq(rows * H * Dh, S(0)), dkv(rows * Dh, S(0)), dent(nent * Dh, S(0)), dsink(H, S(0));
  // one accumulator per thread for [dkv | dent | dsink]
  const int64_t acc_size = (rows + nent) * Dh + H;
  ThreadParts<S> parts(omp_get_max_threads());
#pragma omp parallel
  {
    Vec<S> keys, dkeys;
    Vec<S>& acc = parts.mine(acc_size, omp_get_thread_num());
    S *dkv_local = acc.data(), *dent_local = acc.data() + rows * Dh, *dsink_local = acc.data() + (rows + nent) * Dh;
#pragma omp for schedule(static, 8)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t pos = L.layout.pos[r];
      S* dor = &d_o[r * H * Dh];
      for (int64_t h = 0; h < H; ++h)
        ops::rope_backward(dor + h * Dh + N, static_cast<int>(R), freqs.data(), pos, /*inverse=*/true);
      const std::vector<int32_t> ents = attended_entries(L, tp, r);
      const int64_t nwin = gather_keys(L, tp, first, r, ents, keys);
      dkeys.assign(keys.size(), S(0));
      ops::sink_attention_backward(&tp.q[r * H * Dh], H, Dh, keys.data(), static_cast<int64_t>(keys.size()) / Dh, sink,
                                   scale, dor, &dq[r * H * Dh], dkeys.data(), dsink_local);
      for (int64_t i = 0; i < nwin * Dh; ++i) dkv_local[(r - nwin + 1) * Dh + i] += dkeys[i];
      const int64_t e0 = L.m > 0 ? first[L.layout.seq_of[r]] : 0;
      for (size_t i = 0; i < ents.size(); ++i)
        for (int64_t j = 0; j < Dh; ++j) dent_local[(e0 + ents[i]) * Dh + j] += dkeys[(nwin + i) * Dh + j];
    }
  }
  {
    Vec<S> acc(acc_size, S(0));
    parts.add_to(acc.data());
    std::copy_n(acc.data(), rows * Dh, dkv.data());
    std::copy_n(acc.data() + rows * Dh, nent * Dh, dent.data());
    std::copy_n(acc.data() + (rows + nent) * Dh, H, dsink.data());
  }
  if (S* gs = L.g("attn.attn_sink"))
    for (int64_t h = 0; h < H; ++h) gs[h] += dsink[h];

  // Compressed entries back into the compressor (FP8 straight-through).
  if (L.m > 0) compressor_backward(L, {"attn.compressor.", Dh, false}, a, tp.cu, tp.cz, tp.pooled, dent, da.data());

  // Window key/value: FP8 straight-through, RoPE back, kv_norm, wkv.
  for (int64_t r = 0; r < rows; ++r)
    ops::rope_backward(&dkv[r * Dh + N], static_cast<int>(R), freqs.data(), L.layout.pos[r]);
  Vec<S> dkv0(rows * Dh, S(0));
  ops::rmsnorm_backward(tp.kv0.data(), rows, Dh, L.w("attn.kv_norm.weight"), eps, dkv.data(), dkv0.data(),
                        L.g("attn.kv_norm.weight"));
  ops::linear_backward(a.data(), rows, D, L.w("attn.wkv.weight"), Dh, dkv0.data(), da.data(), L.g("attn.wkv.weight"));

  // Query: RoPE back, per-head norm, wq_b, q_norm, wq_a.
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t h = 0; h < H; ++h)
      ops::rope_backward(&dq[(r * H + h) * Dh + N], static_cast<int>(R), freqs.data(), L.layout.pos[r]);
  Vec<S> dq0(rows * H * Dh, S(0)), dqr(rows * Q, S(0)), dqr0(rows * Q, S(0));
  ops::rmsnorm_backward(tp.q0.data(), rows * H, Dh, static_cast<const S*>(nullptr), eps, dq.data(), dq0.data(),
                        static_cast<S*>(nullptr));
  ops::linear_backward(tp.qr.data(), rows, Q, L.w("attn.wq_b.weight"), H * Dh, dq0.data(), dqr.data(),
                       L.g("attn.wq_b.weight"));
  ops::rmsnorm_backward(tp.qr0.data(), rows, Q, L.w("attn.q_norm.weight"), eps, dqr.data(), dqr0.data(),
                        L.g("attn.q_norm.weight"));
  ops::linear_backward(a.data(), rows, D, L.w("attn.wq_a.weight"), Q, dqr0.data(), da.data(), L.g("attn.wq_a.weight"));
}

template struct AttnTape<float>;
template struct AttnTape<double>;
#define DSV4_ATTN_GRAD(S)                                                                                           \
  template void attention_train_forward<S>(const LayerCtx<S>&, const Vec<S>&, AttnTape<S>&, Vec<S>&, BlockStats&); \
  template void attention_train_backward<S>(const LayerCtx<S>&, const Vec<S>&, const AttnTape<S>&, const Vec<S>&,  \
                                            Vec<S>&);
DSV4_ATTN_GRAD(float)
DSV4_ATTN_GRAD(double)

}  // namespace dsv4::train
