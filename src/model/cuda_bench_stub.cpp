// flash_config and the options' checks for every build; run_cuda_bench in a build without CUDA: a
// clear error.
#include "model/cuda_bench.h"

#include <algorithm>
#include <cstdio>
#include <fstream>

#include "core/error.h"

namespace dsv4 {

ModelConfig flash_config(int layers, int experts) {
  ModelConfig c;
  c.vocab_size = 129280;
  c.hidden_size = 4096;
  c.moe_intermediate_size = 2048;
  c.num_hidden_layers = layers;
  c.num_hash_layers = std::min(3, layers);
  c.num_nextn_predict_layers = 1;
  c.num_attention_heads = 64;
  c.n_routed_experts = experts;
  c.num_experts_per_tok = 6;
  c.scoring_func = ScoringFunc::SqrtSoftplus;
  c.routed_scaling_factor = 1.5f;
  c.swiglu_limit = 10.0f;
  c.q_lora_rank = 1024;
  c.head_dim = 512;
  c.qk_rope_head_dim = 64;
  c.o_groups = 8;
  c.o_lora_rank = 1024;
  c.sliding_window = 128;
  // [0, 0, (4, 128) × 20, 4] + the MTP block's 0, truncated to `layers`
  for (int l = 0; l < layers; ++l) c.compress_ratios.push_back(l < 2 ? 0 : l == 42 ? 4 : (l % 2 == 0 ? 4 : 128));
  c.compress_ratios.push_back(0);
  c.compress_rope_theta = 160000.0f;
  c.rope_theta = 10000.0f;
  c.yarn_factor = 16.0f;
  c.yarn_original_max_pos = 65536;
  c.index_n_heads = 64;
  c.index_head_dim = 128;
  c.index_topk = 512;
  c.hc_mult = 4;
  c.hc_sinkhorn_iters = 20;
  c.max_position_embeddings = 1048576;
  c.expert_fp4 = true;
  c.fp8_weights = true;
  return c;
}

void check_bench_options(const BenchOptions& o) {
  const ModelConfig full = flash_config();
  DSV4_CHECK(o.layers >= 1 && o.layers <= full.num_hidden_layers, "bench", "--layers ", o.layers,
             ": V4-Flash has ", full.num_hidden_layers, " main layers; take 1 to ", full.num_hidden_layers);
  DSV4_CHECK(o.experts >= full.num_experts_per_tok && o.experts <= full.n_routed_experts, "bench", "--experts ",
             o.experts, ": take ", full.num_experts_per_tok, " (the experts a token uses) to ", full.n_routed_experts,
             " (Flash's)");
  DSV4_CHECK(o.decode_steps >= 1, "bench", "--steps ", o.decode_steps, ": at least 1 timed step");
  DSV4_CHECK(o.prefill_chunk >= 0, "bench", "--chunk ", o.prefill_chunk, ": 0 (one forward) or a positive length");
  DSV4_CHECK(!o.prefill || o.prefill_tokens >= 1, "bench", "--prefill ", o.prefill_tokens,
             ": at least 1 token (or --no-prefill)");
  DSV4_CHECK(o.long_tokens >= 0, "bench", "--long ", o.long_tokens, ": a number of tokens (0: no long run)");
  if (o.decode) {
    DSV4_CHECK(!o.batches.empty() && !o.contexts.empty(), "bench",
               "--batches and --contexts need a value each (or --no-decode)");
    for (int b : o.batches) DSV4_CHECK(b >= 1, "bench", "--batches: ", b, " is not a batch size");
    for (int64_t c : o.contexts) DSV4_CHECK(c >= 1, "bench", "--contexts: ", c, " is not a context length");
  }
  if (!o.json.empty()) {  // now, not after the runs: an unwritable path would lose their numbers
    const bool existed = static_cast<bool>(std::ifstream(o.json));
    const bool ok = static_cast<bool>(std::ofstream(o.json, std::ios::app));
    if (ok && !existed) std::remove(o.json.c_str());
    DSV4_CHECK(ok, "bench", "--json ", o.json, ": cannot be written");
  }
}

#ifndef DSV4_WITH_CUDA
void run_cuda_bench(const BenchOptions& o) {
  check_bench_options(o);
  throw Error("bench", "this dsv4 was built without CUDA: reconfigure with -DDSV4_CUDA=ON on a machine with nvcc");
}
#endif

}  // namespace dsv4
