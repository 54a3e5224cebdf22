// Internals shared by the training graph's files (attention_grad, moe_grad, block_grad,
// train_graph): the row layout of a batch, gradients by name, what every layer sees, and
// the tapes (what a block's backward needs from its forward).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "io/config.h"
#include "model/block.h"
#include "train/train_graph.h"

namespace dsv4::train {

template <class S> using Vec = std::vector<S>;

// Rows grouped into sequences. Positions restart at 0 in each sequence, and attention,
// compressor blocks and the indexer never cross one: a packed document is a sequence.
struct SeqLayout {
  struct Seq { int64_t row0, len; };
  std::vector<Seq> seqs;
  std::vector<int64_t> pos;     // per row: position in its sequence
  std::vector<int32_t> seq_of;  // per row
  int64_t rows = 0;

  static SeqLayout of_lengths(const std::vector<int64_t>& lens);
  // Compressor entries of ratio m (complete blocks only), stacked by sequence:
  // sequence s owns entries [first[s], first[s + 1]).
  std::vector<int64_t> entry_offsets(int m) const;
};

// Gradients by name; at() is null for a tensor that takes no gradient in this step.
template <class S>
struct GradSink {
  std::map<std::string, Vec<S>> g;
  S* at(const std::string& name) {
    auto it = g.find(name);
    return it == g.end() ? nullptr : it->second.data();
  }
};

// What a block's forward and backward see.
template <class S>
struct LayerCtx {
  const ModelConfig& c;
  const TrainOptions& opt;
  const ParamView<S>& P;
  GradSink<S>* G;           // null in a forward-only pass
  const RopeTables& rope;
  const SeqLayout& layout;
  std::string prefix;       // "layers.3." or "mtp.0."
  int m;                    // compress ratio
  const int64_t* ids;       // per row: the token id (hash routing)
  bool hash;                // MoE routed by tid2eid
  bool indexer_grads;       // this pass accumulates the indexer KL gradient

  const S* w(const std::string& name) const { return P.at(prefix + name); }
  S* g(const std::string& name) const { return G ? G->at(prefix + name) : nullptr; }
  bool uses_indexer() const { return m == 4 && opt.phase != AttnPhase::Dense; }
  bool sparse() const { return m == 4 && opt.phase == AttnPhase::Sparse; }
};

template <class S> size_t bytes_of(const Vec<S>& v) { return v.size() * sizeof(S); }

// Per-thread accumulators for sums over rows run in parallel, added in thread order after the
// loop, so that with `schedule(static)` a step's gradients do not depend on timing (a resumed
// run repeats its steps bit for bit on the same thread count).
template <class S>
struct ThreadParts {
  std::vector<Vec<S>> part;
  explicit ThreadParts(int threads) : part(threads) {}
  Vec<S>& mine(int64_t size, int tid) {
    if (part[tid].empty()) part[tid].assign(size, S(0));
    return part[tid];
  }
  void add_to(S* dst) const {
    for (const Vec<S>& p : part)
      for (size_t i = 0; i < p.size(); ++i) dst[i] += p[i];
  }
};

// The FP8 / FP4 simulations (float32 by definition; a double is rounded through float).
// Straight-through: the backward passes gradients unchanged, so there is no backward here.
template <class S> void fp8_sim(S* x, int64_t n, int64_t block);
template <class S> void fp4_sim(S* x, int64_t n);

template <class S>
struct AttnTape {
  Vec<S> qr0, qr, q0, q, kv0, kv, o, og;  // per row
  Vec<S> cu, cz, pooled, entries;         // compressor: rows, then entries (m > 0)
  Vec<S> iu, iz, ipooled, ientries;       // indexer compressor (when the indexer runs)
  Vec<S> qI, iw;                          // indexer queries and head weights
  std::vector<std::vector<int32_t>> selected;  // per row: the top-K entries (sparse phase)
  size_t bytes() const;
};

template <class S>
struct MoeTape {
  Vec<S> logits, p;                            // [rows, E]
  std::vector<int32_t> experts;                // [rows, k]
  Vec<S> weights;                              // [rows, k]
  std::vector<std::vector<int64_t>> rows_of;   // per routed expert: its rows
  std::vector<std::vector<int32_t>> slot_of;   // and the slot (of k) of each
  std::vector<Vec<S>> g, u, h;                 // per expert (routed, then shared): [rows_e, F]
  size_t bytes() const;
};

// One mHC-wrapped sub-layer: y = Σ pre_j X[j], a = RMSNorm(y), o = S(a), X' = post·o + Cᵀ X.
template <class S>
struct HcTape {
  Vec<S> y, a, o, post, comb;
  size_t bytes() const { return bytes_of(y) + bytes_of(a) + bytes_of(o) + bytes_of(post) + bytes_of(comb); }
};

template <class S>
struct BlockTape {
  Vec<S> X_mid;  // streams between the two sub-layers
  HcTape<S> hc_attn, hc_ffn;
  AttnTape<S> attn;
  MoeTape<S> moe;
  size_t bytes() const { return bytes_of(X_mid) + hc_attn.bytes() + hc_ffn.bytes() + attn.bytes() + moe.bytes(); }
};

// Side results of a block's forward.
struct BlockStats {
  double indexer_kl = 0;              // this layer's mean KL (CSA layers with the indexer)
  double balance = 0;                 // this layer's balance loss (learned routing)
  std::vector<int64_t> expert_loads;  // tokens per routed expert
};

// a [rows, D] -> out [rows, D]; da [rows, D] += the input gradient.
template <class S>
void attention_train_forward(const LayerCtx<S>& L, const Vec<S>& a, AttnTape<S>& tp, Vec<S>& out, BlockStats& st);
template <class S>
void attention_train_backward(const LayerCtx<S>& L, const Vec<S>& a, const AttnTape<S>& tp, const Vec<S>& dout,
                              Vec<S>& da);

template <class S>
void moe_train_forward(const LayerCtx<S>& L, const Vec<S>& a, MoeTape<S>& tp, Vec<S>& out, BlockStats& st);
template <class S>
void moe_train_backward(const LayerCtx<S>& L, const Vec<S>& a, const MoeTape<S>& tp, const Vec<S>& dout, Vec<S>& da);

// X_in [rows, n, D] -> X_out; backward: dX holds dX_out on entry and dX_in on return.
template <class S>
void block_train_forward(const LayerCtx<S>& L, const Vec<S>& X_in, Vec<S>& X_out, BlockTape<S>& tp, BlockStats& st);
template <class S>
void block_train_backward(const LayerCtx<S>& L, const Vec<S>& X_in, const BlockTape<S>& tp, Vec<S>& dX);

}  // namespace dsv4::train
