#include "model/model.h"

#include "ops/linear.h"
#include "ops/mhc.h"
#include "ops/rmsnorm.h"

namespace dsv4 {

Model::Model(ModelConfig config, Params params)
    : config_(std::move(config)), params_(std::move(params)), w_(bind_weights(config_, params_)),
      rope_(RopeTables::make(config_)) {}

Model Model::load(const std::string& dir) {
  ModelConfig c;
  Params p = load_params(dir, &c);
  return Model(std::move(c), std::move(p));
}

// Embed[id] for each row (one D vector); ids concatenated in batch order.
Tensor Model::embed_rows(const std::vector<Chunk>& batch, std::vector<int64_t>& ids) const {
  const int64_t D = config_.hidden_size;
  for (const Chunk& ch : batch) ids.insert(ids.end(), ch.ids.begin(), ch.ids.end());
  Tensor e({static_cast<int64_t>(ids.size()), D});
  for (size_t r = 0; r < ids.size(); ++r) {
    DSV4_CHECK(ids[r] >= 0 && ids[r] < config_.vocab_size, "model", "token id ", ids[r],
               " outside the vocabulary [0, ", config_.vocab_size, ")");
    std::copy(w_.embed->ptr() + ids[r] * D, w_.embed->ptr() + (ids[r] + 1) * D, e.ptr() + r * D);
  }
  return e;
}

Tensor Model::head_logits(const Tensor& X, const HcWeights& hc, const Tensor& norm) const {
  const int64_t rows = X.dim(0), D = config_.hidden_size, V = config_.vocab_size;
  const ops::HcShape s{config_.hc_mult, D, config_.rms_norm_eps, config_.hc_eps, config_.hc_sinkhorn_iters};
  Tensor y({rows, D});
  ops::hc_head(X.ptr(), rows, s, hc.fn->ptr(), hc.base->ptr(), hc.scale->ptr(), y.ptr());
  ops::rmsnorm(y.ptr(), rows, D, norm.ptr(), config_.rms_norm_eps, y.ptr());
  Tensor logits({rows, V});
  ops::linear(y.ptr(), rows, D, w_.head->ptr(), V, logits.ptr());
  return logits;
}

ForwardOut Model::forward(const std::vector<Chunk>& batch, bool want_streams, ForwardTrace* trace) const {
  const int64_t n = config_.hc_mult, D = config_.hidden_size;
  std::vector<int64_t> ids;
  Tensor e = embed_rows(batch, ids);
  const int64_t rows = e.dim(0);
  Tensor X({rows, n, D});
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) std::copy(e.ptr() + r * D, e.ptr() + (r + 1) * D, X.ptr() + (r * n + j) * D);

  if (trace) {
    trace->hidden.clear();
    trace->topk.assign(config_.num_hidden_layers, {});
  }
  for (int l = 0; l < config_.num_hidden_layers; ++l) {
    std::vector<Segment> segs;
    int64_t row0 = 0;
    for (const Chunk& ch : batch) {
      const int64_t T = static_cast<int64_t>(ch.ids.size());
      segs.push_back({&ch.state->layers[l], row0, T, ch.state->pos});
      row0 += T;
    }
    block_forward(config_, w_.layers[l], rope_, X, segs, ids.data(), trace ? &trace->topk[l] : nullptr);
    if (trace) trace->hidden.push_back(X);
  }
  for (const Chunk& ch : batch) ch.state->pos += static_cast<int64_t>(ch.ids.size());

  ForwardOut out;
  out.logits = head_logits(X, w_.hc_head, *w_.norm);
  if (want_streams) out.streams = std::move(X);
  return out;
}

ForwardOut Model::mtp_forward(const std::vector<Chunk>& batch, const Tensor& streams, int i) const {
  DSV4_CHECK(i >= 0 && i < static_cast<int>(w_.mtp.size()), "model", "MTP block ", i, " does not exist (",
             w_.mtp.size(), " in this model)");
  const MtpWeights& m = w_.mtp[i];
  const int64_t n = config_.hc_mult, D = config_.hidden_size;
  std::vector<int64_t> ids;
  Tensor e = embed_rows(batch, ids);
  const int64_t rows = e.dim(0);
  DSV4_CHECK(streams.numel() == rows * n * D, "model", "MTP streams hold ", streams.numel(), " values, expected ",
             rows * n * D);
  // e = RMSNorm_enorm(Embed[id]); X[j] = W_e e + W_h RMSNorm_hnorm(X[j])
  ops::rmsnorm(e.ptr(), rows, D, m.enorm->ptr(), config_.rms_norm_eps, e.ptr());
  Tensor ep({rows, D});
  ops::linear(e.ptr(), rows, D, m.e_proj->ptr(), D, ep.ptr());
  Tensor hn({rows * n, D});
  ops::rmsnorm(streams.ptr(), rows * n, D, m.hnorm->ptr(), config_.rms_norm_eps, hn.ptr());
  Tensor X({rows, n, D});
  ops::linear(hn.ptr(), rows * n, D, m.h_proj->ptr(), D, X.ptr());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t d = 0; d < D; ++d) X[(r * n + j) * D + d] += ep[r * D + d];

  std::vector<Segment> segs;
  int64_t row0 = 0;
  for (const Chunk& ch : batch) {
    const int64_t T = static_cast<int64_t>(ch.ids.size());
    segs.push_back({&ch.state->mtp[i], row0, T, ch.state->mtp_pos});
    row0 += T;
  }
  block_forward(config_, m.block, rope_, X, segs, ids.data(), nullptr);
  for (const Chunk& ch : batch) ch.state->mtp_pos += static_cast<int64_t>(ch.ids.size());

  ForwardOut out;
  out.logits = head_logits(X, m.hc_head, *m.norm);
  return out;
}

}  // namespace dsv4
