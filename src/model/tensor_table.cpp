#include "model/tensor_table.h"

namespace dsv4 {

namespace {

struct Builder {
  const ModelConfig& c;
  std::vector<TensorSpec> out;

  void add(std::string name, Shape shape, Storage st, ParamGroup g, InitKind init) {
    out.push_back({std::move(name), std::move(shape), st, g, init});
  }
  void matrix(const std::string& name, int64_t rows, int64_t cols, Storage st = Storage::Fp8Block) {
    add(name, {rows, cols}, st, ParamGroup::Muon, InitKind::Normal);
  }
  void norm(const std::string& name, int64_t d) {
    add(name, {d}, Storage::BF16, ParamGroup::AdamWNoDecay, InitKind::Ones);
  }
  void hc(const std::string& prefix, int64_t rows, int64_t nscale) {
    const int64_t n = c.hc_mult, D = c.hidden_size;
    add(prefix + "_fn", {rows, n * D}, Storage::F32, ParamGroup::Muon, InitKind::Normal);
    add(prefix + "_base", {rows}, Storage::F32, ParamGroup::AdamWNoDecay, InitKind::Zeros);
    add(prefix + "_scale", {nscale}, Storage::F32, ParamGroup::AdamWNoDecay, InitKind::HcScale);
  }
  void compressor(const std::string& p, int m, int64_t d) {
    const int64_t width = (m == 4 ? 2 : 1) * d;
    matrix(p + "wkv.weight", width, c.hidden_size, Storage::BF16);
    matrix(p + "wgate.weight", width, c.hidden_size, Storage::BF16);
    add(p + "ape", {m, width}, Storage::F32, ParamGroup::AdamWNoDecay, InitKind::Zeros);
    norm(p + "norm.weight", d);
  }
  // A block: layers.{l}. or mtp.{i}. with ratio m; `layer` decides hash routing.
  void block(const std::string& p, int m, bool hash) {
    const int64_t D = c.hidden_size, n = c.hc_mult, H = c.num_attention_heads, Dh = c.head_dim;
    const int64_t Q = c.q_lora_rank, G = c.o_groups, O = c.o_lora_rank, E = c.n_routed_experts;
    const int64_t F = c.moe_intermediate_size;
    norm(p + "attn_norm.weight", D);
    norm(p + "ffn_norm.weight", D);
    hc(p + "hc_attn", (2 + n) * n, 3);
    hc(p + "hc_ffn", (2 + n) * n, 3);
    const std::string a = p + "attn.";
    matrix(a + "wq_a.weight", Q, D);
    norm(a + "q_norm.weight", Q);
    matrix(a + "wq_b.weight", H * Dh, Q);
    matrix(a + "wkv.weight", Dh, D);
    norm(a + "kv_norm.weight", Dh);
    matrix(a + "wo_a.weight", G * O, H * Dh / G);
    matrix(a + "wo_b.weight", D, G * O);
    add(a + "attn_sink", {H}, Storage::F32, ParamGroup::AdamWNoDecay, InitKind::Sink);
    if (m > 0) compressor(a + "compressor.", m, Dh);
    if (m == 4) {
      const int64_t HI = c.index_n_heads, DI = c.index_head_dim;
      matrix(a + "indexer.wq_b.weight", HI * DI, Q);
      matrix(a + "indexer.weights_proj.weight", HI, D, Storage::BF16);
      compressor(a + "indexer.compressor.", 4, DI);
    }
    const std::string f = p + "ffn.";
    matrix(f + "gate.weight", E, D, Storage::BF16);
    if (hash)
      add(f + "gate.tid2eid", {c.vocab_size, c.num_experts_per_tok}, Storage::I64, ParamGroup::Fixed, InitKind::Hash);
    else
      add(f + "gate.bias", {E}, Storage::F32, ParamGroup::GateBias, InitKind::Zeros);
    const Storage expert = c.expert_fp4 ? Storage::Fp4Packed : Storage::Fp8Block;
    for (int64_t e = 0; e < E; ++e) {
      const std::string x = f + "experts." + std::to_string(e) + ".";
      matrix(x + "w1.weight", F, D, expert);
      matrix(x + "w2.weight", D, F, expert);
      matrix(x + "w3.weight", F, D, expert);
    }
    matrix(f + "shared_experts.w1.weight", F, D);
    matrix(f + "shared_experts.w2.weight", D, F);
    matrix(f + "shared_experts.w3.weight", F, D);
  }
};

}  // namespace

std::vector<TensorSpec> tensor_table(const ModelConfig& c) {
  Builder b{c, {}};
  const int64_t V = c.vocab_size, D = c.hidden_size, n = c.hc_mult;
  b.add("embed.weight", {V, D}, Storage::BF16, ParamGroup::AdamW, InitKind::Normal);
  b.add("head.weight", {V, D}, Storage::BF16, ParamGroup::AdamW, InitKind::Normal);
  b.norm("norm.weight", D);
  b.hc("hc_head", n, 1);
  for (int l = 0; l < c.num_hidden_layers; ++l)
    b.block("layers." + std::to_string(l) + ".", c.ratio(l), l < c.num_hash_layers);
  for (int i = 0; i < c.num_nextn_predict_layers; ++i) {
    const std::string p = "mtp." + std::to_string(i) + ".";
    b.block(p, c.ratio(c.num_hidden_layers + i), false);
    b.matrix(p + "e_proj.weight", D, D);
    b.matrix(p + "h_proj.weight", D, D);
    b.norm(p + "enorm.weight", D);
    b.norm(p + "hnorm.weight", D);
    b.norm(p + "norm.weight", D);
    b.hc(p + "hc_head", n, 1);
  }
  return b.out;
}

const char* param_group_name(ParamGroup g) {
  switch (g) {
    case ParamGroup::Muon: return "muon";
    case ParamGroup::AdamW: return "adamw";
    case ParamGroup::AdamWNoDecay: return "adamw_no_decay";
    case ParamGroup::GateBias: return "gate_bias";
    case ParamGroup::Fixed: return "fixed";
  }
  return "?";
}

}  // namespace dsv4
