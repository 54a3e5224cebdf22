// The training step over a batch [B, T] (training.md §1): embedding into n streams, the
// blocks, the main head's cross-entropy, the MTP block on the final streams, and the
// backward in reverse. Memory policy (docs/training.md): the streams entering every block
// are kept; with `recompute` a block's internals are recomputed right before its backward,
// else every block's tape is kept from the forward.
#include "train/train_graph.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "model/tensor_table.h"
#include "ops/linear.h"
#include "ops/mhc.h"
#include "ops/quant.h"
#include "ops/rmsnorm.h"
#include "train/graph_parts.h"

namespace dsv4 {

template <class S>
const S* ParamView<S>::at(const std::string& name) const {
  auto it = f.find(name);
  DSV4_CHECK(it != f.end(), "train", "missing parameter '", name, "'");
  return it->second;
}
template struct ParamView<float>;
template struct ParamView<double>;

ParamView<float> view_of(const Params& p) {
  ParamView<float> v;
  for (const auto& [name, t] : p.f32) v.f[name] = t.ptr();
  v.i64 = &p.i64;
  return v;
}

std::vector<std::string> grad_names(const ModelConfig& c, const TrainOptions& opt) {
  std::vector<std::string> names;
  for (const TensorSpec& s : tensor_table(c)) {
    if (!s.trainable()) continue;
    const bool indexer = s.name.find(".attn.indexer.") != std::string::npos;
    const bool take = opt.phase == AttnPhase::IndexerWarmup
                          ? indexer
                          : !indexer || (opt.phase == AttnPhase::Sparse && opt.indexer_weight > 0);
    if (take) names.push_back(s.name);
  }
  return names;
}

namespace train {

SeqLayout SeqLayout::of_lengths(const std::vector<int64_t>& lens) {
  SeqLayout l;
  for (int64_t len : lens) {
    l.seqs.push_back({l.rows, len});
    for (int64_t t = 0; t < len; ++t) {
      l.pos.push_back(t);
      l.seq_of.push_back(static_cast<int32_t>(l.seqs.size() - 1));
    }
    l.rows += len;
  }
  return l;
}

std::vector<int64_t> SeqLayout::entry_offsets(int m) const {
  std::vector<int64_t> first(seqs.size() + 1, 0);
  for (size_t s = 0; s < seqs.size(); ++s) first[s + 1] = first[s] + seqs[s].len / m;
  return first;
}

template <class S>
void fp8_sim(S* x, int64_t n, int64_t block) {
  if constexpr (std::is_same_v<S, float>) {
    ops::fp8_sim(x, n, block);
  } else {
    std::vector<float> f(x, x + n);
    ops::fp8_sim(f.data(), n, block);
    std::copy(f.begin(), f.end(), x);
  }
}
template <class S>
void fp4_sim(S* x, int64_t n) {
  if constexpr (std::is_same_v<S, float>) {
    ops::fp4_sim(x, n, 32);
  } else {
    std::vector<float> f(x, x + n);
    ops::fp4_sim(f.data(), n, 32);
    std::copy(f.begin(), f.end(), x);
  }
}
template void fp8_sim<float>(float*, int64_t, int64_t);
template void fp8_sim<double>(double*, int64_t, int64_t);
template void fp4_sim<float>(float*, int64_t);
template void fp4_sim<double>(double*, int64_t);

namespace {

// logits = head · RMSNorm_norm(HcHead(X)) for X [rows, n, D] (prefix "" or "mtp.0."); the
// cross-entropy against targets (−1: no target), summed. With dX, adds the gradient of
// grad_scale · Σ CE into dX and the parameters. Logits are made and consumed in chunks of rows.
template <class S>
double head_cross_entropy(const ModelConfig& c, const ParamView<S>& P, GradSink<S>* G, const std::string& prefix,
                          const Vec<S>& X, const std::vector<int64_t>& targets, S grad_scale, Vec<S>* dX,
                          Vec<S>* logits_out) {
  const int64_t rows = static_cast<int64_t>(targets.size()), D = c.hidden_size, V = c.vocab_size;
  const ops::HcShape s{c.hc_mult, D, c.rms_norm_eps, c.hc_eps, c.hc_sinkhorn_iters};
  auto g = [&](const std::string& name) { return G ? G->at(name) : nullptr; };
  const std::string fn = prefix + "hc_head_fn", base = prefix + "hc_head_base", scale = prefix + "hc_head_scale";
  const std::string norm = prefix + "norm.weight";
  Vec<S> y(rows * D), yn(rows * D);
  ops::hc_head(X.data(), rows, s, P.at(fn), P.at(base), P.at(scale), y.data());
  ops::rmsnorm(y.data(), rows, D, P.at(norm), c.rms_norm_eps, yn.data());
  if (logits_out) logits_out->assign(rows * V, S(0));
  const S* head = P.at("head.weight");
  Vec<S> dyn(dX ? rows * D : 0, S(0));
  std::vector<double> ce(rows, 0.0);
  const int64_t chunk = 64;
  Vec<S> logits(chunk * V);
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t nr = std::min(chunk, rows - r0);
    ops::linear(&yn[r0 * D], nr, D, head, V, logits.data());
    if (logits_out) std::copy(logits.begin(), logits.begin() + nr * V, logits_out->begin() + r0 * V);
#pragma omp parallel for
    for (int64_t i = 0; i < nr; ++i) {
      S* l = &logits[i * V];
      const int64_t tgt = targets[r0 + i];
      if (tgt < 0) {
        std::fill(l, l + V, S(0));  // no loss, no gradient
        continue;
      }
      const S mx = *std::max_element(l, l + V);
      S z = 0;
      for (int64_t v = 0; v < V; ++v) z += std::exp(l[v] - mx);
      const S lse = mx + std::log(z);
      ce[r0 + i] = static_cast<double>(lse - l[tgt]);
      // d CE / d logit = softmax − onehot
      for (int64_t v = 0; v < V; ++v) l[v] = std::exp(l[v] - lse) * grad_scale;
      l[tgt] -= grad_scale;
    }
    if (dX) ops::linear_backward(&yn[r0 * D], nr, D, head, V, logits.data(), &dyn[r0 * D], g("head.weight"));
  }
  double total = 0;
  for (double v : ce) total += v;
  if (dX) {
    Vec<S> dy(rows * D, S(0));
    ops::rmsnorm_backward(y.data(), rows, D, P.at(norm), c.rms_norm_eps, dyn.data(), dy.data(), g(norm));
    ops::hc_head_backward(X.data(), rows, s, P.at(fn), P.at(base), P.at(scale), dy.data(), dX->data(), g(fn), g(base),
                          g(scale));
  }
  return total;
}

// Embed[id] copied into each of the n streams.
template <class S>
Vec<S> embed_streams(const ModelConfig& c, const ParamView<S>& P, const std::vector<int64_t>& ids) {
  const int64_t n = c.hc_mult, D = c.hidden_size;
  const S* embed = P.at("embed.weight");
  Vec<S> X(ids.size() * n * D);
  for (size_t r = 0; r < ids.size(); ++r)
    for (int64_t j = 0; j < n; ++j) std::copy(embed + ids[r] * D, embed + (ids[r] + 1) * D, &X[(r * n + j) * D]);
  return X;
}

// Runs a block forward keeping its tape; returns the tape's size.
template <class S>
size_t forward_block(const LayerCtx<S>& L, const Vec<S>& X, Vec<S>& Xout, BlockTape<S>& tape, BlockStats& st) {
  block_train_forward(L, X, Xout, tape, st);
  return tape.bytes();
}

}  // namespace
}  // namespace train

// Per row its sequences' lengths (documents packed into it), checked; one sequence per row without.
static std::vector<int64_t> sequence_lengths(const TrainBatch& batch) {
  if (batch.seq_lens.empty()) return std::vector<int64_t>(batch.B, batch.T);
  DSV4_CHECK(static_cast<int64_t>(batch.seq_lens.size()) == batch.B, "train", "seq_lens has ",
             batch.seq_lens.size(), " rows for a batch of ", batch.B);
  std::vector<int64_t> lens;
  for (int64_t b = 0; b < batch.B; ++b) {
    int64_t sum = 0;
    for (int64_t len : batch.seq_lens[b]) {
      DSV4_CHECK(len > 0, "train", "row ", b, " has a sequence of length ", len);
      sum += len;
      lens.push_back(len);
    }
    DSV4_CHECK(sum == batch.T, "train", "row ", b, "'s sequence lengths sum to ", sum, ", not T = ", batch.T);
  }
  return lens;
}

template <class S>
TrainResult<S> train_step(const ModelConfig& c, const ParamView<S>& P, const TrainBatch& batch,
                          const TrainOptions& opt, bool backward, bool keep_logits) {
  using namespace train;
  const int64_t B = batch.B, T = batch.T, n = c.hc_mult, D = c.hidden_size, V = c.vocab_size;
  const int Lmain = c.num_hidden_layers;
  DSV4_CHECK(B > 0 && T >= 2, "train", "a batch needs B >= 1 rows of T >= 2 tokens, got [", B, ", ", T, "]");
  DSV4_CHECK(static_cast<int64_t>(batch.ids.size()) == B * T, "train", "batch holds ", batch.ids.size(),
             " ids for shape [", B, ", ", T, "]");
  for (int64_t id : batch.ids)
    DSV4_CHECK(id >= 0 && id < V, "train", "token id ", id, " outside the vocabulary [0, ", V, ")");
  DSV4_CHECK(c.num_nextn_predict_layers <= 1, "train", "MTP depth ", c.num_nextn_predict_layers,
             " is not supported (depth 1 only)");
  const bool warmup = opt.phase == AttnPhase::IndexerWarmup;
  const RopeTables rope = RopeTables::make(c);
  TrainResult<S> res;
  res.memory.tokens = B * T;

  GradSink<S> G;
  if (backward) {
    std::map<std::string, int64_t> sizes;
    for (const TensorSpec& s : tensor_table(c)) sizes[s.name] = numel_of(s.shape);
    for (const std::string& name : grad_names(c, opt)) G.g[name].assign(sizes.at(name), S(0));
  }
  GradSink<S>* Gp = backward ? &G : nullptr;
  // The indexer's KL gradient is made in the forward that the backward uses: the first one
  // unless blocks are recomputed (and in warm-up, where no block runs backward).
  const bool kl_grads_first = backward && (!opt.recompute || warmup);
  auto ctx = [&](const SeqLayout& lay, const std::string& prefix, int ratio, const int64_t* ids, bool hash,
                 bool kl_grads) {
    return LayerCtx<S>{c, opt, P, Gp, rope, lay, prefix, ratio, ids, hash, kl_grads};
  };
  auto account = [&](const BlockStats& st, const std::string& prefix, bool hash) {
    res.loss.indexer += st.indexer_kl;
    res.loss.balance += st.balance;
    if (!hash) res.expert_loads[prefix + "ffn.gate.bias"] = st.expert_loads;
  };

  // Main model forward: keep every block's input streams (and its tape unless recomputing).
  const SeqLayout main = SeqLayout::of_lengths(sequence_lengths(batch));
  std::vector<Vec<S>> Xs(Lmain + 1);
  Xs[0] = embed_streams(c, P, batch.ids);
  std::vector<BlockTape<S>> tapes(Lmain);
  for (int l = 0; l < Lmain; ++l) {
    const std::string prefix = "layers." + std::to_string(l) + ".";
    const bool hash = l < c.num_hash_layers;
    BlockTape<S> scratch;
    BlockStats st;
    const bool keep = backward && !opt.recompute && !warmup;
    const size_t tb = forward_block(ctx(main, prefix, c.ratio(l), batch.ids.data(), hash, kl_grads_first), Xs[l],
                                    Xs[l + 1], keep ? tapes[l] : scratch, st);
    if (keep) res.memory.kept_bytes += tb;
    else res.memory.transient_bytes = std::max(res.memory.transient_bytes, tb);
    account(st, prefix, hash);
  }
  for (const Vec<S>& X : Xs) res.memory.kept_bytes += bytes_of(X);

  // Main head: CE(logits[t], ids[t+1]) over the positions of each sequence but its last.
  const bool grads_main = backward && !warmup;
  std::vector<int64_t> targets(B * T, -1);
  int64_t count_main = 0;
  for (const SeqLayout::Seq& s : main.seqs)
    for (int64_t t = 0; t + 1 < s.len; ++t, ++count_main) targets[s.row0 + t] = batch.ids[s.row0 + t + 1];
  DSV4_CHECK(count_main > 0, "train", "the batch has no sequence of 2 or more tokens: nothing to predict");
  Vec<S> dX(grads_main ? B * T * n * D : 0, S(0));
  res.loss.main = head_cross_entropy(c, P, Gp, "", Xs[Lmain], targets, S(1) / S(count_main),
                                     grads_main ? &dX : nullptr, keep_logits ? &res.logits : nullptr) /
                  static_cast<double>(count_main);

  // MTP (depth 1): at t < T−1 the block gets the final streams at t and ids[t+1] and
  // predicts ids[t+2]; one prefill over t = 0..T−2, loss over t < T−2.
  // Per sequence of len >= 2: an MTP sequence over its positions t = 0..len−2.
  std::vector<int64_t> lens_m, row_of;  // row_of: the main row of each MTP row
  int64_t count_mtp = 0;
  for (const SeqLayout::Seq& s : main.seqs) {
    if (s.len < 2) continue;
    lens_m.push_back(s.len - 1);
    count_mtp += s.len - 2;
    for (int64_t t = 0; t + 1 < s.len; ++t) row_of.push_back(s.row0 + t);
  }
  if (c.num_nextn_predict_layers == 1) {
    const int64_t rows_m = static_cast<int64_t>(row_of.size());
    const SeqLayout lay = SeqLayout::of_lengths(lens_m);
    std::vector<int64_t> ids_m(rows_m), targets_m(rows_m, -1);
    Vec<S> Xin(rows_m * n * D);
    for (int64_t r = 0; r < rows_m; ++r) {
      const int64_t src = row_of[r];
      ids_m[r] = batch.ids[src + 1];
      if (lay.pos[r] + 1 < lens_m[lay.seq_of[r]]) targets_m[r] = batch.ids[src + 2];
      std::copy(&Xs[Lmain][src * n * D], &Xs[Lmain][src * n * D] + n * D, &Xin[r * n * D]);
    }
    const float eps = c.rms_norm_eps;
    // e = RMSNorm_enorm(Embed[id]); X[j] = W_e·e + W_h·RMSNorm_hnorm(X[j])
    Vec<S> emb(rows_m * D), e(rows_m * D), ep(rows_m * D), hn(rows_m * n * D), X0(rows_m * n * D);
    const S* embed = P.at("embed.weight");
    for (int64_t r = 0; r < rows_m; ++r) std::copy(embed + ids_m[r] * D, embed + (ids_m[r] + 1) * D, &emb[r * D]);
    ops::rmsnorm(emb.data(), rows_m, D, P.at("mtp.0.enorm.weight"), eps, e.data());
    ops::linear(e.data(), rows_m, D, P.at("mtp.0.e_proj.weight"), D, ep.data());
    ops::rmsnorm(Xin.data(), rows_m * n, D, P.at("mtp.0.hnorm.weight"), eps, hn.data());
    ops::linear(hn.data(), rows_m * n, D, P.at("mtp.0.h_proj.weight"), D, X0.data());
    for (int64_t r = 0; r < rows_m; ++r)
      for (int64_t j = 0; j < n; ++j)
        for (int64_t d = 0; d < D; ++d) X0[(r * n + j) * D + d] += ep[r * D + d];

    const LayerCtx<S> L = ctx(lay, "mtp.0.", c.ratio(Lmain), ids_m.data(), false, backward);
    BlockTape<S> tape;
    BlockStats st;
    Vec<S> X1;
    const size_t tb = forward_block(L, X0, X1, tape, st);
    res.memory.transient_bytes = std::max(res.memory.transient_bytes, tb);
    account(st, "mtp.0.", false);
    Vec<S> dX1(grads_main ? rows_m * n * D : 0, S(0));
    if (count_mtp > 0)
      res.loss.mtp = head_cross_entropy(c, P, Gp, "mtp.0.", X1, targets_m, S(opt.mtp_weight) / S(count_mtp),
                                        grads_main ? &dX1 : nullptr, static_cast<Vec<S>*>(nullptr)) /
                     static_cast<double>(count_mtp);
    if (grads_main) {
      block_train_backward(L, X0, tape, dX1);
      auto g = [&](const char* name) { return G.at(name); };
      Vec<S> dhn(rows_m * n * D, S(0)), dXin(rows_m * n * D, S(0)), dep(rows_m * D, S(0)), de(rows_m * D, S(0));
      Vec<S> demb(rows_m * D, S(0));
      ops::linear_backward(hn.data(), rows_m * n, D, P.at("mtp.0.h_proj.weight"), D, dX1.data(), dhn.data(),
                           g("mtp.0.h_proj.weight"));
      ops::rmsnorm_backward(Xin.data(), rows_m * n, D, P.at("mtp.0.hnorm.weight"), eps, dhn.data(), dXin.data(),
                            g("mtp.0.hnorm.weight"));
      for (int64_t r = 0; r < rows_m; ++r)
        for (int64_t j = 0; j < n; ++j)
          for (int64_t d = 0; d < D; ++d) dep[r * D + d] += dX1[(r * n + j) * D + d];
      ops::linear_backward(e.data(), rows_m, D, P.at("mtp.0.e_proj.weight"), D, dep.data(), de.data(),
                           g("mtp.0.e_proj.weight"));
      ops::rmsnorm_backward(emb.data(), rows_m, D, P.at("mtp.0.enorm.weight"), eps, de.data(), demb.data(),
                            g("mtp.0.enorm.weight"));
      S* dembed = G.at("embed.weight");
      for (int64_t r = 0; r < rows_m; ++r)
        for (int64_t d = 0; d < D; ++d) dembed[ids_m[r] * D + d] += demb[r * D + d];
      // the MTP loss reaches the main model through the streams it was given (no detach)
      for (int64_t r = 0; r < rows_m; ++r)
        for (int64_t i = 0; i < n * D; ++i) dX[row_of[r] * n * D + i] += dXin[r * n * D + i];
    }
  }

  // Main model backward, last block first.
  if (grads_main) {
    for (int l = Lmain - 1; l >= 0; --l) {
      const std::string prefix = "layers." + std::to_string(l) + ".";
      const LayerCtx<S> L = ctx(main, prefix, c.ratio(l), batch.ids.data(), l < c.num_hash_layers, opt.recompute);
      if (opt.recompute) {
        BlockTape<S> tape;
        BlockStats unused;
        Vec<S> Xout;
        forward_block(L, Xs[l], Xout, tape, unused);
        block_train_backward(L, Xs[l], tape, dX);
      } else {
        block_train_backward(L, Xs[l], tapes[l], dX);
        tapes[l] = BlockTape<S>{};
      }
    }
    S* dembed = G.at("embed.weight");
    for (int64_t r = 0; r < B * T; ++r)
      for (int64_t j = 0; j < n; ++j)
        for (int64_t d = 0; d < D; ++d) dembed[batch.ids[r] * D + d] += dX[(r * n + j) * D + d];
  }

  const TrainLosses& l = res.loss;
  res.loss.total = warmup ? opt.indexer_weight * l.indexer
                          : l.main + opt.mtp_weight * l.mtp + opt.balance_weight * l.balance +
                                opt.indexer_weight * l.indexer;
  res.grads = std::move(G.g);
  return res;
}

template TrainResult<float> train_step<float>(const ModelConfig&, const ParamView<float>&, const TrainBatch&,
                                              const TrainOptions&, bool, bool);
template TrainResult<double> train_step<double>(const ModelConfig&, const ParamView<double>&, const TrainBatch&,
                                                const TrainOptions&, bool, bool);

namespace {

template <class S>
Gradients to_gradients(TrainResult<S>&& r, const Params& params) {
  Gradients out;
  out.loss = r.loss;
  out.expert_loads = std::move(r.expert_loads);
  out.memory = r.memory;
  for (auto& [name, g] : r.grads) {
    Tensor t;
    t.shape = params.at(name).shape;
    t.data.assign(g.begin(), g.end());
    out.grads[name] = std::move(t);
  }
  return out;
}

}  // namespace

namespace {

// Bytes of one block's tape (float) over `nseq` sequences of `len` tokens: the same buffers,
// of the same sizes, that AttnTape, MoeTape, HcTape and BlockTape allocate.
size_t block_tape_bytes(const ModelConfig& c, const TrainOptions& opt, int m, int64_t nseq, int64_t len) {
  const int64_t rows = nseq * len, n = c.hc_mult, D = c.hidden_size, H = c.num_attention_heads, Dh = c.head_dim;
  const int64_t Q = c.q_lora_rank, G = c.o_groups, O = c.o_lora_rank, HI = c.index_n_heads, DI = c.index_head_dim;
  const int64_t E = c.n_routed_experts, k = c.num_experts_per_tok, F = c.moe_intermediate_size;
  const bool indexer = m == 4 && opt.phase != AttnPhase::Dense, sparse = m == 4 && opt.phase == AttnPhase::Sparse;
  int64_t per_row = n * D + 2 * (3 * D + n + n * n);               // X_mid, two HcTapes
  per_row += 2 * Q + 3 * H * Dh + 2 * Dh + G * O;                  // qr0, qr, q0, q, o, kv0, kv, og
  if (m > 0) per_row += 2 * (m == 4 ? 2 : 1) * Dh;                 // compressor u, z
  if (indexer) per_row += 2 * 2 * DI + HI * DI + HI;               // indexer u, z, qI, iw
  per_row += 2 * E + k + (k + 1) * 3 * F;                          // logits, p, weights, g/u/h per expert row
  int64_t per_seq = 0;                                             // entry floats
  if (m > 0) per_seq += (len / m) * 2 * Dh;                        // pooled, entries
  if (indexer) per_seq += (len / 4) * 2 * DI;                      // ipooled, ientries
  size_t bytes = sizeof(float) * static_cast<size_t>(rows * per_row + nseq * per_seq);
  bytes += static_cast<size_t>(rows * k) * (sizeof(int32_t) + sizeof(int64_t) + sizeof(int32_t));  // experts, rows_of, slot_of
  if (sparse)
    for (int64_t t = 0; t < len; ++t)
      bytes += static_cast<size_t>(nseq * std::min<int64_t>(c.index_topk, (t + 1) / 4)) * sizeof(int32_t);
  return bytes;
}

}  // namespace

TrainMemory activation_footprint(const ModelConfig& c, const TrainOptions& opt, int64_t B, int64_t T) {
  TrainMemory m;
  m.tokens = B * T;
  const bool keep = !opt.recompute && opt.phase != AttnPhase::IndexerWarmup;
  m.kept_bytes = sizeof(float) * static_cast<size_t>((c.num_hidden_layers + 1) * B * T * c.hc_mult * c.hidden_size);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const size_t tb = block_tape_bytes(c, opt, c.ratio(l), B, T);
    if (keep) m.kept_bytes += tb;
    else m.transient_bytes = std::max(m.transient_bytes, tb);
  }
  if (c.num_nextn_predict_layers == 1)
    m.transient_bytes = std::max(m.transient_bytes, block_tape_bytes(c, opt, c.ratio(c.num_hidden_layers), B, T - 1));
  return m;
}

Gradients compute_gradients(const ModelConfig& c, const Params& params, const TrainBatch& batch,
                            const TrainOptions& opt) {
  return to_gradients(train_step(c, view_of(params), batch, opt, /*backward=*/true), params);
}

Gradients compute_gradients_f64(const ModelConfig& c, const Params& params, const TrainBatch& batch,
                                const TrainOptions& opt) {
  std::map<std::string, std::vector<double>> f64;
  ParamView<double> view;
  for (const auto& [name, t] : params.f32) {
    f64[name].assign(t.data.begin(), t.data.end());
    view.f[name] = f64[name].data();
  }
  view.i64 = &params.i64;
  return to_gradients(train_step(c, view, batch, opt, /*backward=*/true), params);
}

}  // namespace dsv4
