// dsv4 bench [--layers L] [--experts E] [--batches 1,8,64] [--contexts 4096,65536] [--prefill N] [--chunk C]
// [--steps S] [--long N] [--compare-pdl] [--compare-side] [--json FILE]: the CUDA forward on a synthetic V4-Flash-shaped model.
#include <CLI/CLI.hpp>

#include "cli.h"
#include "model/cuda_bench.h"

namespace {

int run(int argc, char** argv) {
  CLI::App app{"Benchmark the CUDA forward (prefill and decode) on a synthetic DeepSeek-V4-Flash-shaped model"};
  dsv4::BenchOptions o;
  bool no_prefill = false, no_decode = false;
  app.add_option("--layers", o.layers, "main blocks (Flash's pattern truncated)")->capture_default_str();
  app.add_option("--experts", o.experts, "routed experts per layer")->capture_default_str();
  app.add_option("--batches", o.batches, "decode batch sizes")->delimiter(',');
  app.add_option("--contexts", o.contexts, "decode context lengths")->delimiter(',');
  app.add_option("--prefill", o.prefill_tokens, "prefill length")->capture_default_str();
  app.add_option("--chunk", o.prefill_chunk, "prefill chunk length (0: the whole prefill in one forward)")
      ->capture_default_str();
  app.add_option("--steps", o.decode_steps, "timed decode steps per point")->capture_default_str();
  app.add_option("--long", o.long_tokens,
                 "one sequence of this many tokens: chunked prefill (--chunk), then decode (--steps), with memory use");
  app.add_option("--json", o.json, "write the numbers to this JSON file");
  app.add_flag("--no-prefill", no_prefill, "skip the prefill benchmark");
  app.add_flag("--no-decode", no_decode, "skip the decode benchmarks");
  app.add_flag("--compare-pdl", o.compare_pdl,
               "time each decode point also without programmatic dependent launch (kernels strictly one after another)");
  app.add_flag("--compare-side", o.compare_side,
               "time each decode point also without the side streams (one chain of kernels, no parallel branches)");
  CLI11_PARSE(app, argc, argv);
  o.prefill = !no_prefill;
  o.decode = !no_decode;
  dsv4::run_cuda_bench(o);  // checks the options before it looks for a GPU
  return 0;
}

}  // namespace

DSV4_COMMAND(bench, "bench", "benchmark the CUDA forward on a synthetic V4-Flash-shaped model", run);
