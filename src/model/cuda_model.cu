// The CUDA model (cuda_model.h): the whole forward of model.md on the GPU, in the order of
// the CPU model (model.cpp, block.cpp); the attention and MoE sub-layers are in cuda_layers.cu.
#include <algorithm>
#include <cstdlib>
#include <cmath>
#include <set>

#include "cuda/launch.h"
#include "model/block.h"
#include "model/cuda_model.h"
#include "model/cuda_model_impl.cuh"

namespace dsv4 {

std::unique_ptr<Backend> make_cuda_backend(const Model& model, Precision precision, const std::string& checkpoint_dir) {
  std::unique_ptr<Checkpoint> ck;
  if (precision == Precision::Fast && !checkpoint_dir.empty()) ck = std::make_unique<Checkpoint>(checkpoint_dir);
  return std::make_unique<cuda::CudaModel>(model.config(), &model.params(), ck.get(), precision);
}

}  // namespace dsv4

namespace dsv4::cuda {

// ---- caches -----------------------------------------------------------------------------------

namespace {
constexpr int64_t kAlign = 256;
int64_t aligned(int64_t b) { return (b + kAlign - 1) / kAlign * kAlign; }

// Carves one block's caches from `base` (null: only counts), returning the bytes used.
int64_t carve(const ModelConfig& c, const CacheLayout& L, bool compact, uint8_t* base, LayerCache* out) {
  int64_t used = 0;
  auto take = [&](int64_t bytes) -> uint8_t* {
    uint8_t* p = base ? base + used : nullptr;
    used += aligned(bytes);
    return bytes ? p : nullptr;
  };
  const int64_t Dh = c.head_dim, R = c.qk_rope_head_dim, N = Dh - R, DI = c.index_head_dim;
  auto kv_rows = [&](int64_t rows, CacheRows& r) {
    if (rows == 0) return;
    if (!compact) r.f32 = reinterpret_cast<float*>(take(rows * Dh * 4));
    else {
      r.codes = take(rows * N);
      r.scales = take(rows * ((N + 63) / 64));
      r.rope = reinterpret_cast<bf16*>(take(rows * R * 2));
    }
  };
  auto idx_rows = [&](int64_t rows, CacheRows& r) {
    if (rows == 0) return;
    if (!compact) r.f32 = reinterpret_cast<float*>(take(rows * DI * 4));
    else {
      r.codes = take(rows * DI / 2);
      r.scales = take(rows * DI / 32);
    }
  };
  LayerCache lc;
  kv_rows(L.window_rows, lc.window);
  kv_rows(L.entry_rows, lc.entries);
  idx_rows(L.idx_rows, lc.idx_entries);
  lc.comp_u = reinterpret_cast<float*>(take(L.ring_rows * L.ring_width * 4));
  lc.comp_z = reinterpret_cast<float*>(take(L.ring_rows * L.ring_width * 4));
  lc.idx_u = reinterpret_cast<float*>(take(L.ring_rows * L.idx_ring_width * 4));
  lc.idx_z = reinterpret_cast<float*>(take(L.ring_rows * L.idx_ring_width * 4));
  if (out) *out = lc;
  return used;
}
}  // namespace

CacheLayout cache_layout(const ModelConfig& c, int m, int64_t cap, bool compact) {
  const int64_t Dh = c.head_dim, R = c.qk_rope_head_dim, N = Dh - R, DI = c.index_head_dim;
  CacheLayout L;
  L.kv_row = compact ? N + (N + 63) / 64 + 2 * R : 4 * Dh;
  L.idx_row = compact ? DI / 2 + DI / 32 : 4 * DI;
  L.window_rows = c.sliding_window;
  if (m > 0) {
    L.entry_rows = cap / m;
    L.ring_rows = m == 4 ? 2 * m : m;
    L.ring_width = (m == 4 ? 2 : 1) * Dh;
  }
  if (m == 4) {
    L.idx_rows = cap / 4;
    L.idx_ring_width = 2 * DI;
  }
  return L;
}

double CacheLayout::bytes_per_token(int m) const {
  if (m == 0) return 0.0;
  return static_cast<double>(kv_row) / m + (m == 4 ? static_cast<double>(idx_row) / 4 : 0.0);
}

char* Scratch::grow(const std::string& name, size_t bytes, bool zeroed) {
  DeviceArray<char>& b = bufs_[name];
  if (bytes > b.bytes()) {
    // An earlier launch, on any stream of the model, may still read the old buffer.
    DSV4_CUDA_CHECK(cudaDeviceSynchronize());
    b.resize(bytes);
    ++generation_;
    if (zeroed) DSV4_CUDA_CHECK(cudaMemset(b.get(), 0, b.bytes()));
  }
  return b.get();
}

size_t Scratch::bytes() const {
  size_t b = 0;
  for (const auto& [name, buf] : bufs_) b += buf.bytes();
  return b;
}

// ---- the backend --------------------------------------------------------------------------------

CudaModel::CudaModel(const ModelConfig& c, const Params* params, const Checkpoint* ck, Precision p, uint64_t seed)
    : c_(c), prec_(p), compact_(p == Precision::Fast) {
  require_device("; use --device cpu");
  DSV4_CHECK(params || p == Precision::Fast, "cuda", "a synthetic model has the fast precision only");
  DSV4_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  DSV4_CUDA_CHECK(cudaStreamCreateWithFlags(&side_, cudaStreamNonBlocking));
  if (const char* v = std::getenv("DSV4_SIDE"); v && std::string(v) == "0") side_streams_ = false;
  DSV4_CUDA_CHECK(cudaStreamCreateWithFlags(&side2_, cudaStreamNonBlocking));
  if (const char* v = std::getenv("DSV4_GRAPH"); v && std::string(v) == "0") graphs_ = false;
  int least = 0, greatest = 0;
  DSV4_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  // The small kernels beside the query's chain (the window key's norm; in graphs also the
  // compressor's steps) at the greatest priority: their blocks are placed ahead of the pending
  // blocks of wq_b, which otherwise holds every SM until its last blocks start. An HCA layer's
  // attention then starts ~1.2 µs earlier; B=1 1M 3.04-3.05 -> 2.99-3.00 ms, 4K 2.69-2.70 ->
  // 2.68-2.69 (20 layers, bench/results/2026-11-30-cuda-30.md, call 4). Eager steps keep the
  // compressor at the default priority: there it cost 0.05 ms.
  DSV4_CUDA_CHECK(cudaStreamCreateWithPriority(&side_kv_, cudaStreamNonBlocking, greatest));
  DSV4_CUDA_CHECK(cudaStreamCreateWithPriority(&side_comp_, cudaStreamNonBlocking, greatest));
  DSV4_CUDA_CHECK(cudaStreamCreateWithPriority(&side_idx_, cudaStreamNonBlocking, greatest));
  DSV4_CUDA_CHECK(cudaStreamCreateWithPriority(&side_idxq_, cudaStreamNonBlocking, greatest));
  DSV4_CUDA_CHECK(cudaEventCreateWithFlags(&fork_ev_, cudaEventDisableTiming));
  DSV4_CUDA_CHECK(cudaEventCreateWithFlags(&join_ev_, cudaEventDisableTiming));
  blas_ = std::make_unique<Blas>();
  const bool fp8_ok = p == Precision::Fast && blas_->fp8_block_supported();
  w_ = load_model(c_, params, ck, p, fp8_ok, seed, stream_);
  RopeTables rope = RopeTables::make(c_);
  w_.rope_window.assign(rope.window);
  w_.rope_compressed.assign(rope.compressed);
  scratch_ = std::make_unique<Scratch>();
  batch_ = std::make_unique<BatchDesc>();
}

CudaModel::~CudaModel() {
  if (graph_) cudaGraphExecDestroy(graph_);
  seqs_.clear();
  scratch_.reset();
  if (fork_ev_) cudaEventDestroy(fork_ev_);
  if (join_ev_) cudaEventDestroy(join_ev_);
  if (side_) cudaStreamDestroy(side_);
  if (side2_) cudaStreamDestroy(side2_);
  if (side_kv_) cudaStreamDestroy(side_kv_);
  if (side_comp_) cudaStreamDestroy(side_comp_);
  if (side_idx_) cudaStreamDestroy(side_idx_);
  if (side_idxq_) cudaStreamDestroy(side_idxq_);
  if (stream_) cudaStreamDestroy(stream_);
}

void CudaModel::fork_side(cudaStream_t side) {
  DSV4_CUDA_CHECK(cudaEventRecord(fork_ev_, stream_));
  DSV4_CUDA_CHECK(cudaStreamWaitEvent(side, fork_ev_, 0));
}
void CudaModel::join_side(cudaStream_t side) { join_streams(side, stream_); }
void CudaModel::join_streams(cudaStream_t from, cudaStream_t to) {
  DSV4_CUDA_CHECK(cudaEventRecord(join_ev_, from));
  DSV4_CUDA_CHECK(cudaStreamWaitEvent(to, join_ev_, 0));
}
bool CudaModel::side_enabled() const { return side_streams_ && gemv_enabled_ && batch_->rows <= kGemvMaxRows; }

std::string CudaModel::describe() const {
  return str("cuda ", precision_name(prec_), " (", w_.formats, "; caches ", compact_ ? "compact" : "float32", "; ",
             w_.bytes() >> 20, " MiB of weights)");
}

Sequence& CudaModel::seq(int id) const {
  auto it = seqs_.find(id);
  DSV4_CHECK(it != seqs_.end(), "cuda", "no sequence ", id);
  return *it->second;
}

int CudaModel::new_sequence(int64_t max_tokens) {
  DSV4_CHECK(max_tokens > 0, "cuda", "a sequence needs room for at least one token");
  auto s = std::make_unique<Sequence>();
  s->cap = max_tokens;
  const int L = c_.num_hidden_layers, M = c_.num_nextn_predict_layers;
  int64_t total = 0;
  for (int l = 0; l < L + M; ++l) total += carve(c_, cache_layout(c_, c_.ratio(l), max_tokens, compact_), compact_, nullptr, nullptr);
  s->mem.resize(total);
  DSV4_CUDA_CHECK(cudaMemsetAsync(s->mem.get(), 0, total, stream_));
  int64_t off = 0;
  for (int l = 0; l < L + M; ++l) {
    LayerCache lc;
    off += carve(c_, cache_layout(c_, c_.ratio(l), max_tokens, compact_), compact_, s->mem.get() + off, &lc);
    (l < L ? s->layers : s->mtp).push_back(lc);
  }
  seqs_.emplace(next_seq_, std::move(s));
  return next_seq_++;
}

void CudaModel::free_sequence(int id) {
  DSV4_CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (graph_ && std::find(graph_seqs_.begin(), graph_seqs_.end(), id) != graph_seqs_.end()) {
    cudaGraphExecDestroy(graph_);  // it writes this sequence's caches
    graph_ = nullptr;
    graph_seqs_.clear();
  }
  seqs_.erase(id);
}

size_t CudaModel::sequence_bytes(int id) const {
  const Sequence& s = seq(id);
  size_t b = 0;
  for (int l = 0; l < c_.num_hidden_layers + c_.num_nextn_predict_layers; ++l) {
    const int m = c_.ratio(l);
    const int64_t pos = l < c_.num_hidden_layers ? s.pos : s.mtp_pos;
    const CacheLayout L = cache_layout(c_, m, s.cap, compact_);
    b += L.window_rows * L.kv_row + 2 * 4 * L.ring_rows * (L.ring_width + L.idx_ring_width);
    if (m > 0) b += (pos / m) * L.kv_row;
    if (m == 4) b += (pos / 4) * L.idx_row;
  }
  return b;
}

void CudaModel::fake_context(int id, int64_t tokens, uint64_t seed) {
  Sequence& s = seq(id);
  DSV4_CHECK(tokens <= s.cap, "cuda", "sequence ", id, " holds ", s.cap, " tokens, not ", tokens);
  fill_cache_bytes_cuda(s.mem.get(), s.mem.size(), seed, stream_);
  s.pos = s.mtp_pos = tokens;
}

double CudaModel::cache_bytes_per_token() const {
  double b = 0;
  for (int l = 0; l < c_.num_hidden_layers; ++l) b += cache_layout(c_, c_.ratio(l), 0, compact_).bytes_per_token(c_.ratio(l));
  return b;
}

size_t CudaModel::cache_fixed_bytes() const {
  size_t b = 0;
  for (int l = 0; l < c_.num_hidden_layers; ++l) {
    const CacheLayout L = cache_layout(c_, c_.ratio(l), 0, compact_);
    b += L.window_rows * L.kv_row + 2 * 4 * L.ring_rows * (L.ring_width + L.idx_ring_width);
  }
  return b;
}

// Per-forward descriptors: rows (ids, slots, positions), sequences, the cache table of every
// block, and per ratio the compressed entries this step completes.
void CudaModel::prepare(const std::vector<SeqChunk>& batch, bool mtp, bool for_graph) {
  BatchDesc& b = *batch_;
  b = BatchDesc{};
  pending_post_ = {}, moe_combine_to_ = nullptr;  // (left by a forward that threw)
  std::map<int, std::vector<CompressJob>> jobs;
  std::map<int, int> capacity;
  int64_t max_end = 0, max_cap = 0;
  const int nblocks = mtp ? c_.num_nextn_predict_layers : c_.num_hidden_layers;
  std::set<int> ratios;
  for (int l = 0; l < nblocks; ++l)
    if (int m = c_.ratio(mtp ? c_.num_hidden_layers + l : l); m > 0) ratios.insert(m);
  for (const SeqChunk& ch : batch) {
    Sequence& s = seq(ch.seq);
    const int64_t p0 = mtp ? s.mtp_pos : s.pos, T = static_cast<int64_t>(ch.ids.size());
    DSV4_CHECK(T > 0, "cuda", "sequence ", ch.seq, ": an empty chunk");
    DSV4_CHECK(p0 + T <= s.cap, "cuda", "sequence ", ch.seq, " was created for ", s.cap, " tokens; this chunk ends at ",
               p0 + T, " (ask new_sequence for more)");
    const int slot = b.nseq++;
    b.handles.push_back(ch.seq);
    b.seqs.push_back({static_cast<int32_t>(b.rows), static_cast<int32_t>(T), static_cast<int32_t>(p0)});
    for (int64_t t = 0; t < T; ++t) {
      DSV4_CHECK(ch.ids[t] >= 0 && ch.ids[t] < c_.vocab_size, "cuda", "token id ", ch.ids[t],
                 " outside the vocabulary [0, ", c_.vocab_size, ")");
      b.ids.push_back(static_cast<int32_t>(ch.ids[t]));
      b.slot.push_back(slot);
      b.pos.push_back(static_cast<int32_t>(p0 + t));
    }
    b.rows += T;
    max_end = std::max(max_end, p0 + T);
    max_cap = std::max(max_cap, s.cap);
    for (int m : ratios) {
      capacity[m] += static_cast<int>(T / m + 1);
      for (int64_t i = p0 / m; i < (p0 + T) / m; ++i) jobs[m].push_back({slot, static_cast<int32_t>(i)});
    }
  }
  std::vector<LayerCache> table;
  for (int l = 0; l < nblocks; ++l)
    for (int h : b.handles) table.push_back(mtp ? seq(h).mtp[l] : seq(h).layers[l]);
  b.d_ids = scratch_->get<int32_t>("batch.ids", b.rows);
  b.d_slot = scratch_->get<int32_t>("batch.slot", b.rows);
  b.d_pos = scratch_->get<int32_t>("batch.pos", b.rows);
  b.d_seqs = scratch_->get<SeqRows>("batch.seqs", b.nseq);
  b.d_caches = scratch_->get<LayerCache>("batch.caches", table.size());
  upload(b.d_ids, b.ids.data(), b.rows, stream_);
  upload(b.d_slot, b.slot.data(), b.rows, stream_);
  upload(b.d_pos, b.pos.data(), b.rows, stream_);
  upload(b.d_seqs, b.seqs.data(), b.nseq, stream_);
  upload(b.d_caches, table.data(), table.size(), stream_);
  // Fixed capacities (not this step's counts) keep the buffers and grids of a captured graph valid.
  b.idx_max_count = std::max<int64_t>(1, (for_graph ? max_cap : max_end) / 4);
  std::vector<int32_t> counts;
  for (int m : ratios) counts.push_back(static_cast<int32_t>(jobs[m].size()));
  int32_t* d_counts = scratch_->get<int32_t>("batch.njobs", std::max<size_t>(1, counts.size()));
  upload(d_counts, counts.data(), counts.size(), stream_);
  int i = 0;
  for (int m : ratios) {
    const std::vector<CompressJob>& list = jobs[m];
    CompressJob* d = scratch_->get<CompressJob>("batch.jobs." + std::to_string(m), capacity[m]);
    upload(d, list.data(), list.size(), stream_);
    b.jobs[m] = {d, d_counts + i++, capacity[m]};
  }
}

// The few-row kernel's arguments for W rows [w_row0, w_row0 + nrows) and x from column x_col0
// (quantizing x on first use); false when the shapes do not fit it.
bool CudaModel::gemv_args(const DTensor& W, int64_t w_row0, int64_t nrows, Act& x, int64_t x_col0, float* y,
                          int64_t ldy, float beta, int64_t group_rows, int64_t group_stride, GemvArgs& g) {
  const GemvWeights kind = W.kind == GemmKind::FP8Block ? GemvWeights::FP8Block
                           : W.kind == GemmKind::BF16   ? GemvWeights::BF16
                                                        : GemvWeights::F32;
  if (!gemv_enabled_ || !gemv_fits(kind, x.M, W.cols) || x.K % 16 != 0 || x_col0 % 16 != 0 || group_stride % 16 != 0)
    return false;
  if (kind == GemvWeights::FP8Block &&
      (x_col0 % 128 != 0 || group_stride % 128 != 0 || w_row0 % 128 != 0 || group_rows % 16 != 0))
    return false;
  g = GemvArgs{};
  g.weights = kind;
  g.M = x.M, g.N = nrows, g.K = W.cols, g.ldw = W.cols;
  g.group_rows = group_rows, g.group_stride = group_stride;
  g.y = y, g.ldy = ldy, g.beta = beta;
  switch (kind) {
    case GemvWeights::FP8Block:
      if (!x.q) {  // unpadded: the few-row kernel reads M rows
        fp8_buffers(x, x.M);
        quantize_fp8_1x128_cuda(x.f32, x.M, x.K, x.q, x.qs, x.Mp, stream_);
      }
      g.w_fp8 = W.fp8.get() + w_row0 * W.cols;
      g.w_scale = W.scale.get() + (w_row0 / 128) * ((W.cols + 127) / 128);
      g.ldw_scale = (W.cols + 127) / 128;
      g.xq = x.q + x_col0, g.ldxq = x.K;
      g.xs = x.qs + (x_col0 / 128) * x.Mp, g.ldxs = x.Mp;
      break;
    case GemvWeights::BF16:
      g.w_bf16 = W.bf.get() + w_row0 * W.cols;
      g.x = x.f32 + x_col0, g.ldx = x.K;
      break;
    case GemvWeights::F32:
      g.w_f32 = W.f32.get() + w_row0 * W.cols;
      g.x = x.f32 + x_col0, g.ldx = x.K;
      break;
  }
  return true;
}

// The few-row kernel (decode) when it fits: weights read once at the memory rate.
bool CudaModel::gemv(const DTensor& W, int64_t w_row0, int64_t nrows, Act& x, int64_t x_col0, float* y, int64_t ldy,
                     float beta, int64_t group_rows, int64_t group_stride, Act* y_fp8) {
  GemvArgs g;
  if (!gemv_args(W, w_row0, nrows, x, x_col0, y, ldy, beta, group_rows, group_stride, g)) return false;
  if (y_fp8 && g.weights == GemvWeights::FP8Block && nrows % 128 == 0 && beta == 0.0f && y_fp8->f32 == y &&
      y_fp8->K == nrows && ldy == nrows && y_fp8->M == x.M) {  // y's FP8 form from the same launch
    adopt_quantized(*y_fp8);
    g.yq = y_fp8->q, g.ldyq = y_fp8->K;
    g.ys = y_fp8->qs, g.ldys = y_fp8->Mp;
    g.done = scratch_->counters<uint32_t>(y_fp8->name + "/done", nrows / 128);
  }
  cudaEvent_t t = tic(false, 2.0 * x.M * nrows * W.cols);
  gemv_cuda(g, stream_);
  toc(t);
  return true;
}

// Several projections of the same activations: one few-row launch for all of them (any weight
// forms) when they fit it (decode), otherwise one GEMM each.
void CudaModel::linear_many(Act& x, const std::vector<std::pair<const DTensor*, float*>>& list) {
  std::vector<GemvArgs> batch;
  double flop = 0;
  auto flush = [&] {
    if (batch.empty()) return;
    cudaEvent_t t = tic(false, flop);
    gemv_many_cuda(batch.data(), static_cast<int>(batch.size()), stream_);
    toc(t);
    batch.clear();
    flop = 0;
  };
  for (const auto& [W, y] : list) {
    GemvArgs g;
    if (gemv_args(*W, 0, W->rows, x, 0, y, W->rows, 0.0f, 0, 0, g)) {
      if (static_cast<int>(batch.size()) == kGemvMaxMats) flush();  // full: launch what is there
      batch.push_back(g);
      flop += 2.0 * x.M * W->rows * W->cols;
    } else {
      linear(*W, x, y);
    }
  }
  flush();
}

void CudaModel::gemv_many_on(Act& x, const std::vector<std::pair<const DTensor*, float*>>& list, cudaStream_t s) {
  DSV4_CHECK(static_cast<int>(list.size()) <= kGemvMaxMats, "cuda", list.size(), " products in one launch");
  std::vector<GemvArgs> batch;
  for (const auto& [W, y] : list) {
    GemvArgs g;
    DSV4_CHECK(x.q || W->kind != GemmKind::FP8Block, "cuda", "a side-stream product needs its FP8 input made first");
    DSV4_CHECK(gemv_args(*W, 0, W->rows, x, 0, y, W->rows, 0.0f, 0, 0, g), "cuda", "a ", W->rows, "×", W->cols,
               " product does not fit the few-row kernel");
    batch.push_back(g);
  }
  if (!batch.empty()) gemv_many_cuda(batch.data(), static_cast<int>(batch.size()), s);
}

void CudaModel::gemm(const DTensor& W, int64_t w_row0, int64_t nrows, Act& x, int64_t x_col0, float* y, int64_t ldy,
                     float beta) {
  if (gemv(W, w_row0, nrows, x, x_col0, y, ldy, beta, 0, 0)) return;
  GemmArgs g;
  g.kind = W.kind;
  g.M = x.M;
  g.N = nrows;
  g.K = W.cols;
  g.ldx = x.K;
  g.ldw = W.cols;
  g.y = y;
  g.ldy = ldy;
  g.beta = beta;
  switch (W.kind) {
    case GemmKind::F32:
      g.x = x.f32 + x_col0;
      g.w = W.f32.get() + w_row0 * W.cols;
      break;
    case GemmKind::BF16: {
      // The activations as two bf16 halves (hi rows, then lo rows) in one GEMM of 2M rows: 16
      // significant bits of the input for one read of the weights.
      if (!x.b) {
        x.b = scratch_->get<bf16>(x.name + "/bf16", 2 * x.M * x.K);
        split_bf16_cuda(x.f32, x.M * x.K, x.b, x.b + x.M * x.K, stream_);
      }
      DSV4_CHECK(beta == 0.0f, "cuda", "a split-input bf16 GEMM cannot accumulate");
      g.M = 2 * x.M;
      g.x = x.b + x_col0;
      g.w = W.bf.get() + w_row0 * W.cols;
      g.y = scratch_->get<float>("gemm.halves", 2 * x.M * nrows);
      g.ldy = nrows;
      cudaEvent_t t = tic(false, 2.0 * x.M * g.N * g.K);
      blas_->gemm(g, stream_);
      toc(t);
      add_halves_cuda(g.y, x.M, nrows, y, ldy, stream_);
      return;
    }
    case GemmKind::FP8Block: {
      const int64_t align = blas_->fp8_row_align();
      if (!x.q || x.Mp % align != 0) {  // none yet, or the few-row kernel's unpadded form
        fp8_buffers(x, (x.M + align - 1) / align * align);
        if (x.Mp > x.M) {  // padding rows: zero codes, zero scales
          DSV4_CUDA_CHECK(cudaMemsetAsync(x.q + x.M * x.K, 0, (x.Mp - x.M) * x.K, stream_));
          DSV4_CUDA_CHECK(cudaMemsetAsync(x.qs, 0, x.Mp * (x.K / 128) * sizeof(float), stream_));
        }
        quantize_fp8_1x128_cuda(x.f32, x.M, x.K, x.q, x.qs, x.Mp, stream_);
      }
      g.M = x.Mp;
      g.x = x.q + x_col0;
      g.x_scale = x.qs + (x_col0 / 128) * x.Mp;
      g.w = W.fp8.get() + w_row0 * W.cols;
      g.w_scale = W.scale.get() + (w_row0 / 128) * ((W.cols + 127) / 128);
      if (x.Mp > x.M) {  // the padded rows land in a scratch matrix; the real ones are copied out
        DSV4_CHECK(beta == 0.0f, "cuda", "a padded FP8 GEMM cannot accumulate");
        g.y = scratch_->get<float>("gemm.padded", x.Mp * nrows);
        g.ldy = nrows;
        cudaEvent_t t = tic(false, 2.0 * x.M * g.N * g.K);
        blas_->gemm(g, stream_);
        toc(t);
        DSV4_CUDA_CHECK(cudaMemcpy2DAsync(y, ldy * sizeof(float), g.y, nrows * sizeof(float), nrows * sizeof(float),
                                          x.M, cudaMemcpyDeviceToDevice, stream_));
        return;
      }
      break;
    }
  }
  cudaEvent_t t = tic(false, 2.0 * g.M * g.N * g.K);
  blas_->gemm(g, stream_);
  toc(t);
}

cudaEvent_t CudaModel::tic(bool expert, double flop) {
  if (!profiling_) return nullptr;
  Timed t{nullptr, nullptr, flop, expert};
  DSV4_CUDA_CHECK(cudaEventCreate(&t.start));
  DSV4_CUDA_CHECK(cudaEventCreate(&t.stop));
  DSV4_CUDA_CHECK(cudaEventRecord(t.start, stream_));
  timed_.push_back(t);
  return t.start;
}
void CudaModel::toc(cudaEvent_t start) {
  if (!start) return;
  DSV4_CUDA_CHECK(cudaEventRecord(timed_.back().stop, stream_));
}

void CudaModel::mark(const char* section) {
  if (!profiling_) return;
  cudaEvent_t e;
  DSV4_CUDA_CHECK(cudaEventCreate(&e));
  DSV4_CUDA_CHECK(cudaEventRecord(e, stream_));
  marks_.push_back({section, e});
}

CudaModel::Profile CudaModel::take_profile() {
  mark("end");
  DSV4_CUDA_CHECK(cudaStreamSynchronize(stream_));
  Profile p;
  for (size_t i = 0; i + 1 < marks_.size(); ++i) {
    float ms = 0;
    DSV4_CUDA_CHECK(cudaEventElapsedTime(&ms, marks_[i].second, marks_[i + 1].second));
    p.section_ms[marks_[i].first] += ms;
  }
  for (auto& m : marks_) cudaEventDestroy(m.second);
  marks_.clear();
  for (Timed& t : timed_) {
    float ms = 0;
    DSV4_CUDA_CHECK(cudaEventElapsedTime(&ms, t.start, t.stop));
    (t.expert ? p.expert_ms : p.gemm_ms) += ms;
    (t.expert ? p.expert_flop : p.gemm_flop) += t.flop;
    cudaEventDestroy(t.start);
    cudaEventDestroy(t.stop);
  }
  timed_.clear();
  return p;
}

void CudaModel::linear_f32(const float* x, int64_t M, int64_t K, const float* W, int64_t N, float* y, int64_t ldy) {
  GemmArgs g;
  g.kind = GemmKind::F32;
  g.M = M, g.N = N, g.K = K, g.x = x, g.ldx = K, g.w = W, g.ldw = K, g.y = y, g.ldy = ldy;
  blas_->gemm(g, stream_);
}

// x's FP8 form lives in the scratch buffers x.name + "/fp8" (codes [Mp, K]) and "/fp8s"
// (scales [K/128][Mp]); Mp = M for the few-row kernel, M padded for cuBLASLt.
void CudaModel::fp8_buffers(Act& x, int64_t Mp) {
  x.Mp = Mp;
  x.q = scratch_->get<uint8_t>(x.name + "/fp8", Mp * x.K);
  x.qs = scratch_->get<float>(x.name + "/fp8s", Mp * (x.K / 128));
}

// mix = fn · vec(X[t]) into scratch `name`: column-slice partials for few tokens (decode; no
// GEMM launch for a 24-row product), one float32 GEMM otherwise. Returns hc_pre_cuda's mix_parts.
int CudaModel::mix_product(const float* X, const DHc& hc, const char* name, int64_t rows) {
  if (rows < 0) rows = batch_->rows;
  const int64_t K = static_cast<int64_t>(c_.hc_mult) * c_.hidden_size;
  if (gemv_enabled_ && hc_mix_fits(rows, hc.rows)) {
    constexpr int64_t kSliceCols = 256;  // columns per block: 64 blocks per token for Flash (n·D = 16384)
    const int parts = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(256, K / kSliceCols)));
    float* mix = scratch_->get<float>(name, parts * rows * (hc.rows + 1));
    hc_mix_cuda(X, hc.fn.get(), rows, K, hc.rows, mix, parts, stream_);
    return parts;
  }
  float* mix = scratch_->get<float>(name, rows * hc.rows);
  linear_f32(X, rows, K, hc.fn.get(), hc.rows, mix, hc.rows);
  return 0;
}

HcPostArgs CudaModel::take_post() {
  const HcPostArgs p = pending_post_;
  if (p.Xout && pending_post_side_) join_side(side_);
  pending_post_ = {};
  return p;
}

// The pending hc_post as its own launches: the MoE combine into the sub-layer's o, then hc_post.
void CudaModel::settle_post() {
  const HcPostArgs p = take_post();
  if (!p.Xout) return;
  const int64_t rows = batch_->rows, n = c_.hc_mult, D = c_.hidden_size;
  float* o = scratch_->get<float>("hc.o", rows * D);  // p.o
  if (p.moe.ys) moe_combine_cuda(p.moe.ys, p.moe.inv, p.moe.shared, rows, p.moe.k, D, o, stream_);
  hc_post_cuda(p.X, o, p.post, p.comb, rows, static_cast<int>(n), D, p.Xout, stream_);
}

// One block (block.cpp): two mHC-wrapped sub-layers. X [rows, n, D] moves between two buffers.
void CudaModel::run_block(const DBlock& blk, int table_row, float*& X, std::vector<int32_t>* topk_rows) {
  const int64_t rows = batch_->rows, n = c_.hc_mult, D = c_.hidden_size;
  float* x0 = scratch_->get<float>("X0", rows * n * D);
  float* x1 = scratch_->get<float>("X1", rows * n * D);
  auto sublayer = [&](const DHc& hc, const DeviceArray<float>& norm, const std::string& act_name, auto&& body) {
    mark("mhc");
    // Decode: the mix product and hc_pre in one launch (hc_pre_fused_cuda), else mix, then hc_pre.
    const bool fused = gemv_enabled_ && hc_pre_fused_fits(rows, static_cast<int>(n), D);
    if (!fused) settle_post();
    // Decode: the previous sub-layer's hc_post (pending_post_, writing X) is done first by this hc_pre.
    const HcPostArgs first = take_post();
    const HcPostArgs* post_first = first.Xout ? &first : nullptr;
    const int parts = fused ? 0 : mix_product(X, hc, "hc.mix");
    float* mix = fused ? nullptr : scratch_->get<float>("hc.mix", std::max(parts, 1) * rows * (hc.rows + 1));
    float* a = scratch_->get<float>("hc.a", rows * D);
    // Two post/comb buffers, by X's: the fused hc_pre writes this sub-layer's while it reads the previous one's.
    float* post = scratch_->get<float>(X == x0 ? "hc.post" : "hc.post1", rows * n);
    float* comb = scratch_->get<float>(X == x0 ? "hc.comb" : "hc.comb1", rows * n * n);
    // Decode: hc_pre also rounds a for the sub-layer's FP8 projections (no separate quantize launch).
    // The sub-layer's Act of the same name adopts these buffers (adopt_quantized).
    Act aa = act(act_name, a, rows, D);
    prequantized_ = prec_ == Precision::Fast && gemv_enabled_ && rows <= kGemvMaxRows && D % 128 == 0;
    if (prequantized_) adopt_quantized(aa);
    // Decode: comb's Sinkhorn (a chain of 2·iters dependent steps) beside the sub-layer, which
    // does not need it; hc_post waits for it.
    const bool side = fused && side_enabled();
    // Decode: the fused hc_pre also writes the MoE's input in bf16, the routed experts' form.
    bf16* ab = fused && prequantized_ && act_name == "moe.a" ? scratch_->get<bf16>("moe.ab", rows * D) : nullptr;
    if (side) {
      float* mix_row = scratch_->get<float>("hc.mix_row", rows * kHcMixRow);
      hc_pre_fused_cuda(X, hc.fn.get(), rows, static_cast<int>(n), D, hc.base.get(), hc.scale.get(), c_.rms_norm_eps,
                        c_.hc_eps, c_.hc_sinkhorn_iters, false, norm.get(), a, nullptr, nullptr, stream_, aa.q, aa.qs,
                        mix_row, post_first, ab);
      fork_side(side_);
      hc_comb_cuda(mix_row, rows, static_cast<int>(n), D, hc.base.get(), hc.scale.get(), c_.rms_norm_eps, c_.hc_eps,
                   c_.hc_sinkhorn_iters, post, comb, side_);
    } else if (fused)
      hc_pre_fused_cuda(X, hc.fn.get(), rows, static_cast<int>(n), D, hc.base.get(), hc.scale.get(), c_.rms_norm_eps,
                        c_.hc_eps, c_.hc_sinkhorn_iters, false, norm.get(), a, post, comb, stream_, aa.q, aa.qs,
                        nullptr, post_first, ab);
    else
      hc_pre_cuda(X, mix, rows, static_cast<int>(n), D, hc.base.get(), hc.scale.get(), c_.rms_norm_eps, c_.hc_eps,
                  c_.hc_sinkhorn_iters, false, norm.get(), a, post, comb, stream_, parts, aa.q, aa.qs);
    float* o = scratch_->get<float>("hc.o", rows * D);
    float* Xn = X == x0 ? x1 : x0;
    if (fused) {  // decode: this hc_post (and a MoE body's combine) is left to the next fused hc_pre
      pending_post_ = {X, o, {}, post, comb, Xn};
      pending_post_side_ = side;
      moe_combine_to_ = &pending_post_.moe;
    }
    moe_ab_ = ab;
    body(a, o);
    moe_ab_ = nullptr;
    moe_combine_to_ = nullptr;
    prequantized_ = false;
    mark("mhc");
    if (!fused) hc_post_cuda(X, o, post, comb, rows, static_cast<int>(n), D, Xn, stream_);
    X = Xn;
  };
  sublayer(blk.hc_attn, blk.attn_norm, "attn.a",
           [&](const float* a, float* o) { attention(blk, table_row, a, o, topk_rows); });
  sublayer(blk.hc_ffn, blk.ffn_norm, "moe.a", [&](const float* a, float* o) { moe(blk.moe, a, o); });
}

// logits [rows, V] = Head · RMSNorm_norm(HcHead(X)) into logits_.
void CudaModel::head(const float* X, const DHc& hc, const DeviceArray<float>& norm, int64_t rows) {
  if (rows < 0) rows = batch_->rows;
  const int64_t n = c_.hc_mult, D = c_.hidden_size, V = c_.vocab_size;
  mark("head");
  float* y = scratch_->get<float>("head.y", rows * D);
  if (gemv_enabled_ && hc_pre_fused_fits(rows, static_cast<int>(n), D)) {  // decode: one launch
    const HcPostArgs first = take_post();  // the last sub-layer's hc_post first
    hc_pre_fused_cuda(X, hc.fn.get(), rows, static_cast<int>(n), D, hc.base.get(), hc.scale.get(), c_.rms_norm_eps,
                      c_.hc_eps, c_.hc_sinkhorn_iters, true, norm.get(), y, nullptr, nullptr, stream_, nullptr, nullptr,
                      nullptr, first.Xout ? &first : nullptr);
  } else {
    settle_post();
    const int parts = mix_product(X, hc, "head.mix", rows);
    float* mix = scratch_->get<float>("head.mix", std::max<int64_t>(parts, 1) * rows * (n + 1));
    hc_pre_cuda(X, mix, rows, static_cast<int>(n), D, hc.base.get(), hc.scale.get(), c_.rms_norm_eps, c_.hc_eps,
                c_.hc_sinkhorn_iters, true, norm.get(), y, nullptr, nullptr, stream_, parts);
  }
  logits_ = scratch_->get<float>("logits", rows * V);
  Act ya = act("head.y", y, rows, D);
  linear(w_.head, ya, logits_);
}

float* CudaModel::run_main(ForwardTrace* trace) {
  const int64_t rows = batch_->rows, n = c_.hc_mult, D = c_.hidden_size;
  float* X = scratch_->get<float>("X0", rows * n * D);
  mark("embed");
  embed_rows_cuda(w_.embed, batch_->d_ids, rows, static_cast<int>(n), X, stream_);
  if (trace) {
    trace->hidden.clear();
    trace->topk.assign(c_.num_hidden_layers, {});
  }
  for (int l = 0; l < c_.num_hidden_layers; ++l) {
    std::vector<int32_t> sel;
    run_block(w_.layers[l], l, X, trace ? &sel : nullptr);
    if (!trace) continue;
    settle_post();  // the block's output, whole
    Tensor h({rows, n, D});
    download(h.ptr(), X, h.data.size(), stream_);
    DSV4_CUDA_CHECK(cudaStreamSynchronize(stream_));
    trace->hidden.push_back(std::move(h));
    if (!sel.empty()) {
      const int64_t K = c_.index_topk;
      TopkTrace& tk = trace->topk[l];
      tk.assign(rows, {});
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t k = 0; k < K; ++k)
          if (sel[r * K + k] >= 0) tk[r].push_back(sel[r * K + k]);
    }
  }
  return X;
}

ForwardOut CudaModel::finish(int64_t rows, bool want_streams, const float* X) {
  ForwardOut out;
  out.logits = Tensor({rows, static_cast<int64_t>(c_.vocab_size)});
  download(out.logits.ptr(), logits_, out.logits.data.size(), stream_);
  if (want_streams) {
    out.streams = Tensor({rows, static_cast<int64_t>(c_.hc_mult), static_cast<int64_t>(c_.hidden_size)});
    download(out.streams.ptr(), X, out.streams.data.size(), stream_);
  }
  DSV4_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return out;
}

namespace {
bool one_token_each(const std::vector<SeqChunk>& batch) {
  return std::all_of(batch.begin(), batch.end(), [](const SeqChunk& ch) { return ch.ids.size() == 1; });
}
}  // namespace

ForwardOut CudaModel::forward(const std::vector<SeqChunk>& batch, bool want_streams, ForwardTrace* trace) {
  // Decode steps (one token per sequence, the fast precision) run from a captured graph once the
  // same sequences have decoded twice in a row: the first step runs eagerly, the second also
  // captures, the rest replay. A batch that changes at every step (continuous batching) stays
  // eager rather than capturing at every step.
  const bool decode = one_token_each(batch);
  if (graphs_ && decode && !trace && prec_ == Precision::Fast && !batch.empty()) {
    std::vector<int> handles;
    for (const SeqChunk& ch : batch) handles.push_back(ch.seq);
    if ((graph_ && handles == graph_seqs_) || handles == eager_decode_seqs_) {
      decode_step_graph(batch);
      return finish(batch_->rows, want_streams, graph_x_);
    }
    eager_decode_seqs_ = handles;
  } else if (!decode) {
    eager_decode_seqs_.clear();
  }
  prepare(batch, false);
  float* X = run_main(trace);
  head(X, w_.hc_head, w_.norm);
  ForwardOut out = finish(batch_->rows, want_streams, X);
  for (const SeqChunk& ch : batch) seq(ch.seq).pos += static_cast<int64_t>(ch.ids.size());
  return out;
}

ForwardOut CudaModel::forward_last(const std::vector<SeqChunk>& batch) {
  if (one_token_each(batch)) return forward(batch, false, nullptr);  // every row is a last row (and graphs apply)
  prepare(batch, false);
  float* X = run_main(nullptr);
  settle_post();  // X whole
  // The last row of each chunk, [chunks, n, D], then the head on those rows alone: a prompt chunk of
  // T tokens would otherwise make T rows of logits (V floats each) and copy them all to the host.
  const int64_t nseq = static_cast<int64_t>(batch.size()), nD = static_cast<int64_t>(c_.hc_mult) * c_.hidden_size;
  float* last = scratch_->get<float>("head.last", nseq * nD);
  for (int64_t i = 0; i < nseq; ++i) {
    const SeqRows& r = batch_->seqs[i];
    DSV4_CUDA_CHECK(cudaMemcpyAsync(last + i * nD, X + (static_cast<int64_t>(r.row0) + r.T - 1) * nD,
                                    nD * sizeof(float), cudaMemcpyDeviceToDevice, stream_));
  }
  head(last, w_.hc_head, w_.norm, nseq);
  ForwardOut out = finish(nseq, false, last);
  for (const SeqChunk& ch : batch) seq(ch.seq).pos += static_cast<int64_t>(ch.ids.size());
  return out;
}

void CudaModel::forward_on_device(const std::vector<SeqChunk>& batch) {
  prepare(batch, false);
  float* X = run_main(nullptr);
  head(X, w_.hc_head, w_.norm);
  for (const SeqChunk& ch : batch) seq(ch.seq).pos += static_cast<int64_t>(ch.ids.size());
}

ForwardOut CudaModel::mtp_forward(const std::vector<SeqChunk>& batch, const Tensor& streams) {
  DSV4_CHECK(!w_.mtp.empty(), "cuda", "this model has no MTP block");
  prepare(batch, true);
  const DMtp& m = w_.mtp[0];
  const int64_t rows = batch_->rows, n = c_.hc_mult, D = c_.hidden_size;
  DSV4_CHECK(streams.numel() == rows * n * D, "cuda", "MTP streams hold ", streams.numel(), " values, expected ",
             rows * n * D);
  // e = RMSNorm_enorm(Embed[id]); X[j] = W_e e + W_h RMSNorm_hnorm(X[j])   (model.md §10)
  float* e = scratch_->get<float>("mtp.e", rows * D);
  embed_rows_cuda(w_.embed, batch_->d_ids, rows, 1, e, stream_);
  rmsnorm_cuda(e, rows, D, m.enorm.get(), c_.rms_norm_eps, e, stream_);
  float* ep = scratch_->get<float>("mtp.ep", rows * D);
  Act ea = act("mtp.e", e, rows, D);
  linear(m.e_proj, ea, ep);
  float* hn = scratch_->get<float>("mtp.hn", rows * n * D);
  upload(hn, streams.ptr(), rows * n * D, stream_);
  rmsnorm_cuda(hn, rows * n, D, m.hnorm.get(), c_.rms_norm_eps, hn, stream_);
  float* X = scratch_->get<float>("X0", rows * n * D);
  Act ha = act("mtp.hn", hn, rows * n, D);
  linear(m.h_proj, ha, X);
  add_to_streams_cuda(X, ep, rows, static_cast<int>(n), D, stream_);
  run_block(m.block, 0, X, nullptr);
  head(X, m.hc_head, m.norm);
  ForwardOut out = finish(rows, false, X);
  for (const SeqChunk& ch : batch) seq(ch.seq).mtp_pos += static_cast<int64_t>(ch.ids.size());
  return out;
}

}  // namespace dsv4::cuda
