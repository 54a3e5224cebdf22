#include "model/weights.h"

#include <cmath>
#include <random>

#include "io/checkpoint.h"
#include "model/tensor_table.h"

namespace dsv4 {

const Tensor& Params::at(const std::string& name) const {
  auto it = f32.find(name);
  DSV4_CHECK(it != f32.end(), "model", "missing parameter '", name, "'");
  return it->second;
}
Tensor& Params::at(const std::string& name) {
  auto it = f32.find(name);
  DSV4_CHECK(it != f32.end(), "model", "missing parameter '", name, "'");
  return it->second;
}

Params load_params(const std::string& dir, ModelConfig* config) {
  Checkpoint ck(dir);
  *config = ck.config();
  Params p;
  for (const TensorSpec& s : tensor_table(*config)) {
    if (s.is_int()) p.i64[s.name] = ck.load_int(s.name, s.shape);
    else p.f32[s.name] = ck.load(s.name, s.shape);
  }
  return p;
}

Params init_params(const ModelConfig& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Params p;
  for (const TensorSpec& s : tensor_table(c)) {
    if (s.init == InitKind::Hash) {
      // k distinct experts per token id, fixed for the whole run (training.md §2)
      const int64_t V = s.shape[0], k = s.shape[1], E = c.n_routed_experts;
      std::vector<int64_t> t(V * k);
      std::vector<int64_t> perm(E);
      for (int64_t v = 0; v < V; ++v) {
        for (int64_t e = 0; e < E; ++e) perm[e] = e;
        for (int64_t i = 0; i < k; ++i) {
          std::uniform_int_distribution<int64_t> pick(i, E - 1);
          std::swap(perm[i], perm[pick(rng)]);
          t[v * k + i] = perm[i];
        }
      }
      p.i64[s.name] = std::move(t);
      continue;
    }
    Tensor t(s.shape);
    switch (s.init) {
      case InitKind::Normal: {
        // std = 1/sqrt(fan_in); mHC `fn` starts small (training.md §5)
        float std = 1.0f / std::sqrt(static_cast<float>(s.shape.back()));
        if (s.name.find("hc_") != std::string::npos) std *= 0.01f;
        std::normal_distribution<float> nd(0.0f, std);
        for (float& v : t.data) v = nd(rng);
        break;
      }
      case InitKind::Ones: std::fill(t.data.begin(), t.data.end(), 1.0f); break;
      case InitKind::Zeros: break;
      case InitKind::HcScale: std::fill(t.data.begin(), t.data.end(), 0.01f); break;
      case InitKind::Sink: break;
      case InitKind::Hash: break;
    }
    p.f32[s.name] = std::move(t);
  }
  return p;
}

void save_params(const std::string& dir, const ModelConfig& c, const Params& p,
                 const std::map<std::string, std::string>& extra_files) {
  save_checkpoint(dir, c, p.f32, p.i64, extra_files);
}

namespace {

HcWeights hc(const Params& p, const std::string& prefix) {
  return {&p.at(prefix + "_fn"), &p.at(prefix + "_base"), &p.at(prefix + "_scale")};
}

CompressorWeights compressor(const Params& p, const std::string& prefix) {
  return {&p.at(prefix + "wkv.weight"), &p.at(prefix + "wgate.weight"), &p.at(prefix + "ape"),
          &p.at(prefix + "norm.weight")};
}

ExpertWeights expert(const Params& p, const std::string& prefix) {
  return {&p.at(prefix + "w1.weight"), &p.at(prefix + "w2.weight"), &p.at(prefix + "w3.weight")};
}

BlockWeights block(const ModelConfig& c, const Params& p, const std::string& pre, int m, bool hash) {
  BlockWeights b;
  b.prefix = pre;
  b.ratio = m;
  b.attn_norm = &p.at(pre + "attn_norm.weight");
  b.ffn_norm = &p.at(pre + "ffn_norm.weight");
  b.hc_attn = hc(p, pre + "hc_attn");
  b.hc_ffn = hc(p, pre + "hc_ffn");
  const std::string a = pre + "attn.";
  AttnWeights& w = b.attn;
  w.wq_a = &p.at(a + "wq_a.weight");
  w.q_norm = &p.at(a + "q_norm.weight");
  w.wq_b = &p.at(a + "wq_b.weight");
  w.wkv = &p.at(a + "wkv.weight");
  w.kv_norm = &p.at(a + "kv_norm.weight");
  w.wo_a = &p.at(a + "wo_a.weight");
  w.wo_b = &p.at(a + "wo_b.weight");
  w.sink = &p.at(a + "attn_sink");
  if (m > 0) w.compressor = compressor(p, a + "compressor.");
  if (m == 4) {
    w.idx_wq_b = &p.at(a + "indexer.wq_b.weight");
    w.idx_weights_proj = &p.at(a + "indexer.weights_proj.weight");
    w.idx_compressor = compressor(p, a + "indexer.compressor.");
  }
  const std::string f = pre + "ffn.";
  b.moe.gate = &p.at(f + "gate.weight");
  if (hash) {
    auto it = p.i64.find(f + "gate.tid2eid");
    DSV4_CHECK(it != p.i64.end(), "model", "missing parameter '", f, "gate.tid2eid'");
    b.moe.tid2eid = &it->second;
  } else {
    b.moe.bias = &p.at(f + "gate.bias");
  }
  for (int e = 0; e < c.n_routed_experts; ++e) b.moe.experts.push_back(expert(p, f + "experts." + std::to_string(e) + "."));
  b.moe.shared = expert(p, f + "shared_experts.");
  return b;
}

}  // namespace

ModelWeights bind_weights(const ModelConfig& c, const Params& p) {
  ModelWeights w;
  w.embed = &p.at("embed.weight");
  w.head = &p.at("head.weight");
  w.norm = &p.at("norm.weight");
  w.hc_head = hc(p, "hc_head");
  for (int l = 0; l < c.num_hidden_layers; ++l)
    w.layers.push_back(block(c, p, "layers." + std::to_string(l) + ".", c.ratio(l), l < c.num_hash_layers));
  for (int i = 0; i < c.num_nextn_predict_layers; ++i) {
    const std::string pre = "mtp." + std::to_string(i) + ".";
    MtpWeights m;
    m.block = block(c, p, pre, c.ratio(c.num_hidden_layers + i), false);
    m.e_proj = &p.at(pre + "e_proj.weight");
    m.h_proj = &p.at(pre + "h_proj.weight");
    m.enorm = &p.at(pre + "enorm.weight");
    m.hnorm = &p.at(pre + "hnorm.weight");
    m.norm = &p.at(pre + "norm.weight");
    m.hc_head = hc(p, pre + "hc_head");
    w.mtp.push_back(std::move(m));
  }
  return w;
}

}  // namespace dsv4
