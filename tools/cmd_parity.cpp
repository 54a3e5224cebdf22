// dsv4 parity FIXTURE_DIR [--trace] [--device cpu|cuda] [--precision f32|fast]: runs every case
// of a golden fixture folder and checks the logits (and MTP logits) by the fixture tolerance
// rule (f32), or by the fast path's rule (argmax agreement >= 95%).
#include <CLI/CLI.hpp>
#include <cstdio>

#include "cli.h"
#include "infer/parity.h"
#include "model/backend.h"
#include "model/model.h"

namespace {

int run(int argc, char** argv) {
  CLI::App app{"Run a golden fixture folder through prefill and decode and compare with the reference"};
  std::string dir;
  bool trace = false;
  std::string device = "cpu", precision = "f32";
  app.add_option("FIXTURE_DIR", dir, "folder with config.json, model.safetensors, cases.json, expected.safetensors")
      ->required();
  app.add_flag("--trace", trace, "per layer: where hidden states and indexer selections first differ");
  app.add_option("--device", device, "cpu (the float32 oracle) or cuda")->capture_default_str();
  app.add_option("--precision", precision, "f32 (the spec's float32) or fast (bf16/FP8/FP4, compact caches; cuda only)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  const dsv4::Device dev = dsv4::parse_device(device);
  const dsv4::Precision prec = dsv4::parse_precision(precision);
  dsv4::Model model = dsv4::Model::load(dir);
  std::unique_ptr<dsv4::Backend> backend = dsv4::make_backend(dev, model, prec, dir);
  std::printf("backend: %s\n", backend->describe().c_str());
  const bool fast = prec == dsv4::Precision::Fast;
  bool ok = true;
  const std::vector<dsv4::ParityCase> cases = dsv4::run_parity(dir, trace, *backend, fast);
  for (const dsv4::ParityCase& pc : cases) {
    std::printf("%-8s batch %lld prefill %lld total %lld | logits mean|d| %.3g max|d| %.3g argmax %.2f%%",
                pc.name.c_str(), (long long)pc.batch, (long long)pc.prefill, (long long)pc.total, pc.logits.mean_abs,
                pc.logits.max_abs, 100 * pc.logits.argmax_agree);
    if (pc.has_mtp)
      std::printf(" | mtp mean|d| %.3g max|d| %.3g argmax %.2f%%", pc.mtp.mean_abs, pc.mtp.max_abs,
                  100 * pc.mtp.argmax_agree);
    std::printf(" | %s\n", fast ? "" : pc.passes() ? "PASS" : "FAIL");
    for (const std::string& line : pc.trace) std::printf("%s\n", line.c_str());
    ok = ok && pc.passes();
  }
  if (fast) {
    double la = 0, ma = 0;
    ok = dsv4::fast_verdict(cases, &la, &ma);
    std::printf("fast path over all rows: logits argmax %.2f%%, mtp argmax %.2f%%\n", 100 * la, 100 * ma);
  }
  std::printf("%s (%s)\n", ok ? "parity: PASS" : "parity: FAIL",
              fast ? "fast path: argmax >= 95%" : "tolerance: mean|d| <= 1e-3, max|d| <= 0.25, argmax >= 99%");
  return ok ? 0 : 1;
}

}  // namespace

DSV4_COMMAND(parity, "parity", "check a golden fixture folder (prefill, decode, MTP) against the reference", run);
