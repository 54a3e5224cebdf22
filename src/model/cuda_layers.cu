// The attention and MoE sub-layers on the GPU, step by step as attention_layer.cpp and
// moe_layer.cpp (model.md §5–§9).
#include <algorithm>
#include <cmath>

#include "model/cuda_model_impl.cuh"

// -DDSV4_OUT_FP8=0: wo_b's input rounded by its own launch (side-by-side runs).
#ifndef DSV4_OUT_FP8
#define DSV4_OUT_FP8 1
#endif

namespace dsv4::cuda {

// u = wkv · a, z = wgate · a + ape[t mod m]; the entries this step completes; the pending ring.
void CudaModel::compress(const DCompressor& w, int m, const RowFormat& f, const float* u, float* z, int table_row,
                         int which, cudaStream_t s) {
  const BatchDesc& b = *batch_;
  auto it = b.jobs.find(m);
  const BatchDesc::Jobs jobs = it == b.jobs.end() ? BatchDesc::Jobs{} : it->second;
  const LayerCache* caches = b.d_caches + static_cast<int64_t>(table_row) * b.nseq;
  const int width = static_cast<int>(w.wkv.rows);
  compress_entries_cuda(u, z, w.ape.get(), m, f, w.norm.get(), c_.rms_norm_eps, w_.freqs(m), jobs.list, jobs.count,
                        jobs.capacity, b.d_seqs, caches, which, s);
  int max_rows = 0;  // the longest chunk: a decode step keeps one row a sequence
  for (const SeqRows& q : b.seqs) max_rows = std::max(max_rows, q.T);
  compressor_keep_cuda(u, z, w.ape.get(), m, width, m == 4 ? 2 * m : m, b.d_seqs, b.nseq, max_rows, caches, which, s);
}

void CudaModel::attention(const DBlock& blk, int table_row, const float* a_in, float* out,
                          std::vector<int32_t>* topk_rows) {
  const BatchDesc& b = *batch_;
  const DAttn& w = blk.attn;
  const int m = blk.ratio;
  const int64_t rows = b.rows, D = c_.hidden_size, H = c_.num_attention_heads, Dh = c_.head_dim;
  const int64_t R = c_.qk_rope_head_dim, Q = c_.q_lora_rank, G = c_.o_groups, O = c_.o_lora_rank;
  const int64_t HI = c_.index_n_heads, DI = c_.index_head_dim, K = c_.index_topk;
  const float eps = c_.rms_norm_eps;
  const float* freqs = w_.freqs(m);
  const LayerCache* caches = b.d_caches + static_cast<int64_t>(table_row) * b.nseq;
  Act a = act("attn.a", a_in, rows, D);
  if (prequantized_) adopt_quantized(a);
  mark("attn.qkv");

  // The projections of the sub-layer input: the query's low rank, the window key/value, the
  // compressors' and the indexer's weights (decode: one few-row launch, or one per stream).
  float* qr = scratch_->get<float>("attn.qr", rows * Q);
  float* kv = scratch_->get<float>("attn.kv", rows * Dh);
  float *cu = nullptr, *cz = nullptr, *iu = nullptr, *iz = nullptr, *iw = nullptr;
  std::vector<std::pair<const DTensor*, float*>> proj = {{&w.wq_a, qr}, {&w.wkv, kv}}, comp_proj, idx_proj;
  if (m > 0) {
    cu = scratch_->get<float>("comp.u", rows * w.comp.wkv.rows);
    cz = scratch_->get<float>("comp.z", rows * w.comp.wkv.rows);
    comp_proj = {{&w.comp.wkv, cu}, {&w.comp.wgate, cz}};
  }
  if (m == 4) {
    iu = scratch_->get<float>("idx.u", rows * w.idx_comp.wkv.rows);
    iz = scratch_->get<float>("idx.z", rows * w.idx_comp.wkv.rows);
    iw = scratch_->get<float>("idx.w", rows * HI);
    idx_proj = {{&w.idx_comp.wkv, iu}, {&w.idx_comp.wgate, iz}, {&w.idx_wproj, iw}};
  }

  // Decode: the compressors and the lightning indexer run beside the query's chain, each on its
  // own side stream and making its own projections of the input (the indexer forked again after
  // the query's norm, whose FP8 form it reads); both are joined before the attention.
  const bool side = side_enabled() && m > 0 && prequantized_ && Q % 128 == 0;
  cudaStream_t s_comp = side ? side2_ : stream_, s_idx = side ? side_idx_ : stream_;
  if (side) {
    if (m == 4) {  // first: the indexer's chain is the longer
      fork_side(s_idx);
      gemv_many_on(a, idx_proj, s_idx);
    }
    fork_side(s_comp);
    gemv_many_on(a, comp_proj, s_comp);
    linear_many(a, proj);
  } else {
    proj.insert(proj.end(), comp_proj.begin(), comp_proj.end());
    proj.insert(proj.end(), idx_proj.begin(), idx_proj.end());
    linear_many(a, proj);
  }
  // Window key/value: one shared head, kv_norm, RoPE, FP8 simulation of the nope dims
  // (and, with compact caches, the RoPE dims as the cache keeps them). One launch for both.
  // Decode (one row per sequence): that launch also writes the key in the attention's compact
  // chunk form and into the window ring (the attention's encode and window-keep steps).
  AttnShape shape{static_cast<int>(H), static_cast<int>(Dh), static_cast<int>(R), c_.sliding_window, m,
                  static_cast<int>(K), static_cast<float>(1.0 / std::sqrt(static_cast<double>(Dh))), compact_};
  const int64_t max_pos = 4 * b.idx_max_count;  // the largest end position (capacity, for graphs) in this batch
  shape.max_keys = static_cast<int>(std::min<int64_t>(
      INT32_MAX, c_.sliding_window + (m == 4 ? std::min<int64_t>(K, max_pos / 4) : m > 0 ? max_pos / m : 0)));
  shape.bf16_products = compact_;  // the fast precision: bf16 tensor cores (attention.cu)
  float* work = scratch_->get<float>("attn.work", std::max<int64_t>(1, sparse_attention_work(rows, shape)));
  RmsRopeRows key{kv, rows, 1, Dh, w.kv_norm.get(), 64, compact_};
  const bool encoded = side_enabled() && rows == b.nseq && sparse_attention_chunk(work, rows, shape, &key.enc);
  if (encoded) {
    key.encode = true;
    key.ring_caches = caches;
    key.slot = b.d_slot;
    key.W = c_.sliding_window;
  }
  // With the query's normalization in the attention, the key's goes first, and at decode on its
  // own side stream beside the query's chain (joined before the attention).
  const bool fuse_q = sparse_attention_norms_q(shape);
  const bool kv_side = fuse_q && side_enabled() && prequantized_;
  if (fuse_q) {
    shape.q_rope = freqs;
    shape.q_eps = eps;
    if (kv_side) fork_side(side_kv_);
    rmsnorm_rope2_cuda(RmsRopeRows{}, key, eps, static_cast<int>(R), freqs, b.d_pos, kv_side ? side_kv_ : stream_);
  }
  // Compressed entries (m > 0) and the indexer's (m = 4).
  mark("attn.compress");
  cudaStream_t s_cz = s_comp;  // the compressor's steps: in a captured graph, at the greatest priority
  if (side && capturing_ && m > 0) {
    join_streams(s_comp, side_comp_);
    s_cz = side_comp_;
  }
  if (m > 0)
    compress(w.comp, m, RowFormat{static_cast<int>(Dh), static_cast<int>(R), compact_, false}, cu, cz, table_row, 0,
             s_cz);
  if (m == 4)
    compress(w.idx_comp, 4, RowFormat{static_cast<int>(DI), static_cast<int>(R), compact_, true}, iu, iz, table_row, 1,
             s_idx);

  // Query: low rank, q_norm, per-head RMS normalization (no weight), RoPE.
  mark("attn.qkv");
  Act qra = act("attn.qr", qr, rows, Q);
  if (prequantized_ && Q % 128 == 0) adopt_quantized(qra);  // decode: the norm also writes wq_b's FP8 input
  rmsnorm_cuda(qr, rows, Q, w.q_norm.get(), eps, qr, stream_, qra.q, qra.qs);
  // The indexer's query, scores and top-k on a stream of their own: the query's projection does not
  // queue behind the indexer's compressor (joined before the scores).
  cudaStream_t s_iq = side ? side_idxq_ : s_idx;
  if (side && m == 4) fork_side(s_iq);
  float* q = scratch_->get<float>("attn.q", rows * H * Dh);
  // Decode of one row, CSA layers: wq_b is issued after the indexer's scores, so the indexer's
  // query projection (the head of the longer chain) streams alone. wq_b's PDL wait covers the join,
  // so it starts once the scores complete and streams beside the top-k. B=1 1M 3.40 -> 3.36 ms, 4K
  // 2.95 -> 2.935 (bench/results/2026-11-30-cuda-16.md); issued before the scores, it keeps their
  // blocks (a whole SM each) waiting (2026-11-30-cuda-17.md). Several rows keep the plain order:
  // their scores fill the SMs for longer, and that case was not measured.
  const bool defer_wq_b = side && m == 4 && fuse_q && rows == 1;
  if (!defer_wq_b) linear(w.wq_b, qra, q);
  // The query's per-head normalization and RoPE: in the attention's loading of q where it can
  // (AttnShape::q_rope); otherwise in the key's launch.
  if (!fuse_q)
    rmsnorm_rope2_cuda(RmsRopeRows{q, rows, static_cast<int>(H), Dh, nullptr, 0, false}, key, eps, static_cast<int>(R),
                       freqs, b.d_pos, stream_);

  // The lightning indexer (m = 4): its query heads, scores over the indexer entries, top-k.
  int32_t* selected = nullptr;
  if (m == 4) {
    mark("attn.indexer");
    float* qI = scratch_->get<float>("idx.q", rows * HI * DI);
    selected = scratch_->get<int32_t>("idx.selected", rows * K);
    const int64_t max_count = b.idx_max_count;
    const int64_t chunk = std::max<int64_t>(1, (int64_t(1) << 26) / max_count);  // 256 MiB of scores at most
    float* score = scratch_->get<float>("idx.score", std::min(rows, chunk) * max_count);
    uint32_t* digits = scratch_->counters<uint32_t>("idx.digits", std::min(rows, chunk) * kTopkDigits);
    if (side) gemv_many_on(qra, {{&w.idx_wq_b, qI}}, s_iq);  // (qra is already in FP8)
    else linear(w.idx_wq_b, qra, qI);
    indexer_query_cuda(qI, rows, static_cast<int>(HI), DI, static_cast<int>(R), freqs, b.d_pos, s_iq);
    if (side) join_streams(s_idx, s_iq);  // the entries' weights and the new compressed entry
    const float wscale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(DI) * HI));
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
      const int64_t nr = std::min(chunk, rows - r0);
      // The scores kernel counts the top-k's first digit when it can (decode), sparing the top-k a pass.
      const bool counted =
          indexer_scores_cuda(qI + r0 * HI * DI, iw + r0 * HI, wscale, nr, static_cast<int>(HI), static_cast<int>(DI),
                              b.d_slot + r0, b.d_pos + r0, caches, compact_, score, max_count, max_count, s_iq, digits);
      if (defer_wq_b && r0 == 0) {
        join_streams(s_iq, stream_);
        linear(w.wq_b, qra, q);
      }
      topk_cuda(score, max_count, nr, b.d_pos + r0, 4, static_cast<int>(K), selected + r0 * K, s_iq,
                counted ? digits : nullptr);
    }
  }
  if (side) {
    join_side(s_cz);
    if (s_cz != s_comp) join_side(s_comp);
    if (m == 4) join_side(s_iq);  // (s_idx joined s_iq before the scores)
  }
  if (kv_side) join_side(side_kv_);
  if (topk_rows && selected) {
    topk_rows->resize(rows * K);
    download(topk_rows->data(), selected, rows * K, stream_);
  }

  // Window rows, then compressed entries, in one softmax with the sink; then the inverse RoPE.
  mark("attn.core");
  float* o = scratch_->get<float>("attn.o", rows * H * Dh);
  // The inverse RoPE and (decode) wo_a's FP8 input come out of the attention's last step.
  Act oa = act("attn.o", o, rows, H * Dh);
  if (prequantized_ && Dh % 128 == 0) adopt_quantized(oa);
  const bool kept = sparse_attention_cuda(q, kv, w.sink.get(), shape, b.d_slot, b.d_pos, rows, b.d_seqs, caches,
                                          selected, o, work, stream_,
                                          AttnOutput{freqs, oa.q, oa.qs, rows == b.nseq && !encoded, encoded});
  if (!kept && !encoded)
    window_keep_cuda(kv, RowFormat{static_cast<int>(Dh), static_cast<int>(R), compact_, false}, c_.sliding_window,
                     b.d_seqs, b.nseq, caches, stream_);

  // Grouped low-rank output: group g's heads through its rows of wo_a, then wo_b.
  mark("attn.out");
  // Decode: wo_a's launch also rounds its output to wo_b's FP8 input (no quantize launch between
  // the two products).
  const int64_t gin = H * Dh / G;
  float* og = scratch_->get<float>("attn.og", rows * G * O);
  Act oga = act("attn.og", og, rows, G * O);
  const bool og_fp8 = DSV4_OUT_FP8 && w.wo_b.kind == GemmKind::FP8Block;
  if (!gemv(w.wo_a, 0, G * O, oa, 0, og, G * O, 0.0f, O, gin, og_fp8 ? &oga : nullptr))  // one launch, all groups
    for (int64_t g = 0; g < G; ++g) gemm(w.wo_a, g * O, O, oa, g * gin, og + g * O, G * O);
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
  int32_t* experts = scratch_->get<int32_t>("moe.experts", rows * k);
  float* weights = scratch_->get<float>("moe.weights", rows * k);
  // Shared expert (weight 1) on every row; decode: all of it on the side stream, beside the gate,
  // the routing and the routed experts (joined before the combine).
  const bool side = side_enabled() && prequantized_ && w.sw2.kind == GemmKind::FP8Block && F % 128 == 0;
  float* sh = scratch_->get<float>("moe.sh", rows * F);
  float* ysh = scratch_->get<float>("moe.ysh", rows * D);
  Act sha = act("moe.sh", sh, rows, F);
  if (side) {
    adopt_quantized(sha);  // (allocates before the fork: the side stream never waits on a resize)
    fork_side(side_);
    gemv_many_on(a, {{&w.sw1, sg}, {&w.sw3, su}}, side_);
    linear_many(a, {{&w.gate, logits}});
    swiglu_quant_cuda(sg, su, rows, F, limit, sh, sha.q, sha.qs, side_);
    gemv_many_on(sha, {{&w.sw2, ysh}}, side_);
  } else {
    linear_many(a, {{&w.gate, logits}, {&w.sw1, sg}, {&w.sw3, su}});  // the gate and the shared expert's inputs
    if (gemv_enabled_ && w.sw2.kind == GemmKind::FP8Block && rows <= kGemvMaxRows && F % 128 == 0) {
      adopt_quantized(sha);  // decode: the SwiGLU also writes the down projection's FP8 input
      swiglu_quant_cuda(sg, su, rows, F, limit, sh, sha.q, sha.qs, stream_);
    } else {
      swiglu_cuda(sg, su, rows, F, limit, nullptr, nullptr, sh, stream_);
    }
    linear(w.sw2, sha, ysh);
  }

  // The routed experts' grouping: the T·k assignments sorted by expert (stable). Few rows: routing
  // and grouping in one launch, here; otherwise grouped after the shared expert.
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
  const float* bias = w.bias.empty() ? nullptr : w.bias.get();
  const int32_t* tid2eid = w.tid2eid.empty() ? nullptr : w.tid2eid.get();
  if (fast && few)
    moe_route_group_cuda(logits, rows, E, k, c_.scoring_func, bias, tid2eid, b.d_ids, c_.routed_scaling_factor,
                         experts, weights, counts, offsets, perm, inv, tile_rows, tiles, ntiles, stream_);
  else
    moe_route_cuda(logits, rows, E, k, c_.scoring_func, bias, tid2eid, b.d_ids, c_.routed_scaling_factor, experts,
                   weights, stream_);

  // Routed experts: each expert's rows as one product.
  mark("moe.group");
  if (!(fast && few)) moe_group_cuda(experts, rows, k, E, counts, offsets, perm, inv, tile_rows, tiles, ntiles, stream_);
  float* ys = scratch_->get<float>("moe.ys", n * D);
  const int32_t* ys_inv = inv;  // how the combine finds an assignment's row of ys
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
    bf16* h = scratch_->get<bf16>("moe.hb", n * F);
    if (rows <= kGemvMaxRows && moe_ab_) {  // the token rows in bf16 from the fused hc_pre, through perm
      moe_gemv_swiglu_tokens_cuda(moe_ab_, k, w.w1.view(), w.w3.view(), tiles, ntiles, max_tiles, offsets, limit,
                                  weights, perm, h, stream_);
    } else if (rows <= kGemvMaxRows) {  // the expert rows read from a_in through perm: no gather launch
      moe_gemv_swiglu_gather_cuda(a_in, k, w.w1.view(), w.w3.view(), tiles, ntiles, max_tiles, offsets, limit,
                                  weights, perm, h, stream_);
    } else {  // many rows per expert: gathered once in bf16 (the float32 rows read per block cost more)
      bf16* xs = scratch_->get<bf16>("moe.xb", n * D);
      moe_gather_cuda(a_in, D, perm, n, k, nullptr, xs, stream_);
      moe_gemv_swiglu_cuda(xs, w.w1.view(), w.w3.view(), tiles, ntiles, max_tiles, offsets, limit, weights, perm, h,
                           stream_);
    }
    // ys in assignment order (t·k + i): the combine then reads its rows without inv (a round trip less).
    moe_gemv_down_cuda(h, w.w2.view(), tiles, ntiles, max_tiles, offsets, ys, stream_, perm);
    ys_inv = nullptr;
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
  if (side) join_side(side_);
  if (moe_combine_to_) {  // decode: the next sub-layer's hc_pre_fused_cuda combines them (run_block)
    *moe_combine_to_ = {ys, ys_inv, ysh, k};
    return;
  }
  moe_combine_cuda(ys, ys_inv, ysh, rows, k, D, out, stream_);
}

}  // namespace dsv4::cuda
