// CPU forward benchmark: prefill and decode tokens/s on one core and on all cores, for
// the tiny-fp8 fixture model and a synthetic 'small' V4 (D = 1024, 8 layers in the
// Flash pattern, 64 experts). Correctness first: decode logits must match a prefill's.
//   bench_forward [FIXTURES_DIR] [--quick]
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "infer/parity.h"
#include "model/model.h"

extern "C" void openblas_set_num_threads(int);

using namespace dsv4;

namespace {

ModelConfig small_config() {
  ModelConfig c;
  c.vocab_size = 32768;
  c.hidden_size = 1024;
  c.moe_intermediate_size = 512;
  c.num_hidden_layers = 8;
  c.num_hash_layers = 2;
  c.num_nextn_predict_layers = 1;
  c.num_attention_heads = 16;
  c.n_routed_experts = 64;
  c.num_experts_per_tok = 6;
  c.routed_scaling_factor = 1.5f;
  c.swiglu_limit = 10.0f;
  c.q_lora_rank = 512;
  c.head_dim = 512;
  c.qk_rope_head_dim = 64;
  c.o_groups = 4;
  c.o_lora_rank = 256;
  c.sliding_window = 128;
  c.compress_ratios = {0, 0, 4, 128, 4, 128, 4, 128, 0};  // Flash pattern, + MTP
  c.compress_rope_theta = 160000.0f;
  c.rope_theta = 10000.0f;
  c.yarn_factor = 16.0f;
  c.yarn_original_max_pos = 65536;
  c.index_n_heads = 16;
  c.index_head_dim = 128;
  c.index_topk = 512;
  c.hc_mult = 4;
  c.hc_sinkhorn_iters = 20;
  c.max_position_embeddings = 1 << 20;
  return c;
}

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

struct Result { double prefill_tps, decode_tps; };

// `strict`: the fixture tolerance rule (for reference weights). A randomly initialized
// 64-expert model amplifies float noise (FP8 rounding flips, near-tied routing), so for it
// only argmax agreement >= 95% is required and the differences are printed.
Result measure(const Model& m, int threads, int64_t prefill, int64_t decode, bool strict) {
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
  const int64_t V = m.config().vocab_size;
  std::vector<int64_t> ids(prefill + decode);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = (i * 7919 + 13) % V;
  SequenceState s = m.new_state();
  double t0 = now();
  m.forward({{&s, std::vector<int64_t>(ids.begin(), ids.begin() + prefill)}});
  double t1 = now();
  Tensor dec({decode, V});
  for (int64_t i = 0; i < decode; ++i) {
    ForwardOut o = m.forward({{&s, {ids[prefill + i]}}});
    std::copy(o.logits.data.begin(), o.logits.data.end(), dec.ptr() + i * V);
  }
  double t2 = now();
  // Check: the decode steps reproduce a prefill of the whole sequence (fixture tolerance rule).
  SequenceState s2 = m.new_state();
  ForwardOut full = m.forward({{&s2, ids}});
  LogitStats st = compare_logits(dec.ptr(), full.logits.ptr() + prefill * V, decode, V);
  std::fprintf(stderr, "check: decode vs prefill mean|d| %.3g max|d| %.3g argmax %.1f%%\n", st.mean_abs, st.max_abs,
               100 * st.argmax_agree);
  if (strict ? !st.passes() : st.argmax_agree < 0.95) {
    std::fprintf(stderr, "bench_forward: decode does not match prefill\n");
    std::exit(1);
  }
  return {prefill / (t1 - t0), decode / (t2 - t1)};
}

void report(const char* name, const Model& m, int64_t prefill, int64_t decode, bool strict) {
  const int all = omp_get_num_procs();
  for (int threads : {1, all}) {
    Result r = measure(m, threads, prefill, decode, strict);
    std::printf("| %-22s | %7d | %7lld | %12.1f | %6lld | %11.2f |\n", name, threads, (long long)prefill,
                r.prefill_tps, (long long)decode, r.decode_tps);
    if (all == 1) break;
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string fixtures = argc > 1 && argv[1][0] != '-' ? argv[1] : "../shared/fixtures";
  bool quick = false;
  for (int i = 1; i < argc; ++i) quick |= !std::strcmp(argv[i], "--quick");
  std::printf("| model                  | threads | prefill | prefill tok/s | decode | decode tok/s |\n");
  std::printf("|------------------------|---------|---------|---------------|--------|--------------|\n");
  Model tiny = Model::load(fixtures + "/tiny-fp8");
  report("tiny-fp8 (fixture)", tiny, 256, 64, true);
  ModelConfig c = small_config();
  Model small(c, init_params(c, 1));
  report("small (D1024, 8L, 64E)", small, quick ? 256 : 1024, quick ? 16 : 32, false);
  return 0;
}
