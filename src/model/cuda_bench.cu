// dsv4 bench on the GPU (cuda_bench.h). Every number comes from this run: the ceilings (a
// device-to-device copy, a cuBLASLt bf16 8192³ GEMM) are measured before the model is timed.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <random>

#include "cuda/launch.h"
#include "cuda/read_kernels.cuh"
#include "io/durable_file.h"
#include "model/cuda_bench.h"
#include "model/cuda_model_impl.cuh"

namespace dsv4 {

namespace {

using namespace dsv4::cuda;

struct Timer {
  cudaEvent_t a, b;
  cudaStream_t s;
  explicit Timer(cudaStream_t st) : s(st) {
    DSV4_CUDA_CHECK(cudaEventCreate(&a));
    DSV4_CUDA_CHECK(cudaEventCreate(&b));
    DSV4_CUDA_CHECK(cudaEventRecord(a, s));
  }
  double ms() {
    DSV4_CUDA_CHECK(cudaEventRecord(b, s));
    DSV4_CUDA_CHECK(cudaEventSynchronize(b));
    float t = 0;
    DSV4_CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return t;
  }
};

// The best of 5 timings of `launch` (milliseconds) after one warm-up.
template <typename F>
double best_of_5_ms(cudaStream_t s, F&& launch) {
  double best = 1e30;
  for (int i = 0; i < 6; ++i) {
    Timer t(s);
    launch();
    const double ms = t.ms();
    if (i > 0) best = std::min(best, ms);
  }
  return best;
}

// Bytes read + written per second by cudaMemcpy of 2 GiB.
double copy_bandwidth(cudaStream_t s) {
  const size_t n = size_t(2) << 30;
  DeviceArray<char> a(n), b(n);
  DSV4_CUDA_CHECK(cudaMemsetAsync(a.get(), 1, n, s));
  const double ms = best_of_5_ms(
      s, [&] { DSV4_CUDA_CHECK(cudaMemcpyAsync(b.get(), a.get(), n, cudaMemcpyDeviceToDevice, s)); });
  return 2.0 * n / (ms * 1e-3);
}

// Bytes read per second over 2 GiB: the roofline of a decode step, which reads weights and caches
// and writes almost nothing. The best of two kernels, 12 timed runs each, alternating, after
// ~100 ms of reads that bring the clocks up. Until the twenty-sixth session this was one kernel
// (one load a thread in flight), best of 5 right after the copy test: it printed ~3.9-3.95 TB/s
// where the same kernel reads 4.44 TB/s once the clocks are up, and 4 loads in flight 4.55
// (bench/results/2026-11-30-cuda-26.md): every "% of the roofline" before was ~15% too high.
struct ReadCeiling {
  double one = 0, four = 0;  // bytes/s: one load a thread in flight, four
  double best() const { return std::max(one, four); }
};
ReadCeiling read_bandwidth(cudaStream_t s) {
  const size_t n = size_t(2) << 30;
  DeviceArray<char> a(n);
  DeviceArray<unsigned> sink(1);
  DSV4_CUDA_CHECK(cudaMemsetAsync(a.get(), 1, n, s));
  int sms = 0;
  DSV4_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const auto* p = reinterpret_cast<const uint4*>(a.get());
  auto one = [&] { read_one_kernel<<<sms * 8, 512, 0, s>>>(p, n / 16, sink.get()); };
  auto four = [&] { read_kernel<4><<<sms * 4, 1024, 0, s>>>(p, n / 16, sink.get()); };
  for (int i = 0; i < 200; ++i) four();  // ~100 ms
  DSV4_CUDA_CHECK(cudaStreamSynchronize(s));
  double t1 = 1e30, t4 = 1e30;
  for (int i = 0; i < 12; ++i) {
    Timer a1(s);
    one();
    t1 = std::min(t1, a1.ms());
    Timer a4(s);
    four();
    t4 = std::min(t4, a4.ms());
  }
  ReadCeiling r;
  r.one = n / (t1 * 1e-3);
  r.four = n / (t4 * 1e-3);
  return r;
}

// bf16 × bf16 -> f32 GEMM, M = N = K = 8192, random data; median of 10 after 3 warm-ups.
double bf16_peak(Blas& blas, cudaStream_t s) {
  const int64_t n = 8192;
  DeviceArray<bf16> x(n * n), w(n * n);
  DeviceArray<float> y(n * n);
  fill_normal_bf16_cuda(x.get(), n * n, 1.0f, 1, s);
  fill_normal_bf16_cuda(w.get(), n * n, 1.0f, 2, s);
  GemmArgs g{GemmKind::BF16, n, n, n, x.get(), n, nullptr, w.get(), n, nullptr, y.get(), n};
  std::vector<double> times;
  for (int i = 0; i < 13; ++i) {
    Timer t(s);
    blas.gemm(g, s);
    const double ms = t.ms();
    if (i >= 3) times.push_back(ms);
  }
  std::sort(times.begin(), times.end());
  return 2.0 * n * n * n / (times[times.size() / 2] * 1e-3);
}

size_t tensor_bytes(const DTensor& t) { return t.bytes(); }

// Weight bytes one decode step reads: every dense matrix of every main block, the head, and
// the routed experts a batch of B tokens touches (expected distinct experts per layer with
// k of E picked per token: E · (1 − (1 − k/E)^B)).
double decode_weight_bytes(const DModel& w, const ModelConfig& c, int B) {
  double b = static_cast<double>(w.head.bytes()) + w.hc_head.fn.bytes();
  const double E = c.n_routed_experts, k = c.num_experts_per_tok;
  const double touched = E * (1.0 - std::pow(1.0 - k / E, B));
  for (const DBlock& l : w.layers) {
    const DAttn& a = l.attn;
    for (const DTensor* t : {&a.wq_a, &a.wq_b, &a.wkv, &a.wo_a, &a.wo_b, &a.idx_wq_b, &a.idx_wproj, &a.comp.wkv,
                             &a.comp.wgate, &a.idx_comp.wkv, &a.idx_comp.wgate, &l.moe.gate, &l.moe.sw1, &l.moe.sw2,
                             &l.moe.sw3})
      b += tensor_bytes(*t);
    b += l.hc_attn.fn.bytes() + l.hc_ffn.fn.bytes();
    b += touched * (l.moe.w1.bytes() + l.moe.w2.bytes() + l.moe.w3.bytes()) / E;
  }
  return b;
}

// Cache bytes one decode step reads per sequence at context C (model.md §5, §7): the window,
// every HCA entry, every indexer entry (all are scored) and the K selected CSA entries.
double decode_cache_bytes(const ModelConfig& c, int64_t C, bool compact) {
  double b = 0;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const int m = c.ratio(l);
    const CacheLayout L = cache_layout(c, m, C, compact);
    b += std::min<int64_t>(C + 1, c.sliding_window) * L.kv_row;
    if (m == 4) b += (C / 4) * L.idx_row + std::min<int64_t>(c.index_topk, C / 4) * L.kv_row;
    else if (m > 0) b += (C / m) * L.kv_row;
  }
  return b;
}

double theory_bytes_per_token(const ModelConfig& c, bool compact) {
  double b = 0;
  for (int l = 0; l < c.num_hidden_layers; ++l) b += cache_layout(c, c.ratio(l), 0, compact).bytes_per_token(c.ratio(l));
  return b;
}

std::string sections(const CudaModel::Profile& p) {
  std::vector<std::pair<double, std::string>> v;
  double total = 0;
  for (const auto& [name, ms] : p.section_ms) v.push_back({ms, name}), total += ms;
  std::sort(v.rbegin(), v.rend());
  std::string out;
  for (const auto& [ms, name] : v) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "%s%s %.2f ms (%.0f%%)", out.empty() ? "" : ", ", name.c_str(), ms, 100 * ms / total);
    out += buf;
  }
  return out;
}

std::vector<int64_t> random_tokens(std::mt19937& rng, int64_t n, int V) {
  std::vector<int64_t> ids(n);
  for (auto& i : ids) i = static_cast<int64_t>(rng() % static_cast<uint32_t>(V));
  return ids;
}

double mem_in_use_gib() {
  size_t free_b = 0, total_b = 0;
  DSV4_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  return (total_b - free_b) / 1073741824.0;
}

void accumulate(CudaModel::Profile& into, const CudaModel::Profile& p) {
  into.gemm_ms += p.gemm_ms, into.gemm_flop += p.gemm_flop, into.expert_ms += p.expert_ms, into.expert_flop += p.expert_flop;
  for (const auto& [name, ms] : p.section_ms) into.section_ms[name] += ms;
}

// Mean ms of `steps` graph-launched decode steps of sequence `seq` (after two warm-up steps).
double decode_ms(CudaModel& model, int seq, int steps, std::mt19937& rng, int V) {
  auto step = [&] { model.decode_step_graph({{seq, {static_cast<int64_t>(rng() % V)}}}); };
  step();
  step();
  DSV4_CUDA_CHECK(cudaStreamSynchronize(model.stream()));
  Timer t(model.stream());
  for (int i = 0; i < steps; ++i) step();
  return t.ms() / steps;
}

// The long run (BenchOptions::long_tokens): real chunked prefill of one sequence, then decode on
// it; the same for a 4096-token sequence, for the step ratio. The first decode steps after a long
// prefill run slower, every kernel alike (the weight-streaming ones too; the SM clock holds), so
// the ratio pairs the two sequences' steps measured after the prefill, alternately.
template <typename Add>
void long_run(CudaModel& model, const ModelConfig& c, const BenchOptions& o, double peak, double layer_scale,
              std::mt19937& rng, Add& add, std::vector<std::string>& table) {
  const int64_t P = o.long_tokens, chunk = o.prefill_chunk > 0 ? o.prefill_chunk : 8192, ref_tokens = 4096;
  const int steps = std::max(1, o.decode_steps);
  cudaStream_t s = model.stream();
  constexpr int kRounds = 3;  // alternate reference and long decode measurements after the prefill
  const int ref_seq = model.new_sequence(ref_tokens + (kRounds + 1) * (steps + 2) + 16);
  model.forward_on_device({{ref_seq, random_tokens(rng, ref_tokens, c.vocab_size)}});
  const double ref_ms_before = decode_ms(model, ref_seq, steps, rng, c.vocab_size);
  std::printf("long run: %lld tokens, chunks of %lld; decode at %lld tokens for reference: %.2f ms/step; memory in use "
              "%.1f GiB (weights %.1f GiB)\n",
              static_cast<long long>(P), static_cast<long long>(chunk), static_cast<long long>(ref_tokens),
              ref_ms_before, mem_in_use_gib(), model.weight_bytes() / 1073741824.0);
  std::fflush(stdout);
  const int seq = model.new_sequence(P + (kRounds + 1) * (steps + 2) + 16);
  std::printf("  sequence allocated: memory in use %.1f GiB\n", mem_in_use_gib());
  std::fflush(stdout);
  CudaModel::Profile prof;
  const auto t0 = std::chrono::steady_clock::now();
  auto since = [](auto t) { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count(); };
  double last_print = 0;
  for (int64_t p0 = 0; p0 < P; p0 += chunk) {
    const int64_t n = std::min(chunk, P - p0);
    model.set_profiling(true);
    model.forward_on_device({{seq, random_tokens(rng, n, c.vocab_size)}});
    model.set_profiling(false);
    accumulate(prof, model.take_profile());  // synchronizes the stream
    const double el = since(t0);
    if (el - last_print >= 15 || p0 + n == P) {
      last_print = el;
      std::printf("  prefill %lld / %lld tokens: %.0f s, %.0f tokens/s so far, memory in use %.1f GiB\n",
                  static_cast<long long>(p0 + n), static_cast<long long>(P), el, (p0 + n) / el, mem_in_use_gib());
      std::fflush(stdout);
    }
  }
  const double prefill_s = since(t0);
  const double mem_prefilled = mem_in_use_gib();
  const double dense_tf = prof.gemm_flop / (prof.gemm_ms * 1e-3) / 1e12;
  const double exp_tf = prof.expert_flop / (prof.expert_ms * 1e-3) / 1e12;
  std::printf("  prefill: %.1f s, %.0f tokens/s; dense linears %.0f TFLOP/s (%.0f%% of the bf16 peak), routed experts "
              "%.0f TFLOP/s\n  prefill time by section: %s\n",
              prefill_s, P / prefill_s, dense_tf, 100 * dense_tf * 1e12 / peak, exp_tf, sections(prof).c_str());
  // Medians of kRounds alternating measurements of the two sequences, in the same GPU state.
  std::vector<double> long_runs, ref_runs;
  for (int i = 0; i < kRounds; ++i) {
    long_runs.push_back(decode_ms(model, seq, steps, rng, c.vocab_size));
    ref_runs.push_back(decode_ms(model, ref_seq, steps, rng, c.vocab_size));
  }
  std::sort(long_runs.begin(), long_runs.end());
  std::sort(ref_runs.begin(), ref_runs.end());
  const double long_ms = long_runs[kRounds / 2], ref_ms = ref_runs[kRounds / 2];
  const double per_token = static_cast<double>(model.sequence_bytes(seq) - model.cache_fixed_bytes()) / P;
  auto rounds = [](const std::vector<double>& v) {
    std::string out;
    char buf[32];
    for (double ms : v) {
      std::snprintf(buf, sizeof buf, " %.3f", ms);
      out += buf;
    }
    return out;
  };
  std::printf("  decode at %lld tokens: %.2f ms/step, %.2fx the %lld-token step measured alternately with it (%.2f ms; "
              "%.2f ms before the prefill); caches %.0f bytes/token (%d layers); memory in use %.1f GiB\n"
              "  rounds (ms/step, sorted): long%s, 4K%s\n",
              static_cast<long long>(P), long_ms, long_ms / ref_ms, static_cast<long long>(ref_tokens), ref_ms,
              ref_ms_before, per_token, c.num_hidden_layers, mem_prefilled, rounds(long_runs).c_str(),
              rounds(ref_runs).c_str());
  model.free_sequence(seq);
  model.free_sequence(ref_seq);
  char row[260];
  std::snprintf(row, sizeof row,
                "| long run | %lld | 1 | prefill %.0f | %.0f | prefill %.0f s; decode %.2f ms/step = %.2fx the 4K step "
                "(%.2f ms, alternately after the prefill); %.1f GiB in use |",
                static_cast<long long>(P), P / prefill_s, P / prefill_s / layer_scale, prefill_s, long_ms,
                long_ms / ref_ms, ref_ms, mem_prefilled);
  table.push_back(row);
  add("long_tokens", static_cast<double>(P));
  add("long_prefill_s", prefill_s);
  add("long_prefill_tokens_per_s", P / prefill_s);
  add("long_decode_ms", long_ms);
  add("long_ref_decode_ms", ref_ms);
  add("long_ref_decode_ms_before_prefill", ref_ms_before);
  add("long_mem_GiB", mem_prefilled);
  add("long_cache_bytes_per_token", per_token);
}

}  // namespace

void run_cuda_bench(const BenchOptions& o) {
  check_bench_options(o);
  require_device(": dsv4 bench runs on the GPU");
  cudaDeviceProp prop{};
  DSV4_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, %.1f GiB\n", prop.name, prop.multiProcessorCount, prop.totalGlobalMem / 1073741824.0);
  std::vector<std::string> table;
  std::string json = "{";
  auto add = [&](const std::string& key, double v) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "%s\"%s\": %.6g", json.size() > 1 ? ", " : "", key.c_str(), v);
    json += buf;
  };

  cudaStream_t s0;
  DSV4_CUDA_CHECK(cudaStreamCreate(&s0));
  const double copy_bw = copy_bandwidth(s0);
  const ReadCeiling rc = read_bandwidth(s0);
  const double bw = rc.best();
  double peak = 0;
  {
    Blas blas;
    peak = bf16_peak(blas, s0);
  }
  std::printf("ceilings: read %.0f GB/s (the decode roofline: the best of %.0f with one load a thread in flight, %.0f "
              "with four), copy %.0f GB/s (read + write), bf16 GEMM 8192^3 %.0f TFLOP/s\n",
              bw / 1e9, rc.one / 1e9, rc.four / 1e9, copy_bw / 1e9, peak / 1e12);
  add("read_GBps", bw / 1e9);
  add("copy_GBps", copy_bw / 1e9);
  add("bf16_peak_TFLOPs", peak / 1e12);

  const ModelConfig full = flash_config(43, 256);
  const double kv_full = theory_bytes_per_token(full, true);
  std::printf("KV cache, V4-Flash 43 layers: %.0f bytes/token compact (float32 caches: %.0f); theory 3.85 KB\n",
              kv_full, theory_bytes_per_token(full, false));
  add("kv_bytes_per_token_flash43", kv_full);

  const ModelConfig c = flash_config(o.layers, o.experts);
  const auto t0 = std::chrono::steady_clock::now();
  CudaModel model(c, nullptr, nullptr, Precision::Fast, 7);
  const double init_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("synthetic model: %d layers (Flash pattern, first %d of 43), %d experts: %s (init %.1f s)\n", o.layers,
              o.layers, o.experts, model.describe().c_str(), init_s);
  const double layer_scale = 43.0 / o.layers;
  std::mt19937 rng(5);
  cudaStream_t s = model.stream();

  if (o.long_tokens > 0) long_run(model, c, o, peak, layer_scale, rng, add, table);

  if (o.prefill) {
    const int64_t P = o.prefill_tokens;
    const int warm = model.new_sequence(1024);
    model.forward_on_device({{warm, random_tokens(rng, 1024, c.vocab_size)}});
    model.free_sequence(warm);
    const int seq = model.new_sequence(P);
    std::vector<int64_t> ids = random_tokens(rng, P, c.vocab_size);
    model.set_profiling(true);
    DSV4_CUDA_CHECK(cudaStreamSynchronize(s));
    // Chunked prefill (the caches carry over between chunks, as in serving): activations stay
    // bounded by the chunk, so long prompts fit next to the weights.
    const int64_t chunk = o.prefill_chunk > 0 ? o.prefill_chunk : P;
    Timer t(s);
    for (int64_t p0 = 0; p0 < P; p0 += chunk) {
      const int64_t n = std::min(chunk, P - p0);
      model.forward_on_device({{seq, std::vector<int64_t>(ids.begin() + p0, ids.begin() + p0 + n)}});
    }
    const double ms = t.ms();
    model.set_profiling(false);
    const CudaModel::Profile p = model.take_profile();
    model.free_sequence(seq);
    const double tps = P / (ms * 1e-3);
    const double dense_tf = p.gemm_flop / (p.gemm_ms * 1e-3) / 1e12, exp_tf = p.expert_flop / (p.expert_ms * 1e-3) / 1e12;
    std::printf(
        "prefill %lld tokens in chunks of %lld: %.1f ms, %.0f tokens/s (%.0f tokens/s scaled to 43 layers); dense linears %.1f ms at %.0f "
        "TFLOP/s (%.0f%% of the bf16 peak); routed experts %.1f ms at %.0f TFLOP/s (%.0f%%); other %.1f ms\n",
        static_cast<long long>(P), static_cast<long long>(chunk), ms, tps, tps / layer_scale, p.gemm_ms, dense_tf, 100 * dense_tf * 1e12 / peak,
        p.expert_ms, exp_tf, 100 * exp_tf * 1e12 / peak, ms - p.gemm_ms - p.expert_ms);
    char row[200];
    std::snprintf(row, sizeof row, "| prefill | %lld | 1 | %.0f | %.0f | dense %.0f TF/s (%.0f%%), experts %.0f TF/s (%.0f%%) |",
                  static_cast<long long>(P), tps, tps / layer_scale, dense_tf, 100 * dense_tf * 1e12 / peak, exp_tf,
                  100 * exp_tf * 1e12 / peak);
    table.push_back(row);
    std::printf("  prefill time by section: %s\n", sections(p).c_str());
    add("prefill_tokens_per_s", tps);
    add("prefill_dense_TFLOPs", dense_tf);
    add("prefill_expert_TFLOPs", exp_tf);
    // The same prompt as dsv4 generate feeds it (chunks of 256, the logits to the host): through
    // forward_last (the head on each chunk's last row) and through forward (every row's logits).
    auto fed = [&](bool last_only) {
      const int sq = model.new_sequence(P);
      DSV4_CUDA_CHECK(cudaStreamSynchronize(s));
      const auto t0 = std::chrono::steady_clock::now();
      for (int64_t p0 = 0; p0 < P; p0 += 256) {
        const std::vector<SeqChunk> part = {{sq, std::vector<int64_t>(ids.begin() + p0, ids.begin() + std::min(P, p0 + 256))}};
        if (last_only) model.forward_last(part);
        else model.forward(part, false, nullptr);
      }
      model.free_sequence(sq);
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    };
    const double last_s = fed(true), all_s = fed(false);
    std::printf("  as dsv4 generate feeds it (chunks of 256): %.0f tokens/s with the last row's logits only, %.0f with "
                "every row's\n",
                P / last_s, P / all_s);
    add("prefill_generate_tokens_per_s", P / last_s);
  }

  if (o.decode) {
    std::map<int, double> first_ms;  // per batch: the step time at the first context measured
    for (int64_t C : o.contexts)
      for (int B : o.batches) {
        size_t free_b = 0, total_b = 0;
        DSV4_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
        const double need = static_cast<double>(B) * (model.cache_bytes_per_token() * C + model.cache_fixed_bytes());
        if (need > 0.8 * free_b) {
          std::printf("decode B=%d C=%lld: skipped (its caches need %.1f GiB, %.1f GiB free)\n", B,
                      static_cast<long long>(C), need / 1073741824.0, free_b / 1073741824.0);
          continue;
        }
        std::vector<int> seqs;
        for (int b = 0; b < B; ++b) {
          // eager steps, then graph steps: 2 + 3 runs, again with --compare-pdl and --compare-side
          seqs.push_back(model.new_sequence(C + 10 * o.decode_steps + 32));
          model.fake_context(seqs.back(), C, 100 + b);
        }
        bool graph = false;
        auto step = [&] {
          std::vector<SeqChunk> batch;
          for (int id : seqs) batch.push_back({id, {static_cast<int64_t>(rng() % c.vocab_size)}});
          if (graph) model.decode_step_graph(batch);
          else model.forward_on_device(batch);
        };
        step();
        DSV4_CUDA_CHECK(cudaStreamSynchronize(s));
        Timer te(s);
        for (int i = 0; i < 3; ++i) step();
        const double eager_ms = te.ms() / 3;
        graph = true;
        // Graph steps: two to capture and warm up, then the timed ones: the median of three runs of
        // decode_steps each. One run of the first configuration after the prefill read 2.68 to 2.84 ms
        // at B=1 4K from session to session (bench/results/2026-11-30-cuda-29.md).
        auto timed_graph_steps = [&] {
          step();
          step();
          double runs[3];
          for (double& r : runs) {
            DSV4_CUDA_CHECK(cudaStreamSynchronize(s));
            Timer t(s);
            for (int i = 0; i < o.decode_steps; ++i) step();
            r = t.ms() / o.decode_steps;
          }
          std::sort(runs, runs + 3);
          return runs[1];
        };
        const double ms = timed_graph_steps();
        double no_pdl_ms = 0, no_side_ms = 0;
        if (o.compare_pdl && pdl_enabled()) {  // the same graph step captured without PDL
          set_pdl(false);
          no_pdl_ms = timed_graph_steps();
          set_pdl(true);
          step();  // re-captured with PDL for what follows
        }
        if (o.compare_side) {  // the same graph step without the side streams
          model.set_side_streams(false);
          no_side_ms = timed_graph_steps();
          model.set_side_streams(true);
          step();
        }
        const CudaModel::GraphStats gs = model.graph_stats();
        graph = false;
        // The same steps through forward(), as dsv4 generate runs them: the graph replayed and the
        // logits copied to the host after each step.
        double fwd_ms = 0;
        {
          auto fwd_step = [&] {
            std::vector<SeqChunk> batch;
            for (int id : seqs) batch.push_back({id, {static_cast<int64_t>(rng() % c.vocab_size)}});
            model.forward(batch, false, nullptr);
          };
          fwd_step();
          fwd_step();
          Timer t(s);
          for (int i = 0; i < o.decode_steps; ++i) fwd_step();
          fwd_ms = t.ms() / o.decode_steps;
        }
        const double bytes = decode_weight_bytes(model.weights(), c, B) + B * decode_cache_bytes(c, C, true);
        const double tps = B / (ms * 1e-3), frac = bytes / (ms * 1e-3) / bw;
        std::printf("decode B=%d C=%lld: %.2f ms/step (CUDA graph; eager launches %.2f ms), %.0f tokens/s (%.0f scaled to "
                    "43 layers), %.2f GB read/step, %.0f%% of the measured read bandwidth\n",
                    B, static_cast<long long>(C), ms, eager_ms, tps, tps / layer_scale, bytes / 1e9, 100 * frac);
        std::printf("  graph: %zu nodes, %zu edges, %zu of them programmatic (PDL); through forward() with the logits "
                    "to the host (dsv4 generate's step): %.2f ms/step\n",
                    gs.nodes, gs.edges, gs.programmatic, fwd_ms);
        if (no_side_ms > 0)
          std::printf("  without the side streams: %.2f ms/step (they save %.1f%%)\n", no_side_ms,
                      100 * (1 - ms / no_side_ms));
        if (no_pdl_ms > 0) {
          std::printf("  without programmatic dependent launch: %.2f ms/step (PDL saves %.1f%%)\n", no_pdl_ms,
                      100 * (1 - ms / no_pdl_ms));
          add(str("decode_nopdl_ms_B", B, "_C", C), no_pdl_ms);
        }
        if (!first_ms.count(B)) first_ms[B] = ms;
        char row[240];
        std::snprintf(row, sizeof row,
                      "| decode | %lld | %d | %.0f | %.0f | %.2f ms/step (eager %.2f), %.2f GB/step, %.0f%% of the read "
                      "roofline, %.2fx the first context's step |",
                      static_cast<long long>(C), B, tps, tps / layer_scale, ms, eager_ms, bytes / 1e9, 100 * frac,
                      ms / first_ms[B]);
        table.push_back(row);
        add(str("decode_tps_B", B, "_C", C), tps);
        add(str("decode_ms_B", B, "_C", C), ms);
        add(str("decode_eager_ms_B", B, "_C", C), eager_ms);
        add(str("decode_forward_ms_B", B, "_C", C), fwd_ms);
        add(str("decode_GB_B", B, "_C", C), bytes / 1e9);
        if (B == o.batches.front() || B == o.batches.back()) {
          model.set_profiling(true);
          step();
          model.set_profiling(false);
          std::printf("  one step by section: %s\n", sections(model.take_profile()).c_str());
        }
        if (B == o.batches.front()) {
          const double measured = static_cast<double>(model.sequence_bytes(seqs[0]) - model.cache_fixed_bytes()) / C;
          size_t free_now = 0, total_now = 0;
          DSV4_CUDA_CHECK(cudaMemGetInfo(&free_now, &total_now));
          std::printf("  caches of one sequence at %lld tokens: %.0f bytes/token (the code's accounting, %d layers); "
                      "device memory in use %.1f GiB of %.1f (weights %.1f GiB)\n",
                      static_cast<long long>(C), measured, o.layers, (total_now - free_now) / 1073741824.0,
                      total_now / 1073741824.0, model.weight_bytes() / 1073741824.0);
          add(str("mem_used_GiB_C", C), (total_now - free_now) / 1073741824.0);
        }
        for (int id : seqs) model.free_sequence(id);
      }
  }
  json += "}";
  std::printf("\n| phase | context | batch | tokens/s (%d layers) | tokens/s scaled to 43 | notes |\n|---|---|---|---|---|---|\n",
              o.layers);
  for (const std::string& r : table) std::printf("%s\n", r.c_str());
  cudaStreamDestroy(s0);
  if (!o.json.empty()) write_file_synced(o.json, json + "\n");  // after the table: a failure loses no numbers
}

}  // namespace dsv4
