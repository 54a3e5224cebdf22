// `dsv4 bench`: the CUDA forward on a synthetic model with DeepSeek-V4-Flash shapes and layer
// pattern (random weights in the release formats: FP8 with 128×128 scales, packed FP4
// experts): decode tokens/s per batch and context with the bytes each step reads against a
// copy kernel's measured bandwidth, prefill tokens/s with the linears' TFLOP/s against a
// measured bf16 GEMM peak, and the compact caches' bytes per token against the theory.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/config.h"

namespace dsv4 {

struct BenchOptions {
  int layers = 20;     // the first `layers` of Flash's pattern (43 do not fit one H200 with 256 experts)
  int experts = 256;
  std::vector<int> batches = {1, 8, 64};
  std::vector<int64_t> contexts = {4096, 65536, 1048576};
  int64_t prefill_tokens = 8192;
  int64_t prefill_chunk = 8192;  // prefill in chunks of this many tokens (0: one forward)
  int decode_steps = 8;
  bool prefill = true, decode = true;
  // Each decode point also with programmatic dependent launch off (cuda/launch.h), side by side.
  bool compare_pdl = false;
  // ... and without the side streams (decode's parallel branches).
  bool compare_side = false;
  // The long run: one sequence prefilled with this many tokens (in chunks of prefill_chunk),
  // then decoded, with progress, memory in use and the step time against a 4096-token
  // sequence's (0: none).
  int64_t long_tokens = 0;
  std::string json;  // where to write the numbers as JSON ("" = nowhere)
};

// V4-Flash (checkpoint.md) with `layers` main blocks (the pattern truncated) and `experts` routed experts.
ModelConfig flash_config(int layers = 43, int experts = 256);

// The options' ranges (layers 1..43, experts 6..256, batches, contexts, steps and lengths at least
// 1, a JSON path that can be written), before anything runs: a dsv4::Error names the first
// option out of range.
void check_bench_options(const BenchOptions& o);

// Checks the options, then prints the results (a table last); throws a dsv4::Error in a build
// without CUDA or on a machine without a usable GPU.
void run_cuda_bench(const BenchOptions& o);

}  // namespace dsv4
