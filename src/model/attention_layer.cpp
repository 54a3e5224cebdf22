// The attention sub-layer of one block (model.md §5–§7) over a batch of chunks.
#include <cmath>

#include "model/block.h"
#include "ops/attention.h"
#include "ops/compressor.h"
#include "ops/indexer.h"
#include "ops/linear.h"
#include "ops/quant.h"
#include "ops/rmsnorm.h"
#include "ops/rope.h"

namespace dsv4 {

namespace {

struct EntryFormat {
  int64_t d;       // entry width (Dh or DI)
  bool indexer;    // indexer entries: Hadamard + FP4; main entries: FP8 on the nope dims
};

// Feeds one chunk's projections to a compressor and appends the entries of every block
// it completes: pool (§6), RMSNorm, RoPE at the block's first position, quantization.
void compressor_step(const ModelConfig& c, const CompressorWeights& w, int m, const EntryFormat& fmt,
                     const float* u, const float* z, int64_t T, int64_t pos0, const std::vector<float>& freqs,
                     CompressorState& cs, std::vector<float>& entries) {
  const bool overlap = m == 4;
  const int64_t d = fmt.d, width = (overlap ? 2 : 1) * d, R = c.qk_rope_head_dim;
  const int64_t kept = static_cast<int64_t>(cs.u.size()) / width;
  DSV4_CHECK(cs.first_pos + kept == pos0, "compressor", "state holds rows up to position ", cs.first_pos + kept,
             " but the chunk starts at ", pos0);
  cs.u.insert(cs.u.end(), u, u + T * width);
  cs.z.insert(cs.z.end(), z, z + T * width);
  const int64_t end = pos0 + T;
  std::vector<float> e(d);
  for (int64_t i = pos0 / m; i < end / m; ++i) {
    const int64_t cur = (i * m - cs.first_pos) * width;
    const bool has_prev = overlap && i > 0;
    const int64_t prev = has_prev ? ((i - 1) * m - cs.first_pos) * width : 0;
    ops::compress_pool(&cs.u[cur], &cs.z[cur], has_prev ? &cs.u[prev] : nullptr, has_prev ? &cs.z[prev] : nullptr,
                       m, d, overlap, e.data());
    ops::rmsnorm(e.data(), 1, d, w.norm->ptr(), c.rms_norm_eps, e.data());
    ops::rope_apply(e.data() + d - R, static_cast<int>(R), freqs.data(), i * m);
    if (fmt.indexer) {
      ops::hadamard(e.data(), d);
      ops::fp4_sim(e.data(), d, 32);
    } else {
      ops::fp8_sim(e.data(), d - R, 64);
    }
    entries.insert(entries.end(), e.begin(), e.end());
  }
  // Keep the incomplete block, and for overlap the last complete one too.
  const int64_t keep_from = std::max<int64_t>(0, (end / m - (overlap ? 1 : 0)) * m);
  const int64_t drop = (keep_from - cs.first_pos) * width;
  if (drop > 0) {
    cs.u.erase(cs.u.begin(), cs.u.begin() + drop);
    cs.z.erase(cs.z.begin(), cs.z.begin() + drop);
    cs.first_pos = keep_from;
  }
}

// u = wkv · a, z = wgate · a + ape[t mod m] for the rows of all segments.
void compressor_project(const CompressorWeights& w, int m, const Tensor& a, const std::vector<Segment>& segs,
                        Tensor& u, Tensor& z) {
  const int64_t rows = a.dim(0), D = a.dim(1), width = w.wkv->dim(0);
  u = Tensor({rows, width});
  z = Tensor({rows, width});
  ops::linear(a.ptr(), rows, D, w.wkv->ptr(), width, u.ptr());
  ops::linear(a.ptr(), rows, D, w.wgate->ptr(), width, z.ptr());
  for (const Segment& s : segs)
    for (int64_t t = 0; t < s.T; ++t) {
      const float* ape = w.ape->ptr() + ((s.pos0 + t) % m) * width;
      float* zr = z.ptr() + (s.row0 + t) * width;
      for (int64_t f = 0; f < width; ++f) zr[f] += ape[f];
    }
}

}  // namespace

void attention_forward(const ModelConfig& c, const AttnWeights& w, int m, const RopeTables& rope,
                       const Tensor& a, const std::vector<Segment>& segs, Tensor& out, TopkTrace* topk) {
  const int64_t rows = a.dim(0), D = c.hidden_size, H = c.num_attention_heads, Dh = c.head_dim;
  const int64_t R = c.qk_rope_head_dim, N = Dh - R, Q = c.q_lora_rank, W = c.sliding_window;
  const int64_t G = c.o_groups, O = c.o_lora_rank;
  const std::vector<float>& freqs = rope.for_ratio(m);

  // Query: low rank, q_norm, per-head RMS normalization (no weight), RoPE.
  Tensor qr({rows, Q}), q({rows, H * Dh});
  ops::linear(a.ptr(), rows, D, w.wq_a->ptr(), Q, qr.ptr());
  ops::rmsnorm(qr.ptr(), rows, Q, w.q_norm->ptr(), c.rms_norm_eps, qr.ptr());
  ops::linear(qr.ptr(), rows, Q, w.wq_b->ptr(), H * Dh, q.ptr());
  ops::rmsnorm(q.ptr(), rows * H, Dh, nullptr, c.rms_norm_eps, q.ptr());

  // Window key/value: one shared head, kv_norm, RoPE, FP8 simulation of the nope dims.
  Tensor kv({rows, Dh});
  ops::linear(a.ptr(), rows, D, w.wkv->ptr(), Dh, kv.ptr());
  ops::rmsnorm(kv.ptr(), rows, Dh, w.kv_norm->ptr(), c.rms_norm_eps, kv.ptr());
  for (const Segment& s : segs)
    for (int64_t t = 0; t < s.T; ++t) {
      const int64_t r = s.row0 + t, pos = s.pos0 + t;
      ops::rope_apply_heads(q.ptr() + r * H * Dh, H, Dh, N, static_cast<int>(R), freqs.data(), pos);
      ops::rope_apply(kv.ptr() + r * Dh + N, static_cast<int>(R), freqs.data(), pos);
      ops::fp8_sim(kv.ptr() + r * Dh, N, 64);
    }

  // Compressed entries (m > 0) and the lightning indexer's inputs (m = 4).
  Tensor cu, cz, iu, iz, qI, iw;
  const int64_t HI = c.index_n_heads, DI = c.index_head_dim;
  if (m > 0) compressor_project(w.compressor, m, a, segs, cu, cz);
  if (m == 4) {
    compressor_project(w.idx_compressor, 4, a, segs, iu, iz);
    qI = Tensor({rows, HI * DI});
    ops::linear(qr.ptr(), rows, Q, w.idx_wq_b->ptr(), HI * DI, qI.ptr());
    iw = Tensor({rows, HI});
    ops::linear(a.ptr(), rows, D, w.idx_weights_proj->ptr(), HI, iw.ptr());
    const float wscale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(DI) * HI));
    for (float& v : iw.data) v *= wscale;
    for (const Segment& s : segs)
      for (int64_t t = 0; t < s.T; ++t) {
        float* qt = qI.ptr() + (s.row0 + t) * HI * DI;
        ops::rope_apply_heads(qt, HI, DI, DI - R, static_cast<int>(R), freqs.data(), s.pos0 + t);
        for (int64_t h = 0; h < HI; ++h) ops::hadamard(qt + h * DI, DI);
        ops::fp4_sim(qt, HI * DI, 32);
      }
  }

  Tensor o({rows, H * Dh});
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(Dh)));
  if (topk) topk->assign(rows, {});
  for (const Segment& s : segs) {
    AttnState& st = *s.state;
    if (m > 0)
      compressor_step(c, w.compressor, m, {Dh, false}, cu.ptr() + s.row0 * cu.dim(1), cz.ptr() + s.row0 * cz.dim(1),
                      s.T, s.pos0, freqs, st.comp, st.entries);
    if (m == 4)
      compressor_step(c, w.idx_compressor, 4, {DI, true}, iu.ptr() + s.row0 * iu.dim(1),
                      iz.ptr() + s.row0 * iz.dim(1), s.T, s.pos0, freqs, st.idx_comp, st.idx_entries);

#pragma omp parallel for schedule(dynamic) if (s.T > 1)
    for (int64_t t = 0; t < s.T; ++t) {
      const int64_t r = s.row0 + t, pos = s.pos0 + t;
      // The attended set: window tokens, then compressed entries, in one softmax.
      std::vector<float> keys;
      const int64_t lo = std::max<int64_t>(0, pos - W + 1);
      keys.reserve((pos - lo + 1 + (m > 0 ? (pos + 1) / m : 0)) * Dh);
      for (int64_t p = lo; p <= pos; ++p) {
        const float* src = p >= s.pos0 ? kv.ptr() + (s.row0 + p - s.pos0) * Dh : &st.window[(p % W) * Dh];
        keys.insert(keys.end(), src, src + Dh);
      }
      if (m > 0) {
        const int64_t count = (pos + 1) / m;
        if (m == 4) {
          std::vector<float> score(count);
          ops::indexer_scores(qI.ptr() + r * HI * DI, iw.ptr() + r * HI, HI, DI, st.idx_entries.data(), count,
                              score.data());
          std::vector<int32_t> sel = ops::topk_lower_index(score.data(), count, c.index_topk);
          for (int32_t i : sel) keys.insert(keys.end(), &st.entries[i * Dh], &st.entries[(i + 1) * Dh]);
          if (topk) (*topk)[r] = std::move(sel);
        } else {
          keys.insert(keys.end(), st.entries.begin(), st.entries.begin() + count * Dh);
        }
      }
      float* ot = o.ptr() + r * H * Dh;
      ops::sink_attention(q.ptr() + r * H * Dh, H, Dh, keys.data(), static_cast<int64_t>(keys.size()) / Dh,
                          w.sink->ptr(), scale, ot);
      ops::rope_apply_heads(ot, H, Dh, N, static_cast<int>(R), freqs.data(), pos, /*inverse=*/true);
    }
    // The ring keeps the last W key/values for the next chunk.
    for (int64_t t = std::max<int64_t>(0, s.T - W); t < s.T; ++t) {
      const int64_t pos = s.pos0 + t;
      std::copy(kv.ptr() + (s.row0 + t) * Dh, kv.ptr() + (s.row0 + t + 1) * Dh, &st.window[(pos % W) * Dh]);
    }
  }

  // Grouped low-rank output: group g's heads through its slice of wo_a, then wo_b.
  const int64_t gin = H * Dh / G;
  Tensor og({rows, G * O});
  for (int64_t g = 0; g < G; ++g) {
    // og[:, g·O : (g+1)·O] = o[:, g·gin : (g+1)·gin] · wo_a[g·O : (g+1)·O]ᵀ
    Tensor og_g({rows, O}), o_g({rows, gin});
    for (int64_t r = 0; r < rows; ++r)
      std::copy(o.ptr() + r * H * Dh + g * gin, o.ptr() + r * H * Dh + (g + 1) * gin, o_g.ptr() + r * gin);
    ops::linear(o_g.ptr(), rows, gin, w.wo_a->ptr() + g * O * gin, O, og_g.ptr());
    for (int64_t r = 0; r < rows; ++r)
      std::copy(og_g.ptr() + r * O, og_g.ptr() + (r + 1) * O, og.ptr() + r * G * O + g * O);
  }
  out = Tensor({rows, D});
  ops::linear(og.ptr(), rows, G * O, w.wo_b->ptr(), D, out.ptr());
}

}  // namespace dsv4
