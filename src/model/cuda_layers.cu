// The attention and MoE sub-layers on the GPU, step by step as attention_layer.cpp and
// moe_layer.cpp (model.md §5–§9).
#include <cmath>

#include "model/cuda_model_impl.cuh"

namespace dsv4::cuda {

// u = wkv · a, z = wgate · a + ape[t mod m]; the entries this step completes; the pending ring.
void CudaModel::compress(const DCompressor& w, int m, const RowFormat& f, const float* u, float* z, int table_row,
                         int which) {
  const BatchDesc& b = *batch_;
  auto it = b.jobs.find(m);
  const BatchDesc::Jobs jobs = it == b.jobs.end() ? BatchDesc::Jobs{} : it->second;
  const LayerCache* caches = b.d_caches + static_cast<int64_t>(table_row) * b.nseq;
  const int width = static_cast<int>(w.wkv.rows);
  add_ape_cuda(z, b.rows, width, w.ape.get(), m, b.d_pos, stream_);
  compress_entries_cuda(u, z, m, f, w.norm.get(), c_.rms_norm_eps, w_.freqs(m), jobs.list, jobs.count, jobs.capacity,
                        b.d_seqs, caches, which, stream_);
  compressor_keep_cuda(u, z, width, m == 4 ? 2 * m : m, b.d_seqs, b.nseq, caches, which, stream_);
}

void CudaModel::attention(const DBlock& blk, int table_row, const float* a_in, float* out,
                          std::vector<int32_t>* topk_rows) {
  const BatchDesc& b = *batch_;
  const DAttn& w = blk.attn;
  const int m = blk.ratio;
  const int64_t rows = b.rows, D = c_.hidden_size, H = c_.num_attention_heads, Dh = c_.head_dim;
  const int64_t R = c_.qk_rope_head_dim, N = Dh - R, Q = c_.q_lora_rank, G = c_.o_groups, O = c_.o_lora_rank;
  const int64_t HI = c_.index_n_heads, DI = c_.index_head_dim, K = c_.index_topk;
  const float eps = c_.rms_norm_eps;
  const float* freqs = w_.freqs(m);
  const LayerCache* caches = b.d_caches + static_cast<int64_t>(table_row) * b.nseq;
  Act a = act("attn.a", a_in, rows, D);
  if (prequantized_) adopt_quantized(a);
  mark("attn.qkv");

  // Every projection of the sub-layer input at once (one launch per weight form in decode):
  // the query's low rank, the window key/value, the compressors' and the indexer's weights.
  float* qr = scratch_->get<float>("attn.qr", rows * Q);
  float* kv = scratch_->get<float>("attn.kv", rows * Dh);
  float *cu = nullptr, *cz = nullptr, *iu = nullptr, *iz = nullptr, *iw = nullptr;
  std::vector<std::pair<const DTensor*, float*>> proj = {{&w.wq_a, qr}, {&w.wkv, kv}};
  if (m > 0) {
    cu = scratch_->get<float>("comp.u", rows * w.comp.wkv.rows);
    cz = scratch_->get<float>("comp.z", rows * w.comp.wkv.rows);
    proj.push_back({&w.comp.wkv, cu});
    proj.push_back({&w.comp.wgate, cz});
  }
  if (m == 4) {
    iu = scratch_->get<float>("idx.u", rows * w.idx_comp.wkv.rows);
    iz = scratch_->get<float>("idx.z", rows * w.idx_comp.wkv.rows);
    iw = scratch_->get<float>("idx.w", rows * HI);
    proj.push_back({&w.idx_comp.wkv, iu});
    proj.push_back({&w.idx_comp.wgate, iz});
    proj.push_back({&w.idx_wproj, iw});
  }
  linear_many(a, proj);

  // Query: low rank, q_norm, per-head RMS normalization (no weight), RoPE.
  rmsnorm_cuda(qr, rows, Q, w.q_norm.get(), eps, qr, stream_);
  Act qra = act("attn.qr", qr, rows, Q);
  float* q = scratch_->get<float>("attn.q", rows * H * Dh);
  linear(w.wq_b, qra, q);
  rmsnorm_rope_cuda(q, rows, static_cast<int>(H), Dh, nullptr, eps, static_cast<int>(R), freqs, b.d_pos, 0, false,
                    stream_);

  // Window key/value: one shared head, kv_norm, RoPE, FP8 simulation of the nope dims
  // (and, with compact caches, the RoPE dims as the cache keeps them).
  rmsnorm_rope_cuda(kv, rows, 1, Dh, w.kv_norm.get(), eps, static_cast<int>(R), freqs, b.d_pos, 64, compact_, stream_);

  // Compressed entries (m > 0) and the lightning indexer (m = 4).
  mark("attn.compress");
  if (m > 0)
    compress(w.comp, m, RowFormat{static_cast<int>(Dh), static_cast<int>(R), compact_, false}, cu, cz, table_row, 0);
  int32_t* selected = nullptr;
  if (m == 4) {
    compress(w.idx_comp, 4, RowFormat{static_cast<int>(DI), static_cast<int>(R), compact_, true}, iu, iz, table_row, 1);

    mark("attn.indexer");
    float* qI = scratch_->get<float>("idx.q", rows * HI * DI);
    linear(w.idx_wq_b, qra, qI);
    rope_cuda(qI, rows, HI, HI * DI, DI, DI - R, static_cast<int>(R), freqs, b.d_pos, false, stream_);
    hadamard_cuda(qI, rows * HI, DI, stream_);
    fp4_sim_cuda(qI, rows, HI * DI, HI * DI, stream_);
    const float wscale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(DI) * HI));

    selected = scratch_->get<int32_t>("idx.selected", rows * K);
    const int64_t max_count = b.idx_max_count;
    const int64_t chunk = std::max<int64_t>(1, (int64_t(1) << 26) / max_count);  // 256 MiB of scores at most
    float* score = scratch_->get<float>("idx.score", std::min(rows, chunk) * max_count);
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
      const int64_t nr = std::min(chunk, rows - r0);
      indexer_scores_cuda(qI + r0 * HI * DI, iw + r0 * HI, wscale, nr, static_cast<int>(HI), static_cast<int>(DI),
                          b.d_slot + r0, b.d_pos + r0, caches, compact_, score, max_count, max_count, stream_);
      topk_cuda(score, max_count, nr, b.d_pos + r0, 4, static_cast<int>(K), selected + r0 * K, stream_);
    }
    if (topk_rows) {
      topk_rows->resize(rows * K);
      download(topk_rows->data(), selected, rows * K, stream_);
    }
  }

  // Window rows, then compressed entries, in one softmax with the sink; then the inverse RoPE.
  mark("attn.core");
  float* o = scratch_->get<float>("attn.o", rows * H * Dh);
  AttnShape shape{static_cast<int>(H), static_cast<int>(Dh), static_cast<int>(R), c_.sliding_window, m,
                  static_cast<int>(K), static_cast<float>(1.0 / std::sqrt(static_cast<double>(Dh))), compact_};
  const int64_t max_pos = 4 * b.idx_max_count;  // the largest end position (capacity, for graphs) in this batch
  shape.max_keys = static_cast<int>(std::min<int64_t>(
      INT32_MAX, c_.sliding_window + (m == 4 ? std::min<int64_t>(K, max_pos / 4) : m > 0 ? max_pos / m : 0)));
  shape.bf16_products = compact_;  // the fast precision: bf16 tensor cores (attention.cu)
  float* work = scratch_->get<float>("attn.work", std::max<int64_t>(1, sparse_attention_work(rows, shape)));
  sparse_attention_cuda(q, kv, w.sink.get(), shape, b.d_slot, b.d_pos, rows, b.d_seqs, caches, selected, o, work,
                        stream_);
  rope_cuda(o, rows, H, H * Dh, Dh, N, static_cast<int>(R), freqs, b.d_pos, true, stream_);
  window_keep_cuda(kv, RowFormat{static_cast<int>(Dh), static_cast<int>(R), compact_, false}, c_.sliding_window,
                   b.d_seqs, b.nseq, caches, stream_);

  // Grouped low-rank output: group g's heads through its rows of wo_a, then wo_b.
  mark("attn.out");
  const int64_t gin = H * Dh / G;
  float* og = scratch_->get<float>("attn.og", rows * G * O);
  Act oa = act("attn.o", o, rows, H * Dh);
  if (!gemv(w.wo_a, 0, G * O, oa, 0, og, G * O, 0.0f, O, gin))  // one launch for all groups
    for (int64_t g = 0; g < G; ++g) gemm(w.wo_a, g * O, O, oa, g * gin, og + g * O, G * O);
  Act oga = act("attn.og", og, rows, G * O);
  linear(w.wo_b, oga, out);
}

// The MoE sub-layer: routing, the shared expert, the routed experts grouped by expert, combine.
void CudaModel::moe(const DMoe& w, const float* a_in, float* out) {
  const BatchDesc& b = *batch_;
  const int64_t rows = b.rows, D = c_.hidden_size, F = c_.moe_intermediate_size;
  const int E = c_.n_routed_experts, k = c_.num_experts_per_tok;
  const float limit = c_.swiglu_limit;
  Act a = act("moe.a", a_in, rows, D);
  if (prequantized_) adopt_quantized(a);
  mark("moe.route+shared");

  float* logits = scratch_->get<float>("moe.logits", rows * E);
  float* sg = scratch_->get<float>("moe.sg", rows * F);
  float* su = scratch_->get<float>("moe.su", rows * F);
  linear_many(a, {{&w.gate, logits}, {&w.sw1, sg}, {&w.sw3, su}});  // the gate and the shared expert's inputs
  int32_t* experts = scratch_->get<int32_t>("moe.experts", rows * k);
  float* weights = scratch_->get<float>("moe.weights", rows * k);
  moe_route_cuda(logits, rows, E, k, c_.scoring_func, w.bias.empty() ? nullptr : w.bias.get(),
                 w.tid2eid.empty() ? nullptr : w.tid2eid.get(), b.d_ids, c_.routed_scaling_factor, experts, weights,
                 stream_);

  // Shared expert (weight 1) on every row.
  float* sh = scratch_->get<float>("moe.sh", rows * F);
  Act sha = act("moe.sh", sh, rows, F);
  if (gemv_enabled_ && w.sw2.kind == GemmKind::FP8Block && rows <= kGemvMaxRows && F % 128 == 0) {  // decode: one launch
    adopt_quantized(sha);
    swiglu_quant_cuda(sg, su, rows, F, limit, sh, sha.q, sha.qs, stream_);
  } else {
    swiglu_cuda(sg, su, rows, F, limit, nullptr, nullptr, sh, stream_);
  }
  float* ysh = scratch_->get<float>("moe.ysh", rows * D);
  linear(w.sw2, sha, ysh);

  // Routed experts: the T·k assignments sorted by expert (stable), each expert's rows as one product.
  mark("moe.group");
  const int64_t n = rows * k;
  const bool fast = prec_ == Precision::Fast, few = rows <= 64;
  const int tile_rows = fast && !few ? kMoeTileRows : 1 << 30;
  const int max_tiles = static_cast<int>(tile_rows >= n ? std::min<int64_t>(E, n) : n / tile_rows + std::min<int64_t>(E, n));
  int32_t* counts = scratch_->get<int32_t>("moe.counts", E);
  int32_t* offsets = scratch_->get<int32_t>("moe.offsets", E + 1);
  int32_t* perm = scratch_->get<int32_t>("moe.perm", n);
  int32_t* inv = scratch_->get<int32_t>("moe.inv", n);
  int2* tiles = scratch_->get<int2>("moe.tiles", max_tiles);
  int32_t* ntiles = scratch_->get<int32_t>("moe.ntiles", 1);
  moe_group_cuda(experts, rows, k, E, counts, offsets, perm, inv, tile_rows, tiles, ntiles, stream_);
  float* ys = scratch_->get<float>("moe.ys", n * D);
  mark("moe.experts");
  cudaEvent_t timer = tic(true, 6.0 * n * F * D);
  if (!fast) {
    // Float32: each expert's rows through cuBLASLt (the row counts come back to the host).
    float* xs = scratch_->get<float>("moe.xs", n * D);
    moe_gather_cuda(a_in, D, perm, n, k, xs, nullptr, stream_);
    std::vector<int32_t> off(E + 1);
    download(off.data(), offsets, E + 1, stream_);
    DSV4_CUDA_CHECK(cudaStreamSynchronize(stream_));
    float* g = scratch_->get<float>("moe.g", n * F);
    float* u = scratch_->get<float>("moe.u", n * F);
    float* h = scratch_->get<float>("moe.h", n * F);
    for (int e = 0; e < E; ++e)
      if (off[e + 1] > off[e]) {
        const int64_t r0 = off[e], cnt = off[e + 1] - off[e];
        linear_f32(xs + r0 * D, cnt, D, w.w1.f32.get() + e * F * D, F, g + r0 * F, F);
        linear_f32(xs + r0 * D, cnt, D, w.w3.f32.get() + e * F * D, F, u + r0 * F, F);
      }
    swiglu_cuda(g, u, n, F, limit, weights, perm, h, stream_);
    for (int e = 0; e < E; ++e)
      if (off[e + 1] > off[e]) {
        const int64_t r0 = off[e], cnt = off[e + 1] - off[e];
        linear_f32(h + r0 * F, cnt, F, w.w2.f32.get() + e * D * F, D, ys + r0 * D, D);
      }
  } else if (few) {
    bf16* xs = scratch_->get<bf16>("moe.xb", n * D);
    moe_gather_cuda(a_in, D, perm, n, k, nullptr, xs, stream_);
    bf16* h = scratch_->get<bf16>("moe.hb", n * F);
    moe_gemv_swiglu_cuda(xs, w.w1.view(), w.w3.view(), tiles, ntiles, max_tiles, offsets, limit, weights, perm, h,
                         stream_);
    moe_gemv_down_cuda(h, w.w2.view(), tiles, ntiles, max_tiles, offsets, ys, stream_);
  } else {
    bf16* xs = scratch_->get<bf16>("moe.xb", n * D);
    moe_gather_cuda(a_in, D, perm, n, k, nullptr, xs, stream_);
    bf16* h = scratch_->get<bf16>("moe.hb", n * F);
    moe_grouped_swiglu_cuda(xs, w.w1.view(), w.w3.view(), tiles, ntiles, max_tiles, tile_rows, offsets, limit, weights,
                            perm, h, stream_);
    moe_grouped_down_cuda(h, w.w2.view(), tiles, ntiles, max_tiles, tile_rows, offsets, ys, stream_);
  }
  toc(timer);
  mark("moe.combine");
  moe_combine_cuda(ys, inv, ysh, rows, k, D, out, stream_);
}

}  // namespace dsv4::cuda
