// dsv4 parity FIXTURE_DIR [--trace]: runs every case of a golden fixture folder and
// checks the logits (and MTP logits) by the fixture tolerance rule.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "cli.h"
#include "infer/parity.h"

namespace {

int run(int argc, char** argv) {
  CLI::App app{"Run a golden fixture folder through prefill and decode and compare with the reference"};
  std::string dir;
  bool trace = false;
  app.add_option("FIXTURE_DIR", dir, "folder with config.json, model.safetensors, cases.json, expected.safetensors")
      ->required();
  app.add_flag("--trace", trace, "per layer: where hidden states and indexer selections first differ");
  CLI11_PARSE(app, argc, argv);

  bool ok = true;
  for (const dsv4::ParityCase& pc : dsv4::run_parity(dir, trace)) {
    std::printf("%-8s batch %lld prefill %lld total %lld | logits mean|d| %.3g max|d| %.3g argmax %.2f%%",
                pc.name.c_str(), (long long)pc.batch, (long long)pc.prefill, (long long)pc.total, pc.logits.mean_abs,
                pc.logits.max_abs, 100 * pc.logits.argmax_agree);
    if (pc.has_mtp)
      std::printf(" | mtp mean|d| %.3g max|d| %.3g argmax %.2f%%", pc.mtp.mean_abs, pc.mtp.max_abs,
                  100 * pc.mtp.argmax_agree);
    std::printf(" | %s\n", pc.passes() ? "PASS" : "FAIL");
    for (const std::string& line : pc.trace) std::printf("%s\n", line.c_str());
    ok = ok && pc.passes();
  }
  std::printf("%s (tolerance: mean|d| <= 1e-3, max|d| <= 0.25, argmax >= 99%%)\n", ok ? "parity: PASS" : "parity: FAIL");
  return ok ? 0 : 1;
}

}  // namespace

DSV4_COMMAND(parity, "parity", "check a golden fixture folder (prefill, decode, MTP) against the reference", run);
