// dsv4 train-memory CONFIG.json [--seq T] [--batch B] [--phase P] [--keep-tapes]: the activation
// memory of one training step of that model, from the training graph's own accounting
// (activation_footprint: the sizes its tapes allocate).
#include <CLI/CLI.hpp>
#include <cstdio>

#include "cli.h"
#include "io/config.h"
#include "train/train_graph.h"

namespace {

int run(int argc, char** argv) {
  using namespace dsv4;
  CLI::App app{"Activation memory of a training step (per token), from the training graph's accounting"};
  app.name(argv[0]);
  std::string config_path, phase = "sparse";
  int64_t B = 1, T = 4096;
  bool keep_tapes = false;
  app.add_option("CONFIG", config_path, "config.json of the model")->required();
  app.add_option("--seq", T, "tokens per sequence (4096)");
  app.add_option("--batch", B, "sequences per step (1)");
  app.add_option("--phase", phase, "sparse, dense or indexer_warmup");
  app.add_flag("--keep-tapes", keep_tapes, "keep every block's tape instead of recomputing it");
  CLI11_PARSE(app, argc, argv);
  TrainOptions opt;
  opt.recompute = !keep_tapes;
  if (phase == "dense") opt.phase = AttnPhase::Dense;
  else if (phase == "indexer_warmup") opt.phase = AttnPhase::IndexerWarmup;
  else DSV4_CHECK(phase == "sparse", "train-memory", "unknown --phase '", phase, "' (sparse, dense, indexer_warmup)");
  const ModelConfig c = load_config(config_path);
  const TrainMemory m = activation_footprint(c, opt, B, T);
  const double tok = static_cast<double>(m.tokens), MiB = 1024.0 * 1024.0;
  std::printf("%s, batch [%lld, %lld], %s phase, %s\n", config_path.c_str(), static_cast<long long>(B),
              static_cast<long long>(T), phase.c_str(), keep_tapes ? "tapes kept" : "blocks recomputed");
  std::printf("kept      %10.3f MiB/token  %12.1f MiB\n", m.kept_bytes / tok / MiB, m.kept_bytes / MiB);
  std::printf("transient %10.3f MiB/token  %12.1f MiB\n", m.transient_bytes / tok / MiB, m.transient_bytes / MiB);
  std::printf("peak      %10.3f MiB/token  %12.1f MiB\n", m.peak_bytes() / tok / MiB, m.peak_bytes() / MiB);
  return 0;
}

}  // namespace

DSV4_COMMAND(train_memory, "train-memory", "activation memory of a training step, per token", run);
