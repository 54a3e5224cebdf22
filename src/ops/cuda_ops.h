// The CUDA versions of the forward ops (src/ops/<op>.cu, next to each CPU op). Each launcher
// states the same contract as its CPU twin (the oracle, see the CPU headers) on device
// pointers, plus what the GPU version adds: per-row positions, batched sequences, caches.
// All pointers are device pointers; every launch is checked (DSV4_CUDA_LAUNCHED).
// Batch descriptors (pos, slot, seqs, ids and the LayerCache tables, not the caches) must not
// be written by a kernel on the launching stream: kernels read them before their PDL wait
// (cuda/launch.h). The model uploads them before a step's first kernel.
#pragma once
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "io/config.h"

namespace dsv4::cuda {

using bf16 = __nv_bfloat16;

// ---- caches (model.md §5–§7, §11) ------------------------------------------------------
// Rows of width d kept for attention or the indexer, in one of two forms:
//   float32:  f32 [cap, d]
//   compact:  kv rows (window and main entries): e4m3 codes of the first N = d − R dims
//             (codes [cap, N]) with one E8M0 scale per 64 (scales [cap, ⌈N/64⌉]) and the
//             last R dims in bf16 (rope [cap, R]). Exact for the nope dims: the spec already
//             rounds them to e4m3 × 2^k (§8); the RoPE dims lose float32 → bf16.
//             indexer rows: e2m1 codes of all d dims, two per byte (codes [cap, d/2], element
//             2j in the low nibble) with one E8M0 scale per 32 (scales [cap, d/32]). Exact.
struct CacheRows {
  float* f32 = nullptr;
  uint8_t* codes = nullptr;
  uint8_t* scales = nullptr;
  bf16* rope = nullptr;
};

// One sequence's caches in one layer.
struct LayerCache {
  CacheRows window;        // ring of W rows, slot = position mod W
  CacheRows entries;       // main compressed entries (m > 0)
  CacheRows idx_entries;   // indexer entries (m = 4)
  float *comp_u = nullptr, *comp_z = nullptr;  // compressor's pending rows, ring [ring_rows, width]
  float *idx_u = nullptr, *idx_z = nullptr;    // the indexer compressor's (m = 4)
};

// Where one sequence's rows sit in the batch: rows [row0, row0 + T) at positions pos0 + i.
struct SeqRows {
  int32_t row0, T, pos0;
};

// Widths of a cache row: d (row width), R (rope dims at the end; kv rows only).
struct RowFormat {
  int d, R;
  bool compact, indexer;
};

// ---- rmsnorm.cu ----
// x [T, D] -> y [T, D] = w ⊙ x / sqrt(mean(x²) + ε) (w null: 1). y may equal x. With q (D % 128 == 0),
// y is also rounded for an FP8 GEMM as quantize_fp8_1x128_cuda does: codes q [T, D], scales qs [D/128][T].
void rmsnorm_cuda(const float* x, int64_t T, int64_t D, const float* w, float eps, float* y, cudaStream_t s,
                  uint8_t* q = nullptr, float* qs = nullptr);

// In place on rows·heads vectors x [rows·heads, D] (vector v at position pos[v / heads]):
// rmsnorm (weight w, or none), RoPE of the last R dims, then (fp8_block > 0) FP8 simulation of
// the first D − R dims in blocks of fp8_block and (round_rope) the RoPE dims rounded to bf16:
// the same values as rmsnorm_cuda, rope_cuda, fp8_sim_cuda and round_rope_bf16_cuda in a row.
void rmsnorm_rope_cuda(float* x, int64_t rows, int heads, int64_t D, const float* w, float eps, int R, const float* freqs,
                       const int32_t* pos, int fp8_block, bool round_rope, cudaStream_t s);
// Two such normalizations (same eps, R, freqs, pos) in one launch; D of both needs the same
// thread count (rmsnorm.cu). A job with rows = 0 is none.
struct RmsRopeRows {
  float* x = nullptr;
  int64_t rows = 0;
  int heads = 1;
  int64_t D = 0;
  const float* w = nullptr;
  int fp8_block = 0;
  bool round_rope = false;
  // Optional, second job only (a compact window key): the final row also written in
  // compact form to row v of `enc` (the attention's chunk rows, sparse_attention_chunk) and, with
  // ring_caches, to its sequence's window ring at slot pos mod W (decode: one row per sequence).
  bool encode = false;
  CacheRows enc{};
  const LayerCache* ring_caches = nullptr;
  const int32_t* slot = nullptr;
  int W = 0;
};
void rmsnorm_rope2_cuda(const RmsRopeRows& a, const RmsRopeRows& b, float eps, int R, const float* freqs,
                        const int32_t* pos, cudaStream_t s);

// ---- rope.cu ----
// For each row r and head h < heads: rotates the R dims at x + r·ld + h·stride + offset by θ_i(pos[r])
// (−θ when inverse); θ_i(t) = fp32(fp32(t) · f_i), freqs [R/2].
void rope_cuda(float* x, int64_t rows, int64_t heads, int64_t ld, int64_t stride, int64_t offset, int R,
               const float* freqs, const int32_t* pos, bool inverse, cudaStream_t s);

// ---- quant.cu ----
// fp8_sim / fp4_sim of the first n values of each of `rows` rows (stride ld), in blocks of `block` (model.md §8).
void fp8_sim_cuda(float* x, int64_t rows, int64_t n, int64_t ld, int64_t block, cudaStream_t s);
void fp4_sim_cuda(float* x, int64_t rows, int64_t n, int64_t ld, cudaStream_t s);
// hadamard: `count` contiguous vectors of d (a power of two, ≤ 1024): x <- (x · H_d) · d^(−1/2).
void hadamard_cuda(float* x, int64_t count, int64_t d, cudaStream_t s);
// The indexer's query heads x [rows, heads, d] in place (model.md §7): RoPE of the last R dims at
// pos[row], Hadamard, FP4 simulation per 32: rope_cuda, hadamard_cuda and fp4_sim_cuda in one launch.
void indexer_query_cuda(float* x, int64_t rows, int heads, int64_t d, int R, const float* freqs, const int32_t* pos,
                        cudaStream_t s);
// Rounds the last R dims of each row (stride ld) to bf16 and back (what a compact cache keeps).
void round_rope_bf16_cuda(float* x, int64_t rows, int64_t ld, int R, cudaStream_t s);
// GEMM inputs of the fast path: x [M, K] -> bf16; or e4m3 in 1×128 blocks with power-of-two
// scales (the official FP8 inference's activation rounding): q [M, K], scale [K/128][ld_scale].
void to_bf16_cuda(const float* x, int64_t n, bf16* y, cudaStream_t s);
// x = hi + lo with hi = bf16(x), lo = bf16(x − hi): 16 significant bits in two bf16 GEMM inputs.
void split_bf16_cuda(const float* x, int64_t n, bf16* hi, bf16* lo, cudaStream_t s);
// The scales are stored [K/128][ld_scale] (ld_scale ≥ M: cuBLASLt may need M padded).
void quantize_fp8_1x128_cuda(const float* x, int64_t M, int64_t K, uint8_t* q, float* scale, int64_t ld_scale,
                             cudaStream_t s);

// ---- gemv.cu ----
// Few-row products (decode): y [M, N] (row stride ldy) = beta·y + x · Wᵀ for 1 ≤ M ≤ kGemvMaxRows,
// reading W [N, K] (row stride ldw) once. The arithmetic is that of the many-row GEMMs (blas.h)
// up to float32 summation order:
//   FP8Block: W e4m3 with scales per 128×128 block (w_scale [⌈N/128⌉, ldw_scale]); x as the
//             e4m3 codes of quantize_fp8_1x128_cuda (xq [M, ldxq], scales xs [cols/128][ldxs]);
//   BF16:     W bf16; x float32 [M, ldx], read as its two bf16 halves (split_bf16_cuda);
//   F32:      W and x float32.
// Groups (group_rows > 0, even; a multiple of 16 for FP8): output row n reads x from column
// (n / group_rows) · group_stride on: the grouped output projection in one launch. FP8Block runs
// on the tensor cores (mma.sync, float32 sums of exact e4m3 products).
constexpr int kGemvMaxRows = 8;
enum class GemvWeights { F32, BF16, FP8Block };
struct GemvArgs {
  GemvWeights weights = GemvWeights::F32;
  int64_t M = 0, N = 0, K = 0;
  const uint8_t* w_fp8 = nullptr;
  const float* w_scale = nullptr;
  int64_t ldw_scale = 0;
  const bf16* w_bf16 = nullptr;
  const float* w_f32 = nullptr;
  int64_t ldw = 0;
  const uint8_t* xq = nullptr;
  const float* xs = nullptr;
  int64_t ldxq = 0, ldxs = 0;
  const float* x = nullptr;
  int64_t ldx = 0;
  int64_t group_rows = 0, group_stride = 0;
  float* y = nullptr;
  int64_t ldy = 0;
  float beta = 0.0f;
  // Optional (FP8 weights, N a multiple of 128, beta 0): y's FP8 form too, as
  // quantize_fp8_1x128_cuda(y, M, N, yq, ys, ldys) would make it (yq [M, ldyq], ys [N / 128][ldys]);
  // done: N / 128 counters, zero before the launch and left zero after it.
  uint8_t* yq = nullptr;
  float* ys = nullptr;
  int64_t ldyq = 0, ldys = 0;
  uint32_t* done = nullptr;
};
// Whether M rows of K columns suit the kernel (M ≤ kGemvMaxRows, K a multiple of its vectors).
bool gemv_fits(GemvWeights w, int64_t M, int64_t K);
void gemv_cuda(const GemvArgs& a, cudaStream_t s);
// Up to kGemvMaxMats products with the same M and K, in any weight forms (typically the same
// activations through several matrices) in one launch; each computes what gemv_cuda computes.
constexpr int kGemvMaxMats = 8;
void gemv_many_cuda(const GemvArgs* mats, int count, cudaStream_t s);

// ---- mhc.cu ----
// hc_pre + the sub-layer's RMSNorm, per token t (model.md §3):
//   mix [T, (2+n)n] = fn · vec(X[t]) (from a float32 GEMM, not yet divided by the RMS of x)
//   -> a [T, D] = RMSNorm_norm(Σ_j pre_j X[j]), post [T, n], comb [T, n, n]
// head = true: the HcHead reduction (mix [T, n], scale [1], no Sinkhorn, no post/comb).
// mix_parts = S > 0: mix is hc_mix_cuda's [S][T][rows + 1] (partial products and sums of squares),
// summed in order; 0: mix [T][rows] from a GEMM. hc_mult n ≤ 5 (comb is normalized by one warp).
void hc_pre_cuda(const float* X, const float* mix, int64_t T, int n, int64_t D, const float* base, const float* scale,
                 float eps, float hc_eps, int sinkhorn_iters, bool head, const float* norm, float* a, float* post,
                 float* comb, cudaStream_t s, int mix_parts = 0, uint8_t* q = nullptr, float* qs = nullptr);
// (q, qs given, D % 128 == 0: a is also rounded for an FP8 GEMM as quantize_fp8_1x128_cuda does,
// q [T, D], qs [D/128][T].)
// The mix product for few tokens (decode) without a GEMM: parts [S][T][N + 1] over S column slices
// of K = n·D: fn [N, K] · X[t], then Σ X[t]² (hc_pre's RMS), for hc_pre_cuda's mix_parts = S.
// Fits T ≤ kHcMixMaxTokens, N ≤ 24.
constexpr int kHcMixMaxTokens = 8;
bool hc_mix_fits(int64_t T, int N);
void hc_mix_cuda(const float* X, const float* fn, int64_t T, int64_t K, int N, float* parts, int S, cudaStream_t s);
// hc_mix + hc_pre in one launch for few tokens (decode): the same outputs from fn [rows, n·D]
// itself, one thread block cluster per token (the mix row summed in a fixed order: deterministic).
// Fits T ≤ kHcMixMaxTokens, n ≤ 4, D % 128 == 0, and a GPU that runs the cluster (sm_90).
bool hc_pre_fused_fits(int64_t T, int n, int64_t D);
// The previous sub-layer's end for hc_pre_fused_cuda to do first (decode: two launches fewer):
// Xout = hc_post(X, o, post, comb), o = moe_combine(moe.ys, moe.inv, moe.shared, moe.k) where
// moe.ys is given (the MoE sub-layer's combine), else o itself. The same bits as those launches.
struct MoeCombineArgs {
  const float* ys = nullptr;
  const int32_t* inv = nullptr;
  const float* shared = nullptr;
  int k = 0;
};
struct HcPostArgs {
  const float* X = nullptr;  // [T, n, D]
  const float* o = nullptr;  // [T, D] (unused with moe.ys)
  MoeCombineArgs moe;
  const float* post = nullptr;  // [T, n]
  const float* comb = nullptr;  // [T, n, n]
  float* Xout = nullptr;        // [T, n, D], ≠ X
};
void hc_pre_fused_cuda(const float* X, const float* fn, int64_t T, int n, int64_t D, const float* base, const float* scale,
                       float eps, float hc_eps, int sinkhorn_iters, bool head, const float* norm, float* a, float* post,
                       float* comb, cudaStream_t s, uint8_t* q = nullptr, float* qs = nullptr,
                       float* mix_out = nullptr, const HcPostArgs* post_first = nullptr, bf16* ab = nullptr);
// (post_first given: X = post_first->Xout, which it writes first, then reads; its post and comb are
// not this launch's.) ab, if given: a again in bf16, the routed experts' input
// (moe_gemv_swiglu_tokens_cuda).
// With mix_out (sub-layers, not the head): post and comb are left to hc_comb_cuda, which may run
// beside the sub-layer (they are first needed by hc_post); mix_out [T][25] gets the summed mix row
// (24 columns for n = 4, then Σx² at column 24) they are computed from.
constexpr int kHcMixRow = 25;
void hc_comb_cuda(const float* mix_row, int64_t T, int n, int64_t D, const float* base, const float* scale, float eps,
                  float hc_eps, int sinkhorn_iters, float* post, float* comb, cudaStream_t s);
// hc_post: X' [t, k] = post_k · o[t] + Σ_j comb_jk X[t, j] -> Xout [T, n, D] (Xout ≠ X).
void hc_post_cuda(const float* X, const float* o, const float* post, const float* comb, int64_t T, int n, int64_t D,
                  float* Xout, cudaStream_t s);

// ---- compressor.cu ----
// A compressed entry to make this step: entry `entry` of the sequence in batch slot `slot`.
struct CompressJob {
  int32_t slot, entry;
};
// For each job: pool the block's rows (§6; rows before the chunk from the pending ring),
// RMSNorm_norm, RoPE at entry·m, then FP8 simulation of the first d − R dims (main) or
// Hadamard + FP4 simulation of all d dims (indexer), and write the row of the entry cache.
// u, z: [rows, c·d], the chunk's rows as the projections give them: z's row at position p gets
// ape [m, c·d] row p mod m added where it is read (the ring keeps rows with it added).
// `which`: 0 = main compressor, 1 = the indexer's.
// jobs [max_jobs], of which the first *njobs (a device value: a captured graph replays any count).
void compress_entries_cuda(const float* u, const float* z, const float* ape, int m, RowFormat f, const float* norm,
                           float eps, const float* freqs, const CompressJob* jobs, const int32_t* njobs, int max_jobs,
                           const SeqRows* seqs, const LayerCache* caches, int which, cudaStream_t s);
// Keeps the last ring_rows rows of each sequence's chunk in its pending ring (after compress_entries),
// z with ape added as above. max_rows: at least the longest chunk's T (a bound: the grid's rows).
void compressor_keep_cuda(const float* u, const float* z, const float* ape, int m, int width, int ring_rows,
                          const SeqRows* seqs, int nseq, int max_rows, const LayerCache* caches, int which,
                          cudaStream_t s);

// ---- indexer.cu ----
// score [rows, ld]: for row r (sequence slot[r], position pos[r]) and entry i < (pos+1)/4 of its
// sequence: Σ_h (w[r, h] · w_scale) · ReLU(qI[r, h] · k_i). qI [rows, HI·DI] must be FP4-simulated (then the
// bf16 tensor-core products are exact, as the entries are); entries past the count are not written.
// Up to 64 rows (decode) each row streams the entries on its own; more rows (prefill, DI = 128)
// share each decoded tile of entries among blocks of consecutive rows.
// digits (optional, [rows, kTopkDigits] counters at zero): the few-row kernel also counts the
// written scores by their first top-k digit, for topk_cuda, and returns true; the many-row kernel
// leaves them and returns false.
bool indexer_scores_cuda(const float* qI, const float* w, float w_scale, int64_t rows, int HI, int DI, const int32_t* slot,
                         const int32_t* pos, const LayerCache* caches, bool compact, float* score, int64_t ld,
                         int64_t max_count, cudaStream_t s, uint32_t* digits = nullptr);
// topk: for each row, the min(K, count_r) highest of score[r, :count_r] (count_r = (pos[r]+1)/ratio),
// ties to the lower index; idx [rows, K] ascending, then −1. digits (optional): the rows' counts
// from indexer_scores_cuda, which the kernel uses instead of counting, and sets back to zero.
void topk_cuda(const float* score, int64_t ld, int64_t rows, const int32_t* pos, int ratio, int K, int32_t* idx,
               cudaStream_t s, uint32_t* digits = nullptr);
// The top-k's first radix digit: the top bits of a score's order key (dev::order_key).
constexpr int kTopkDigitBits = 12, kTopkDigits = 1 << kTopkDigitBits;

// ---- attention.cu ----
// Sparse attention with the sink (model.md §5) for each row r of the batch: the window positions
// max(0, p−W+1)..p (rows of this chunk from kv [rows, Dh], older ones from the window ring), then
// the compressed entries: all (pos+1)/m of them (HCA, selected = null) or the selected ones
// (CSA, selected [rows, K], −1 = none). o [rows, H, Dh] (before the inverse RoPE).
struct AttnShape {
  int H, Dh, R, W, m, K;
  float scale;
  bool compact;
  int max_keys = 0;  // most rows any query attends (window + entries), a bound for splitting; 0: unknown
  // The fast path's tensor-core kernel (compact caches only): q and the probabilities rounded to
  // bf16, products on the bf16 tensor cores with float32 accumulation. Keys and values stay exact
  // (e4m3 × 2^k and the bf16 RoPE dims are bf16 values).
  bool bf16_products = false;
  // q as the query projection makes it (q_rope given): the tensor-core kernel applies each head's
  // RMSNorm (no weight, eps q_eps) and the RoPE of its last R dims (frequencies q_rope, at the
  // row's position) as it loads q, bit for bit rmsnorm_rope_cuda(q, rows, H, Dh, nullptr, q_eps, R,
  // q_rope, pos, 0, false): one launch less on the decode step's chain. Only where
  // sparse_attention_norms_q(shape) holds.
  const float* q_rope = nullptr;
  float q_eps = 0.0f;
};
// Whether the attention can take q before its normalization (AttnShape::q_rope): the tensor-core
// kernel, Dh = 512 (the lanes of a warp replay rmsnorm_rope's 128-thread sums), R % 4 == 0.
bool sparse_attention_norms_q(const AttnShape& a);
// What happens to o after the softmax (optional): the inverse RoPE of each head's last R dims
// (rope_cuda, inverse, frequencies `freqs` at pos), then (q given, Dh % 128 == 0) the rounding of
// o [rows, H·Dh] for an FP8 GEMM as quantize_fp8_1x128_cuda does (codes q, scales qs [H·Dh/128][rows]).
// Where the attention ends in a combine of split partials (decode) the combine does both.
struct AttnOutput {
  const float* freqs = nullptr;
  uint8_t* q = nullptr;
  float* qs = nullptr;
  // Every sequence of the batch has one row (decode): the chunk's rows may go to the window ring
  // before the attention (the slot a row takes held the position just leaving its window).
  bool one_row_each = false;
  // The chunk's rows are already in the work buffer's compact form (sparse_attention_chunk).
  bool chunk_encoded = false;
};
// Where the tensor-core path keeps the chunk's rows in compact form inside `work`; false when
// that path does not take the shape (then nothing may be written there).
bool sparse_attention_chunk(float* work, int64_t rows, const AttnShape& a, CacheRows* chunk);
// `work`: sparse_attention_work(rows, a) floats (none when rows fill the GPU; few rows split the
// attended rows over several blocks, whose partials meet in a combine step).
// Returns true when it also wrote the chunk's rows to the window ring (window_keep_cuda's work:
// the tensor-core path with out.one_row_each).
bool sparse_attention_cuda(const float* q, const float* kv, const float* sink, const AttnShape& a,
                           const int32_t* slot, const int32_t* pos, int64_t rows, const SeqRows* seqs,
                           const LayerCache* caches, const int32_t* selected, float* o, float* work,
                           cudaStream_t s, const AttnOutput& out = {});
int64_t sparse_attention_work(int64_t rows, const AttnShape& a);
// Writes the last W rows of each sequence's chunk into its window ring.
void window_keep_cuda(const float* kv, RowFormat f, int W, const SeqRows* seqs, int nseq, const LayerCache* caches,
                      cudaStream_t s);

// ---- moe.cu ----
// Routing per token (model.md §9): p = score_func(logits), top k of p + bias (ties to the lower
// index) or tid2eid[id] (hash layers), weights normalized (unless softmax) and scaled.
void moe_route_cuda(const float* logits, int64_t T, int E, int k, ScoringFunc f, const float* bias,
                    const int32_t* tid2eid, const int32_t* ids, float routed_scale, int32_t* experts, float* weights,
                    cudaStream_t s);
// Groups the T·k assignments by expert, stably (assignment order within an expert):
// counts [E], offsets [E+1], perm [T·k] (sorted position -> assignment t·k+i), inv [T·k].
// Also lists the tiles of `tile_rows` rows of each expert for the grouped GEMMs: tiles [max_tiles]
// as (expert, first sorted row), ntiles [1]. counts need not be zero on entry.
void moe_group_cuda(const int32_t* experts, int64_t T, int k, int E, int32_t* counts, int32_t* offsets, int32_t* perm,
                    int32_t* inv, int tile_rows, int2* tiles, int32_t* ntiles, cudaStream_t s);
// moe_route_cuda then moe_group_cuda, bit for bit, in one launch for few rows (T ≤ 64, E ≤ 256,
// T·k ≤ 1024; beyond, the two).
void moe_route_group_cuda(const float* logits, int64_t T, int E, int k, ScoringFunc f, const float* bias,
                          const int32_t* tid2eid, const int32_t* ids, float routed_scale, int32_t* experts,
                          float* weights, int32_t* counts, int32_t* offsets, int32_t* perm, int32_t* inv, int tile_rows,
                          int2* tiles, int32_t* ntiles, cudaStream_t s);
// xs [T·k, D] = x[perm / k] (float32 or bf16 output).
void moe_gather_cuda(const float* x, int64_t D, const int32_t* perm, int64_t n, int k, float* xs_f32, bf16* xs_bf16,
                     cudaStream_t s);
// h [rows, F] = silu(min(g, λ)) ⊙ clamp(u, ±λ) (· weight[perm[r]] when given); λ = 0: no clamp.
void swiglu_cuda(const float* g, const float* u, int64_t rows, int64_t F, float limit, const float* weight,
                 const int32_t* perm, float* h, cudaStream_t s);
// swiglu_cuda without a weight, plus h rounded for an FP8 GEMM as quantize_fp8_1x128_cuda does
// (q [rows, F], qs [F/128][rows]); F % 128 == 0.
void swiglu_quant_cuda(const float* g, const float* u, int64_t rows, int64_t F, float limit, float* h, uint8_t* q,
                       float* qs, cudaStream_t s);
// Expert weights for the grouped GEMMs: per expert, rows × cols; packed FP4 in tiles (below) with
// E8M0 scales, or bf16 [E, rows, cols].
struct ExpertMatrix {
  const uint8_t* codes = nullptr;
  const uint8_t* scales = nullptr;
  const bf16* w = nullptr;
  int rows = 0, cols = 0;
  bool narrow_scales = false;  // FP4: every scale byte is at most 128 (2^1), so the decode products
                               // skip their per-step check for larger ones (fp4_scale_max_cuda)
};
// FP4 expert matrices are stored in tiles of 16 rows × 128 columns (the experts' rows stacked, rows
// a multiple of 16; columns padded to fp4_tiled_cols), each tile's 1 KB of codes contiguous (its
// 16 rows of 64 bytes; each 32-bit word of 8 columns re-encoded so that the kernels decode it in
// few instructions, moe_experts.cuh's fp4_tile_word), and so its 64 scale bytes (16 rows of
// 4); tiles follow each other along the columns, then down the rows. A decode step's warp then
// reads 512 contiguous bytes a load instead of 16 rows' 64-byte pieces 2 KB apart.
constexpr int64_t fp4_tiled_cols(int64_t cols) { return (cols + 127) / 128 * 128; }
// The largest of n E8M0 scale bytes (a device reduction; the host waits for it).
uint8_t fp4_scale_max_cuda(const uint8_t* scales, int64_t n, cudaStream_t s);
// The checkpoint's row-major FP4 codes [rows, cols/2] and scales [rows, cols/32] into tiles at
// codes and scales (rows % 16 == 0, cols % 32 == 0; padding columns get zero codes and the
// scale 1, which the decode products rely on).
void fp4_tile_cuda(const uint8_t* codes_in, const uint8_t* scales_in, int64_t rows, int cols, uint8_t* codes,
                   uint8_t* scales, cudaStream_t s);
// Many rows per expert (prefill, moe_grouped.cu): grouped expert GEMMs over the tiles of
// moe_group_cuda made with tile_rows = kMoeTileRows (bf16 inputs, float32 accumulation), with no
// host synchronization (the tile list stays on the device):
//   swiglu:  h [n, F] (bf16) = swiglu(xs · W1_eᵀ, xs · W3_eᵀ) · weight[perm[r]]
//   down:    y [n, D] (float32) = h · W2_eᵀ
// Weight rows (F, D) must be even; columns a multiple of 32.
constexpr int kMoeTileRows = 128;
void moe_grouped_swiglu_cuda(const bf16* xs, const ExpertMatrix& w1, const ExpertMatrix& w3, const int2* tiles,
                             const int32_t* ntiles, int max_tiles, int tile_rows, const int32_t* offsets,
                             float limit, const float* weight, const int32_t* perm, bf16* h, cudaStream_t s);
void moe_grouped_down_cuda(const bf16* h, const ExpertMatrix& w2, const int2* tiles, const int32_t* ntiles,
                           int max_tiles, int tile_rows, const int32_t* offsets, float* y, cudaStream_t s);
// Few rows per expert (decode): a block per 16 output rows of an expert (FP4 W2: 64) streams its
// weights once per 8 activation rows (bf16 mma.sync, FP4 decoded in registers). Tiles: one per
// active expert (moe_group_cuda with a tile_rows of at least T·k). The same inputs and rounding
// points as the grouped kernels (bf16 xs and h, float32 accumulation), so that a decode step
// computes what a prefill computes.
//   h [n, F] (bf16) = swiglu(xs · W1_eᵀ, xs · W3_eᵀ) · weight[perm[r]];   y [n, D] = h · W2_eᵀ
void moe_gemv_swiglu_cuda(const bf16* xs, const ExpertMatrix& w1, const ExpertMatrix& w3, const int2* tiles,
                          const int32_t* ntiles, int max_tiles, const int32_t* offsets, float limit,
                          const float* weight, const int32_t* perm, bf16* h, cudaStream_t s);
// moe_gemv_swiglu_cuda on the rows xs = moe_gather_cuda(x [T, D] float32, perm, k) without the
// gather: each row read through perm and rounded to bf16 on load (the same h, bit for bit).
void moe_gemv_swiglu_gather_cuda(const float* x, int k, const ExpertMatrix& w1, const ExpertMatrix& w3,
                                 const int2* tiles, const int32_t* ntiles, int max_tiles, const int32_t* offsets,
                                 float limit, const float* weight, const int32_t* perm, bf16* h, cudaStream_t s);
// The same with the token rows already in bf16 (x [T, D], as the gather rounds them): each row read
// through perm; the same h, bit for bit.
void moe_gemv_swiglu_tokens_cuda(const bf16* x, int k, const ExpertMatrix& w1, const ExpertMatrix& w3,
                                 const int2* tiles, const int32_t* ntiles, int max_tiles, const int32_t* offsets,
                                 float limit, const float* weight, const int32_t* perm, bf16* h, cudaStream_t s);
// out_rows: y's row for sorted row r is out_rows[r] (perm: y in assignment order t·k + i, combined
// without inv), else r. It reads tiles and ntiles before its PDL wait, so they must have been
// written before the launch before it (the SwiGLU product, which waits for them) began.
void moe_gemv_down_cuda(const bf16* h, const ExpertMatrix& w2, const int2* tiles, const int32_t* ntiles,
                        int max_tiles, const int32_t* offsets, float* y, cudaStream_t s,
                        const int32_t* out_rows = nullptr);
// out [T, D] = shared [T, D] + Σ_i ys[inv[t·k + i]] (i in order); inv null: ys[t·k + i].
void moe_combine_cuda(const float* ys, const int32_t* inv, const float* shared, int64_t T, int k, int64_t D, float* out,
                      cudaStream_t s);

}  // namespace dsv4::cuda
