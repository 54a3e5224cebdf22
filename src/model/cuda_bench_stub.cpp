// flash_config for every build; run_cuda_bench in a build without CUDA: a clear error.
#include "model/cuda_bench.h"

#include <algorithm>

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

#ifndef DSV4_WITH_CUDA
void run_cuda_bench(const BenchOptions&) {
  throw Error("bench", "this dsv4 was built without CUDA: reconfigure with -DDSV4_CUDA=ON on a machine with nvcc");
}
#endif

}  // namespace dsv4
