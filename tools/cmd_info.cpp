// dsv4 info (-c CONFIG_JSON | -m MODEL_DIR): the model's shape, parameter counts from the
// tensor table, and the per-sequence decoding state the CPU engine keeps (bytes per
// token and per sequence at several context lengths), from the engine's own accounting.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "cli.h"
#include "io/config.h"
#include "model/state.h"
#include "model/tensor_table.h"

namespace {

std::string human(double bytes) {
  const char* unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) bytes /= 1024, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f %s", bytes, unit[u]);
  return buf;
}

int run(int argc, char** argv) {
  CLI::App app{"Show a model's shape, parameter counts and per-sequence state memory"};
  std::string config_path, model_dir;
  std::vector<int64_t> lengths = {4096, 65536, 1048576};
  app.add_option("-c,--config", config_path, "config.json");
  app.add_option("-m,--model", model_dir, "model folder (release layout)");
  app.add_option("--tokens", lengths, "context lengths to report");
  CLI11_PARSE(app, argc, argv);
  if (config_path.empty() == model_dir.empty()) {
    std::fprintf(stderr, "dsv4 info: give exactly one of -c CONFIG_JSON or -m MODEL_DIR\n");
    return 2;
  }
  const dsv4::ModelConfig c = dsv4::load_config(config_path.empty() ? model_dir + "/config.json" : config_path);

  int64_t total = 0, routed = 0;
  for (const dsv4::TensorSpec& s : dsv4::tensor_table(c)) {
    if (s.name.rfind("mtp.", 0) == 0) continue;  // the MTP block is not part of the main model
    total += dsv4::numel_of(s.shape);
    if (s.name.find(".experts.") != std::string::npos) routed += dsv4::numel_of(s.shape);
  }
  const int64_t active = total - routed + routed * c.num_experts_per_tok / c.n_routed_experts;
  int csa = 0, hca = 0, window = 0;
  for (int l = 0; l < c.num_hidden_layers; ++l) (c.ratio(l) == 4 ? csa : c.ratio(l) > 0 ? hca : window)++;
  std::printf("layers %d (CSA %d, HCA %d, window-only %d), D %d, heads %d x %d, experts %d (top %d), hc_mult %d\n",
              c.num_hidden_layers, csa, hca, window, c.hidden_size, c.num_attention_heads, c.head_dim,
              c.n_routed_experts, c.num_experts_per_tok, c.hc_mult);
  std::printf("parameters (main model): %.3f B total, %.3f B active per token\n", total / 1e9, active / 1e9);

  const dsv4::StateFootprint f = dsv4::state_footprint(c);
  std::printf("\ndecoding state per sequence (CPU engine, float32), main model:\n");
  std::printf("  window rings          %s (fixed)\n", human(f.window_bytes).c_str());
  std::printf("  pending compressor    at most %s\n", human(f.max_pending_bytes).c_str());
  std::printf("  compressed entries    %.1f bytes per token (main + indexer, all layers)\n", f.bytes_per_token);
  for (int64_t n : lengths)
    std::printf("  at %8lld tokens     %s per sequence (%.1f bytes/token)\n", static_cast<long long>(n),
                human(static_cast<double>(f.total(n))).c_str(), static_cast<double>(f.total(n)) / n);
  return 0;
}

}  // namespace

DSV4_COMMAND(info, "info", "model shape, parameter counts and per-sequence state memory", run);
