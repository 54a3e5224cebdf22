// Weights onto the GPU (cuda_model_impl.cuh): the names and shapes of model/weights.cpp, the
// storage and initialization of the tensor table. Float32 precision uploads the float32
// parameters; the fast precision keeps what the checkpoint stores (FP8 + 128×128 scales for
// the GEMMs that can take them, packed FP4 experts) and bf16 for the rest.
#include <cmath>

#include "core/dtype.h"
#include "model/cuda_model_impl.cuh"
#include "model/tensor_table.h"

namespace dsv4::cuda {

ExpertMatrix DExperts::view() const {
  ExpertMatrix m;
  m.codes = codes.get();
  m.scales = scales.get();
  m.w = bf.get();
  m.rows = rows;
  m.cols = cols;
  m.narrow_scales = narrow_scales;
  return m;
}

size_t DModel::bytes() const {
  auto tb = [](const DTensor& t) { return t.bytes(); };
  auto hcb = [](const DHc& h) { return h.fn.bytes() + h.base.bytes() + h.scale.bytes(); };
  auto block = [&](const DBlock& b) {
    const DAttn& a = b.attn;
    const DMoe& m = b.moe;
    return b.attn_norm.bytes() + b.ffn_norm.bytes() + hcb(b.hc_attn) + hcb(b.hc_ffn) + tb(a.wq_a) + tb(a.wq_b) +
           tb(a.wkv) + tb(a.wo_a) + tb(a.wo_b) + tb(a.idx_wq_b) + tb(a.idx_wproj) + a.q_norm.bytes() +
           a.kv_norm.bytes() + a.sink.bytes() + tb(a.comp.wkv) + tb(a.comp.wgate) + a.comp.ape.bytes() +
           a.comp.norm.bytes() + tb(a.idx_comp.wkv) + tb(a.idx_comp.wgate) + a.idx_comp.ape.bytes() +
           a.idx_comp.norm.bytes() + tb(m.gate) + tb(m.sw1) + tb(m.sw2) + tb(m.sw3) + m.bias.bytes() +
           m.tid2eid.bytes() + m.w1.bytes() + m.w2.bytes() + m.w3.bytes();
  };
  size_t b = tb(embed) + tb(head) + norm.bytes() + hcb(hc_head);
  for (const DBlock& l : layers) b += block(l);
  for (const DMtp& m : mtp) b += block(m.block) + tb(m.e_proj) + tb(m.h_proj) + m.enorm.bytes() + m.hnorm.bytes() +
                                 m.norm.bytes() + hcb(m.hc_head);
  return b;
}

namespace {

std::vector<uint16_t> to_bf16_host(const Tensor& t) {
  std::vector<uint16_t> out(t.data.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = f32_to_bf16(t.data[i]);
  return out;
}

class Loader {
 public:
  Loader(const ModelConfig& c, const Params* p, const Checkpoint* ck, Precision prec, bool fp8_ok, uint64_t seed,
         cudaStream_t s)
      : c_(c), p_(p), ck_(ck), fast_(prec == Precision::Fast), fp8_ok_(fp8_ok), seed_(seed), s_(s) {
    for (TensorSpec& t : tensor_table(c)) specs_.emplace(t.name, std::move(t));
  }

  // A projection, in the GEMM kind its storage and shape allow.
  DTensor matrix(const std::string& name, int64_t row_group = 0) {
    const TensorSpec& sp = spec(name);
    DTensor t;
    t.rows = sp.shape[0];
    t.cols = sp.shape[1];
    const int64_t n = t.rows * t.cols;
    const bool fp8_shape = t.rows % 128 == 0 && t.cols % 512 == 0 && (row_group == 0 || row_group % 128 == 0);
    // The fast path keeps float32 where the checkpoint stores float32, and for the MoE gate,
    // whose top-k turns small differences into different experts (4 MiB a layer).
    const TensorInfo* st = ck_ ? ck_->find(name) : nullptr;
    const bool keep_f32 = (st && st->dtype == DType::F32) || sp.storage == Storage::F32 ||
                          name.find("ffn.gate.weight") != std::string::npos;
    t.kind = !fast_ || keep_f32 ? GemmKind::F32
             : (sp.storage == Storage::Fp8Block && fp8_ok_ && fp8_shape) ? GemmKind::FP8Block
                                                                         : GemmKind::BF16;
    const float std = init_std(sp);
    switch (t.kind) {
      case GemmKind::F32:
        t.f32.resize(n);
        if (p_) t.f32.assign(p_->at(name).data);
        else fill(t.f32.get(), n, sp);
        break;
      case GemmKind::BF16:
        t.bf.resize(n);
        if (p_) upload(t.bf.get(), reinterpret_cast<const bf16*>(to_bf16_host(p_->at(name)).data()), n, s_), sync();
        else fill_normal_bf16_cuda(t.bf.get(), n, std, next_seed(), s_);
        break;
      case GemmKind::FP8Block: {
        const int64_t ns = ((t.rows + 127) / 128) * ((t.cols + 127) / 128);
        t.fp8.resize(n);
        t.scale.resize(ns);
        if (!p_) {
          fill_fp8_cuda(t.fp8.get(), n, t.scale.get(), ns, std, next_seed(), s_);
        } else if (const TensorInfo* q = stored(name, DType::F8_E4M3)) {
          const TensorInfo* sc = stored(name.substr(0, name.size() - 7) + ".scale", DType::F8_E8M0);
          DSV4_CHECK(sc && static_cast<int64_t>(sc->nbytes()) == ns, "cuda", "'", name, "': no matching block scale");
          std::vector<float> scales(ns);
          for (int64_t i = 0; i < ns; ++i) scales[i] = e8m0_to_f32(sc->data[i]);
          upload(t.fp8.get(), q->data, n, s_);
          upload(t.scale.get(), scales.data(), ns, s_);
          sync();
        } else {  // stored otherwise (a float32 checkpoint): keep its values in bf16
          t.fp8 = {};
          t.scale = {};
          t.kind = GemmKind::BF16;
          t.bf.resize(n);
          upload(t.bf.get(), reinterpret_cast<const bf16*>(to_bf16_host(p_->at(name)).data()), n, s_), sync();
        }
        break;
      }
    }
    kinds_[static_cast<int>(t.kind)] += 1;
    return t;
  }

  // A float32 vector-like parameter (norm weights, biases, ape, hc_*, sinks).
  DeviceArray<float> vec(const std::string& name) {
    const TensorSpec& sp = spec(name);
    DeviceArray<float> v(numel_of(sp.shape));
    if (p_) v.assign(p_->at(name).data);
    else fill(v.get(), static_cast<int64_t>(v.size()), sp);
    return v;
  }

  DeviceArray<int32_t> table(const std::string& name) {
    const TensorSpec& sp = spec(name);
    DeviceArray<int32_t> t(numel_of(sp.shape));
    if (p_) {
      auto it = p_->i64.find(name);
      DSV4_CHECK(it != p_->i64.end(), "cuda", "missing parameter '", name, "'");
      std::vector<int32_t> v(it->second.begin(), it->second.end());
      t.assign(v);
    } else {
      fill_tid2eid_cuda(t.get(), sp.shape[0], static_cast<int>(sp.shape[1]), c_.n_routed_experts, next_seed(), s_);
    }
    return t;
  }

  // Expert matrix `which` (w1, w2, w3) of every routed expert of the block with prefix `ffn`, stacked.
  DExperts experts(const std::string& ffn, const std::string& which) {
    const std::string first = ffn + "experts.0." + which + ".weight";
    const TensorSpec& sp = spec(first);
    DExperts x;
    x.E = c_.n_routed_experts;
    x.rows = static_cast<int>(sp.shape[0]);
    x.cols = static_cast<int>(sp.shape[1]);
    const int64_t per = static_cast<int64_t>(x.rows) * x.cols;
    auto name = [&](int e) { return ffn + "experts." + std::to_string(e) + "." + which + ".weight"; };
    if (!fast_) {
      x.f32.resize(per * x.E);
      for (int e = 0; e < x.E; ++e) upload(x.f32.get() + e * per, p_->at(name(e)).ptr(), per, s_), sync();
      return x;
    }
    const bool fp4 = sp.storage == Storage::Fp4Packed && (!p_ || stored(first, DType::I8));
    if (!fp4) {
      x.bf.resize(per * x.E);
      if (!p_) fill_normal_bf16_cuda(x.bf.get(), per * x.E, init_std(sp), next_seed(), s_);
      for (int e = 0; p_ && e < x.E; ++e)
        upload(x.bf.get() + e * per, reinterpret_cast<const bf16*>(to_bf16_host(p_->at(name(e))).data()), per, s_),
            sync();
      return x;
    }
    // In tiles (cuda_ops.h: fp4_tiled_cols), each expert's row-major matrix tiled from a staging copy.
    DSV4_CHECK(x.rows % 16 == 0, "cuda", "'", first, "': ", x.rows, " rows; FP4 experts need a multiple of 16");
    const int64_t tiled = static_cast<int64_t>(x.rows) * fp4_tiled_cols(x.cols);
    x.codes.resize(tiled / 2 * x.E);
    x.scales.resize(tiled / 32 * x.E);
    DeviceArray<uint8_t> codes(per / 2), scales(per / 32);
    for (int e = 0; e < x.E; ++e) {
      if (!p_) {
        fill_fp4_cuda(codes.get(), scales.get(), per, init_std(sp), next_seed(), s_);
      } else {
        const TensorInfo* q = stored(name(e), DType::I8);
        const TensorInfo* sc = stored(ffn + "experts." + std::to_string(e) + "." + which + ".scale", DType::F8_E8M0);
        DSV4_CHECK(q && sc && static_cast<int64_t>(q->nbytes()) == per / 2 &&
                       static_cast<int64_t>(sc->nbytes()) == per / 32,
                   "cuda", "'", name(e), "': not packed FP4 with a 1×32 scale like expert 0");
        upload(codes.get(), q->data, per / 2, s_);
        upload(scales.get(), sc->data, per / 32, s_);
      }
      fp4_tile_cuda(codes.get(), scales.get(), x.rows, x.cols, x.codes.get() + e * tiled / 2,
                    x.scales.get() + e * tiled / 32, s_);
    }
    x.narrow_scales = fp4_scale_max_cuda(x.scales.get(), static_cast<int64_t>(x.scales.size()), s_) <= 128;
    sync();
    return x;
  }

  std::string formats() const {
    return str(kinds_[0], " f32 / ", kinds_[1], " bf16 / ", kinds_[2], " fp8-block projections");
  }

 private:
  const TensorSpec& spec(const std::string& name) const {
    auto it = specs_.find(name);
    DSV4_CHECK(it != specs_.end(), "cuda", "'", name, "' is not in the tensor table");
    return it->second;
  }
  const TensorInfo* stored(const std::string& name, DType dtype) const {
    if (!ck_) return nullptr;
    const TensorInfo* t = ck_->find(name);
    return t && t->dtype == dtype ? t : nullptr;
  }
  float init_std(const TensorSpec& sp) const {
    float std = 1.0f / std::sqrt(static_cast<float>(sp.shape.back()));
    if (sp.name.find("hc_") != std::string::npos) std *= 0.01f;
    return std;
  }
  void fill(float* x, int64_t n, const TensorSpec& sp) {
    switch (sp.init) {
      case InitKind::Normal: fill_normal_cuda(x, n, init_std(sp), next_seed(), s_); break;
      case InitKind::Ones: fill_const_cuda(x, n, 1.0f, s_); break;
      case InitKind::HcScale: fill_const_cuda(x, n, 0.01f, s_); break;
      default: fill_const_cuda(x, n, 0.0f, s_); break;
    }
  }
  uint64_t next_seed() { return seed_ * 1000003ull + counter_++; }
  void sync() { DSV4_CUDA_CHECK(cudaStreamSynchronize(s_)); }

  const ModelConfig& c_;
  const Params* p_;
  const Checkpoint* ck_;
  bool fast_, fp8_ok_;
  uint64_t seed_, counter_ = 0;
  cudaStream_t s_;
  std::map<std::string, TensorSpec> specs_;
  int kinds_[3] = {0, 0, 0};
};

DHc load_hc(Loader& L, const std::string& prefix, int rows) {
  DHc h;
  h.fn = L.vec(prefix + "_fn");
  h.base = L.vec(prefix + "_base");
  h.scale = L.vec(prefix + "_scale");
  h.rows = rows;
  return h;
}

DCompressor load_compressor(Loader& L, const std::string& p) {
  DCompressor c;
  c.wkv = L.matrix(p + "wkv.weight");
  c.wgate = L.matrix(p + "wgate.weight");
  c.ape = L.vec(p + "ape");
  c.norm = L.vec(p + "norm.weight");
  return c;
}

DBlock load_block(Loader& L, const ModelConfig& c, const std::string& pre, int m, bool hash) {
  const int n = c.hc_mult;
  DBlock b;
  b.ratio = m;
  b.attn_norm = L.vec(pre + "attn_norm.weight");
  b.ffn_norm = L.vec(pre + "ffn_norm.weight");
  b.hc_attn = load_hc(L, pre + "hc_attn", (2 + n) * n);
  b.hc_ffn = load_hc(L, pre + "hc_ffn", (2 + n) * n);
  const std::string a = pre + "attn.";
  DAttn& w = b.attn;
  w.wq_a = L.matrix(a + "wq_a.weight");
  w.q_norm = L.vec(a + "q_norm.weight");
  w.wq_b = L.matrix(a + "wq_b.weight");
  w.wkv = L.matrix(a + "wkv.weight");
  w.kv_norm = L.vec(a + "kv_norm.weight");
  w.wo_a = L.matrix(a + "wo_a.weight", c.o_lora_rank);
  w.wo_b = L.matrix(a + "wo_b.weight");
  w.sink = L.vec(a + "attn_sink");
  if (m > 0) w.comp = load_compressor(L, a + "compressor.");
  if (m == 4) {
    w.idx_wq_b = L.matrix(a + "indexer.wq_b.weight");
    w.idx_wproj = L.matrix(a + "indexer.weights_proj.weight");
    w.idx_comp = load_compressor(L, a + "indexer.compressor.");
  }
  const std::string f = pre + "ffn.";
  b.moe.gate = L.matrix(f + "gate.weight");
  if (hash) b.moe.tid2eid = L.table(f + "gate.tid2eid");
  else b.moe.bias = L.vec(f + "gate.bias");
  b.moe.w1 = L.experts(f, "w1");
  b.moe.w2 = L.experts(f, "w2");
  b.moe.w3 = L.experts(f, "w3");
  b.moe.sw1 = L.matrix(f + "shared_experts.w1.weight");
  b.moe.sw2 = L.matrix(f + "shared_experts.w2.weight");
  b.moe.sw3 = L.matrix(f + "shared_experts.w3.weight");
  return b;
}

}  // namespace

DModel load_model(const ModelConfig& c, const Params* params, const Checkpoint* ck, Precision p, bool fp8_ok,
                  uint64_t seed, cudaStream_t s) {
  Loader L(c, params, ck, p, fp8_ok, seed, s);
  DModel m;
  m.embed = L.matrix("embed.weight");
  m.head = L.matrix("head.weight");
  m.norm = L.vec("norm.weight");
  m.hc_head = load_hc(L, "hc_head", c.hc_mult);
  for (int l = 0; l < c.num_hidden_layers; ++l)
    m.layers.push_back(load_block(L, c, "layers." + std::to_string(l) + ".", c.ratio(l), l < c.num_hash_layers));
  for (int i = 0; i < c.num_nextn_predict_layers; ++i) {
    const std::string pre = "mtp." + std::to_string(i) + ".";
    DMtp t;
    t.block = load_block(L, c, pre, c.ratio(c.num_hidden_layers + i), false);
    t.e_proj = L.matrix(pre + "e_proj.weight");
    t.h_proj = L.matrix(pre + "h_proj.weight");
    t.enorm = L.vec(pre + "enorm.weight");
    t.hnorm = L.vec(pre + "hnorm.weight");
    t.norm = L.vec(pre + "norm.weight");
    t.hc_head = load_hc(L, pre + "hc_head", c.hc_mult);
    m.mtp.push_back(std::move(t));
  }
  DSV4_CUDA_CHECK(cudaStreamSynchronize(s));
  m.formats = L.formats();
  return m;
}

}  // namespace dsv4::cuda
