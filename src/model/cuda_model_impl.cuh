// The CUDA model's internals (not a public header): weights on the GPU, per-sequence caches,
// per-forward batch descriptors, and the CudaModel backend whose forward reads like the CPU
// model (model.cpp, block.cpp, attention_layer.cpp, moe_layer.cpp), step by named step.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cuda/blas.h"
#include "cuda/buffer.h"
#include "io/checkpoint.h"
#include "model/backend.h"
#include "ops/cuda_ops.h"

namespace dsv4::cuda {

// ---- weights --------------------------------------------------------------------------------
// A projection W [rows, cols] in the form its GEMM reads (blas.h).
struct DTensor {
  GemmKind kind = GemmKind::F32;
  int64_t rows = 0, cols = 0;
  DeviceArray<float> f32;    // F32
  DeviceArray<bf16> bf;      // BF16
  DeviceArray<uint8_t> fp8;  // FP8Block: e4m3 codes [rows, cols]
  DeviceArray<float> scale;  // FP8Block: [⌈rows/128⌉, ⌈cols/128⌉]
  size_t bytes() const { return f32.bytes() + bf.bytes() + fp8.bytes() + scale.bytes(); }
};

// One layer's routed experts, one matrix name (w1, w2 or w3), stacked [E, rows, cols].
struct DExperts {
  int E = 0, rows = 0, cols = 0;
  DeviceArray<float> f32;              // F32 precision
  DeviceArray<uint8_t> codes, scales;  // FP4 tiles + E8M0 per 32 (fast, stored as FP4; cuda_ops.h)
  DeviceArray<bf16> bf;                // bf16 (fast, stored otherwise)
  bool narrow_scales = false;          // FP4: no scale byte above 128 (ExpertMatrix)
  ExpertMatrix view() const;
  size_t bytes() const { return f32.bytes() + codes.bytes() + scales.bytes() + bf.bytes(); }
};

struct DHc {
  DeviceArray<float> fn, base, scale;
  int rows = 0;  // (2+n)n for a sub-layer, n for a head
};
struct DCompressor {
  DTensor wkv, wgate;
  DeviceArray<float> ape, norm;
};
struct DAttn {
  DTensor wq_a, wq_b, wkv, wo_a, wo_b, idx_wq_b, idx_wproj;
  DeviceArray<float> q_norm, kv_norm, sink;
  DCompressor comp, idx_comp;
};
struct DMoe {
  DTensor gate, sw1, sw2, sw3;
  DeviceArray<float> bias;
  DeviceArray<int32_t> tid2eid;
  DExperts w1, w2, w3;
};
struct DBlock {
  int ratio = 0;
  DeviceArray<float> attn_norm, ffn_norm;
  DHc hc_attn, hc_ffn;
  DAttn attn;
  DMoe moe;
};
struct DMtp {
  DBlock block;
  DTensor e_proj, h_proj;
  DeviceArray<float> enorm, hnorm, norm;
  DHc hc_head;
};
struct DModel {
  DTensor embed, head;
  DeviceArray<float> norm;
  DHc hc_head;
  std::vector<DBlock> layers;
  std::vector<DMtp> mtp;
  DeviceArray<float> rope_window, rope_compressed;  // RoPE frequencies [R/2]
  const float* freqs(int m) const { return m > 0 ? rope_compressed.get() : rope_window.get(); }
  size_t bytes() const;
  std::string formats;  // a one-line summary of the GEMM kinds in use
};

// Weights from a loaded model (params, plus the checkpoint's stored FP8/FP4 bytes when ck is
// given and the precision is fast), or random synthetic weights (params null) drawn on the GPU
// with the tensor table's storage and initialization.
DModel load_model(const ModelConfig& c, const Params* params, const Checkpoint* ck, Precision p, bool fp8_ok,
                  uint64_t seed, cudaStream_t s);

// ---- small model kernels (cuda_model_kernels.cu) ----------------------------------------------
// X [rows, n, D]: each of the n streams = table[ids[r]] (float32 or bf16 table); n = 1 for a plain gather.
void embed_rows_cuda(const DTensor& table, const int32_t* ids, int64_t rows, int n, float* X, cudaStream_t s);
// y [M, N] (ld ldy) = y2[0:M] + y2[M:2M] (y2 [2M, N]): the two halves of a split-input GEMM.
void add_halves_cuda(const float* y2, int64_t M, int64_t N, float* y, int64_t ldy, cudaStream_t s);
// X [rows, n, D] += e [rows, D] on every stream.
void add_to_streams_cuda(float* X, const float* e, int64_t rows, int n, int64_t D, cudaStream_t s);
// Random fills from (seed, index) hashes: normal(0, std) as float32 / bf16; FP8 codes with one
// block scale 2^⌈log2(4·std/448)⌉; FP4 codes with one scale 2^⌈log2(3·std/6)⌉ per 32; hash tables.
void fill_normal_cuda(float* x, int64_t n, float std, uint64_t seed, cudaStream_t s);
void fill_const_cuda(float* x, int64_t n, float v, cudaStream_t s);
void fill_normal_bf16_cuda(bf16* x, int64_t n, float std, uint64_t seed, cudaStream_t s);
void fill_fp8_cuda(uint8_t* codes, int64_t n, float* scales, int64_t nscales, float std, uint64_t seed, cudaStream_t s);
void fill_fp4_cuda(uint8_t* codes, uint8_t* scales, int64_t n, float std, uint64_t seed, cudaStream_t s);
void fill_tid2eid_cuda(int32_t* t, int64_t V, int k, int E, uint64_t seed, cudaStream_t s);
// Bytes 0x30..0x3F: valid in every cache form (e4m3 ≈ 0.5–1, small E8M0 scales, bf16/f32 ≈ 0.2–0.8).
void fill_cache_bytes_cuda(uint8_t* p, size_t n, uint64_t seed, cudaStream_t s);

// ---- sequences ------------------------------------------------------------------------------
// One sequence's caches for every block (main, then MTP), carved from one allocation.
struct Sequence {
  int64_t cap = 0, pos = 0, mtp_pos = 0;
  DeviceArray<uint8_t> mem;
  std::vector<LayerCache> layers, mtp;
};

// Bytes of one cache row and of one block's caches (the single source for allocation and accounting).
struct CacheLayout {
  int64_t kv_row = 0, idx_row = 0;          // bytes per window/entry row, per indexer row
  int64_t window_rows = 0, entry_rows = 0, idx_rows = 0, ring_rows = 0, ring_width = 0, idx_ring_width = 0;
  int64_t bytes() const;                     // the whole block, with alignment
  double bytes_per_token(int m) const;       // entries only, amortized
};
CacheLayout cache_layout(const ModelConfig& c, int m, int64_t cap, bool compact);

// ---- scratch ----------------------------------------------------------------------------------
// Named device buffers that grow on demand (contents are temporaries of one forward).
class Scratch {
 public:
  Scratch() = default;
  template <typename T>
  T* get(const std::string& name, size_t n) {
    return reinterpret_cast<T*>(grow(name, n * sizeof(T), false));
  }
  // As get, for counters that their users return to zero after each use: zeroed when allocated.
  template <typename T>
  T* counters(const std::string& name, size_t n) {
    return reinterpret_cast<T*>(grow(name, n * sizeof(T), true));
  }
  size_t bytes() const;
  // Bumped whenever a buffer moves (grows): a captured graph holds the addresses it was given.
  uint64_t generation() const { return generation_; }

 private:
  char* grow(const std::string& name, size_t bytes, bool zeroed);
  std::map<std::string, DeviceArray<char>> bufs_;
  uint64_t generation_ = 0;
};

// An activation matrix x [M, K] and the GEMM-input forms made from it on demand.
struct Act {
  std::string name;
  const float* f32;
  int64_t M, K;
  bf16* b = nullptr;
  uint8_t* q = nullptr;  // e4m3 rows, padded to Mp rows for cuBLASLt
  float* qs = nullptr;   // [K/128][Mp]
  int64_t Mp = 0;
};

// Per-forward descriptors on the GPU (CudaModel::prepare).
struct BatchDesc {
  int64_t rows = 0;
  int nseq = 0;
  std::vector<int> handles;
  std::vector<SeqRows> seqs;
  std::vector<int32_t> ids, slot, pos;
  int32_t *d_ids = nullptr, *d_slot = nullptr, *d_pos = nullptr;
  SeqRows* d_seqs = nullptr;
  LayerCache* d_caches = nullptr;  // [blocks][nseq]
  struct Jobs {
    const CompressJob* list = nullptr;
    const int32_t* count = nullptr;  // on the device
    int capacity = 0;
  };
  std::map<int, Jobs> jobs;  // per ratio m: the entries this step completes
  int64_t idx_max_count = 0;  // indexer score columns: (max end position) / 4, or (max capacity) / 4 for graphs
};

// ---- the backend --------------------------------------------------------------------------------
class CudaModel : public Backend {
 public:
  // params null: a synthetic model (fast precision only) for benchmarks.
  CudaModel(const ModelConfig& c, const Params* params, const Checkpoint* ck, Precision p, uint64_t seed = 1);
  ~CudaModel() override;

  const ModelConfig& config() const override { return c_; }
  std::string describe() const override;
  int new_sequence(int64_t max_tokens) override;
  void free_sequence(int seq) override;
  ForwardOut forward(const std::vector<SeqChunk>& batch, bool want_streams, ForwardTrace* trace) override;
  ForwardOut forward_last(const std::vector<SeqChunk>& batch) override;
  ForwardOut mtp_forward(const std::vector<SeqChunk>& batch, const Tensor& streams) override;
  size_t sequence_bytes(int seq) const override;

  // For benchmarks: the forward without copying logits back (they stay in logits_device()).
  void forward_on_device(const std::vector<SeqChunk>& batch);
  // A decode step (one token per sequence) replayed from a captured CUDA graph: one launch for
  // the whole step. The graph is captured at the first call for a set of sequences and replayed
  // while the same sequences decode; only the descriptors (ids, positions, jobs) change. It is
  // captured again after any scratch buffer has moved. forward() takes this path for decode steps
  // in the fast precision (set_graphs; DSV4_GRAPH=0 in the environment starts with it off).
  void decode_step_graph(const std::vector<SeqChunk>& batch);
  void set_graphs(bool on) { graphs_ = on; }
  // Decode steps replayed from a graph so far (tests, benchmarks).
  int64_t graph_replays() const { return graph_replays_; }
  const float* logits_device() const { return logits_; }
  cudaStream_t stream() const { return stream_; }
  Blas& blas() { return *blas_; }
  size_t weight_bytes() const { return w_.bytes(); }
  const DModel& weights() const { return w_; }
  // Bytes of caches per token of context (entries of all main blocks), and the fixed part per sequence.
  double cache_bytes_per_token() const;
  size_t cache_fixed_bytes() const;
  // Benchmarks: a sequence that has "seen" `tokens` tokens, its caches filled with valid random
  // bytes (decode cost does not depend on the cached values).
  void fake_context(int seq, int64_t tokens, uint64_t seed);
  // Benchmarks: time every dense GEMM and every routed-expert product with events.
  struct Profile {
    double gemm_ms = 0, gemm_flop = 0, expert_ms = 0, expert_flop = 0;
    std::map<std::string, double> section_ms;  // GPU time between consecutive section marks
  };
  void set_profiling(bool on) { profiling_ = on; }
  // Few-row products through gemv_cuda (default) or always through cuBLASLt (for comparisons).
  void set_gemv(bool on) { gemv_enabled_ = on; }
  // Decode's side streams (below) on or off (DSV4_SIDE=0 in the environment starts with them off).
  void set_side_streams(bool on) { side_streams_ = on; }
  // The last captured decode graph: kernel nodes, dependency edges, and how many of those are
  // programmatic (PDL: the next kernel may start before the previous one ends).
  struct GraphStats {
    size_t nodes = 0, edges = 0, programmatic = 0;
  };
  GraphStats graph_stats() const { return graph_stats_; }
  Profile take_profile();

 private:
  void prepare(const std::vector<SeqChunk>& batch, bool mtp, bool for_graph = false);
  float* run_main(ForwardTrace* trace);
  bool graph_valid(const std::vector<int>& handles) const;  // graph_ replays a step of these sequences
  void run_block(const DBlock& b, int table_row, float*& X, std::vector<int32_t>* topk_rows);
  void attention(const DBlock& b, int table_row, const float* a, float* out, std::vector<int32_t>* topk_rows);
  void compress(const DCompressor& w, int m, const RowFormat& f, const float* u, float* z, int table_row, int which,
                cudaStream_t s);
  void moe(const DMoe& w, const float* a, float* out);
  // The LM head (HcHead, norm, head) of `rows` rows of X (-1: the batch's), into logits_.
  void head(const float* X, const DHc& hc, const DeviceArray<float>& norm, int64_t rows = -1);
  // Decode: a sub-layer's hc_post (and the MoE sub-layer's combine before it) is left pending for
  // the next hc_pre_fused_cuda to do first (post_first): two launches fewer per sub-layer.
  // settle_post launches it where no fused hc_pre follows (prefill, traces).
  HcPostArgs pending_post_{};                  // .Xout null: none pending
  bool pending_post_side_ = false;             // its post and comb come from side_ (joined before use)
  MoeCombineArgs* moe_combine_to_ = nullptr;   // set: moe() leaves its combine's inputs here, no launch
  const bf16* moe_ab_ = nullptr;               // set: the MoE input in bf16 (hc_pre_fused_cuda's ab)
  HcPostArgs take_post();  // the pending one (none: .Xout null), its side branch joined; no longer pending
  void settle_post();
  ForwardOut finish(int64_t rows, bool want_streams, const float* X);

  Act act(const std::string& name, const float* x, int64_t M, int64_t K) { return Act{name, x, M, K}; }
  void fp8_buffers(Act& x, int64_t Mp);
  // x's FP8 form, already written by an earlier kernel (unpadded, for the few-row kernel).
  void adopt_quantized(Act& x) { fp8_buffers(x, x.M); }
  bool prequantized_ = false;  // the current sub-layer's input was rounded to FP8 by hc_pre
  // y [M, nrows] (ld ldy) (+)= x[:, x_col0 : x_col0 + W.cols] · W[w_row0 : w_row0 + nrows]ᵀ
  void gemm(const DTensor& W, int64_t w_row0, int64_t nrows, Act& x, int64_t x_col0, float* y, int64_t ldy,
            float beta = 0.0f);
  void linear(const DTensor& W, Act& x, float* y) { gemm(W, 0, W.rows, x, 0, y, W.rows); }
  // The few-row kernel (gemv_cuda) when it fits these shapes; false: the caller uses gemm.
  // Groups: output row n reads x from column x_col0 + (n / group_rows) · group_stride.
  // y_fp8 (the Act of y, all of it): where the kernel can, it also writes y's FP8 form (the next
  // product's input) and y_fp8 adopts it; otherwise y_fp8 is left as it was.
  bool gemv(const DTensor& W, int64_t w_row0, int64_t nrows, Act& x, int64_t x_col0, float* y, int64_t ldy, float beta,
            int64_t group_rows, int64_t group_stride, Act* y_fp8 = nullptr);
  bool gemv_args(const DTensor& W, int64_t w_row0, int64_t nrows, Act& x, int64_t x_col0, float* y, int64_t ldy,
                 float beta, int64_t group_rows, int64_t group_stride, GemvArgs& g);
  // y_i = x · W_iᵀ for each (W_i, y_i) of the list (y_i with W_i.rows columns).
  void linear_many(Act& x, const std::vector<std::pair<const DTensor*, float*>>& list);
  // The same as one few-row launch on stream s (a side stream): x already in its GEMM form
  // (prequantized); every product must fit the few-row kernel.
  void gemv_many_on(Act& x, const std::vector<std::pair<const DTensor*, float*>>& list, cudaStream_t s);
  void linear_f32(const float* x, int64_t M, int64_t K, const float* W, int64_t N, float* y, int64_t ldy);
  int mix_product(const float* X, const DHc& hc, const char* name, int64_t rows = -1);
  Sequence& seq(int id) const;

  ModelConfig c_;
  Precision prec_;
  bool compact_;
  cudaStream_t stream_ = nullptr;
  // Decode's side branch: work that the main stream's next kernels do not need (mHC's comb, the
  // shared expert) runs beside them, forked after what it reads and joined before its first use.
  // Captured graphs keep the branches.
  cudaStream_t side_ = nullptr, side2_ = nullptr;  // side2_: the compressors of CSA/HCA layers
  cudaStream_t side_kv_ = nullptr;  // the window key's normalization, beside the query's chain (decode)
  cudaStream_t side_comp_ = nullptr;  // the compressor's steps in captured graphs: the greatest priority
  // A CSA layer's indexer, at the greatest priority: at long context its chain (scores and top-k
  // over up to 262144 entries) is longer than the query chain beside it, so its blocks go first.
  cudaStream_t side_idx_ = nullptr;
  // The indexer's query (forked after the query's norm), scores and top-k, also at the greatest
  // priority: its chain does not queue behind the indexer's compressor on side_idx_, which it
  // joins only before the scores.
  cudaStream_t side_idxq_ = nullptr;
  cudaEvent_t fork_ev_ = nullptr, join_ev_ = nullptr;
  void fork_side(cudaStream_t side);  // `side` waits for everything issued on stream_ so far
  void join_side(cudaStream_t side);  // stream_ waits for everything issued on `side` so far
  void join_streams(cudaStream_t from, cudaStream_t to);  // `to` waits for everything issued on `from` so far
  bool side_enabled() const;  // few rows (decode, where a step is a chain of short kernels)
  std::unique_ptr<Blas> blas_;
  DModel w_;
  std::map<int, std::unique_ptr<Sequence>> seqs_;
  int next_seq_ = 0;
  std::unique_ptr<Scratch> scratch_;
  std::unique_ptr<BatchDesc> batch_;
  float* logits_ = nullptr;
  cudaGraphExec_t graph_ = nullptr;
  float* graph_x_ = nullptr;      // the streams the captured step leaves (X of its run_main)
  uint64_t graph_gen_ = 0;        // the scratch generation it was captured at
  bool capturing_ = false;        // a decode step is being captured
  bool graphs_ = true;            // forward() replays decode steps from graphs
  int64_t graph_replays_ = 0;
  std::vector<int> eager_decode_seqs_;  // the last decode step forward() ran eagerly
  std::vector<int> graph_seqs_;
  bool graph_pdl_ = false;  // captured with programmatic dependent launches (cuda/launch.h)
  bool graph_side_ = false;  // captured with the side streams
  bool side_streams_ = true;
  GraphStats graph_stats_;
  struct Timed {
    cudaEvent_t start, stop;
    double flop;
    bool expert;
  };
  bool profiling_ = false;
  bool gemv_enabled_ = true;
  std::vector<Timed> timed_;
  std::vector<std::pair<const char*, cudaEvent_t>> marks_;
  cudaEvent_t tic(bool expert, double flop);
  void toc(cudaEvent_t start);
  // Profiling: the GPU time from here to the next mark counts towards `section`.
  void mark(const char* section);
};

}  // namespace dsv4::cuda
