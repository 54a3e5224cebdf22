// dsv4 grad MODEL_DIR BATCH.safetensors OUT.safetensors: the training loss of a batch and its
// gradient (the fixture loss of fixtures/README.md, "Training gradients": CE(main) + 0.3·CE(mtp)),
// written as `loss`, `loss_main`, `loss_mtp` and `grad.<parameter name>`.
// dsv4 grad-compare GOT.safetensors WANT.safetensors: the README's rule for two such files.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "cli.h"
#include "io/safetensors.h"
#include "model/weights.h"
#include "train/train_graph.h"

namespace {

using namespace dsv4;

AttnPhase parse_phase(const std::string& s) {
  if (s == "sparse") return AttnPhase::Sparse;
  if (s == "dense") return AttnPhase::Dense;
  if (s == "indexer_warmup") return AttnPhase::IndexerWarmup;
  throw Error("grad", "unknown --phase '" + s + "' (sparse, dense or indexer_warmup)");
}

int run_grad(int argc, char** argv) {
  CLI::App app{"Compute the training loss of a batch and the gradient of every parameter"};
  app.name(argv[0]);
  std::string model_dir, batch_path, out_path, ids_from, phase = "sparse";
  TrainOptions opt;
  bool no_quant = false, keep_tapes = false, f64 = false;
  app.add_option("MODEL_DIR", model_dir, "release-layout model folder")->required();
  app.add_option("BATCH", batch_path, "safetensors file with `ids` (I64 [B, T])")->required();
  app.add_option("OUT", out_path, "where to write loss, loss_main, loss_mtp and grad.<name>")->required();
  app.add_option("--ids-from", ids_from, "first write BATCH with the `ids` tensor of this safetensors file");
  app.add_option("--phase", phase, "attention phase: sparse (inference semantics), dense or indexer_warmup");
  app.add_option("--mtp-weight", opt.mtp_weight, "weight of the MTP loss (0.3)");
  app.add_option("--balance-weight", opt.balance_weight, "weight of the sequence-wise balance loss (0)");
  app.add_option("--indexer-weight", opt.indexer_weight, "weight of the indexer KL loss (0: no indexer gradient)");
  app.add_flag("--no-quant", no_quant, "switch the FP8/FP4 simulations off");
  app.add_flag("--keep-tapes", keep_tapes, "keep every block's tape instead of recomputing it in the backward");
  app.add_flag("--f64", f64, "compute in float64 (the gradient checks' precision), write float32");
  CLI11_PARSE(app, argc, argv);
  opt.phase = parse_phase(phase);
  opt.quant_sim = !no_quant;
  opt.recompute = !keep_tapes;

  if (!ids_from.empty()) {
    SafetensorsFile src(ids_from);
    Shape shape;
    std::vector<int64_t> ids = src.read_i64("ids", &shape);
    write_safetensors(batch_path, {{"ids", blob_i64(ids, shape)}});
  }
  TrainBatch batch;
  {
    SafetensorsFile f(batch_path);
    Shape shape;
    batch.ids = f.read_i64("ids", &shape);
    DSV4_CHECK(shape.size() == 2, "grad", batch_path, ": `ids` must be [B, T], got ", shape_str(shape));
    batch.B = shape[0];
    batch.T = shape[1];
  }
  ModelConfig c;
  const Params params = load_params(model_dir, &c);
  const Gradients g = f64 ? compute_gradients_f64(c, params, batch, opt) : compute_gradients(c, params, batch, opt);

  std::map<std::string, TensorBlob> out;
  auto scalar = [](double v) { return blob_f32(Tensor({1}, static_cast<float>(v))); };
  out["loss"] = scalar(g.loss.total);
  out["loss_main"] = scalar(g.loss.main);
  out["loss_mtp"] = scalar(g.loss.mtp);
  for (const auto& [name, t] : g.grads) out["grad." + name] = blob_f32(t);
  write_safetensors(out_path, out);
  const double tok = static_cast<double>(g.memory.tokens);
  std::printf("loss %.6f (main %.6f, mtp %.6f, balance %.6f, indexer %.6f) | %zu gradients | activations %.1f KiB/token "
              "kept + %.1f KiB/token transient\n",
              g.loss.total, g.loss.main, g.loss.mtp, g.loss.balance, g.loss.indexer, g.grads.size(),
              g.memory.kept_bytes / tok / 1024, g.memory.transient_bytes / tok / 1024);
  return 0;
}

// ‖got − want‖ / ‖want‖ per `grad.*` tensor (≤ 1e-3), |Δloss| (≤ 1e-4) for loss, loss_main and
// loss_mtp, and the same set of names.
int run_compare(int argc, char** argv) {
  CLI::App app{"Compare two gradient files by the fixture rule (per tensor ‖Δg‖/‖g‖ <= 1e-3, |Δloss| <= 1e-4)"};
  app.name(argv[0]);
  std::string got_path, want_path;
  double grad_tol = 1e-3, loss_tol = 1e-4;
  int top = 0;
  app.add_option("GOT", got_path, "gradients to check (dsv4 grad's output)")->required();
  app.add_option("WANT", want_path, "reference gradients (e.g. fixtures/tiny-fp32/grad.safetensors)")->required();
  app.add_option("--top", top, "also list the N tensors with the largest relative error");
  CLI11_PARSE(app, argc, argv);
  SafetensorsFile got(got_path), want(want_path);
  bool ok = true;
  auto names = [](const SafetensorsFile& f) {
    std::vector<std::string> v;
    for (const auto& [name, info] : f.tensors())
      if (name.rfind("grad.", 0) == 0) v.push_back(name);
    return v;
  };
  for (const std::string& n : names(want))
    if (!got.has(n)) {
      std::printf("missing  %s\n", n.c_str());
      ok = false;
    }
  for (const std::string& n : names(got))
    if (!want.has(n)) {
      std::printf("extra    %s\n", n.c_str());
      ok = false;
    }
  for (const char* n : {"loss", "loss_main", "loss_mtp"}) {
    const double d = std::fabs(got.read_f32(n)[0] - want.read_f32(n)[0]);
    const bool pass = d <= loss_tol && std::isfinite(d);
    std::printf("%-9s got %.7f want %.7f |d| %.2e %s\n", n, got.read_f32(n)[0], want.read_f32(n)[0], d,
                pass ? "ok" : "FAIL");
    ok = ok && pass;
  }
  std::vector<std::pair<double, std::string>> errors;
  int64_t compared = 0;
  for (const std::string& n : names(want)) {
    if (!got.has(n)) continue;
    const Tensor a = got.read_f32(n), b = want.read_f32(n);
    if (a.shape != b.shape) {
      std::printf("shape    %s: %s vs %s\n", n.c_str(), shape_str(a.shape).c_str(), shape_str(b.shape).c_str());
      ok = false;
      continue;
    }
    double num = 0, den = 0;
    for (int64_t i = 0; i < a.numel(); ++i) {
      num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
      den += double(b[i]) * b[i];
    }
    const double rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
    ++compared;
    if (!(rel <= grad_tol)) {
      std::printf("FAIL     %s: |dg|/|g| = %.3e\n", n.c_str(), rel);
      ok = false;
    }
    errors.push_back({std::isfinite(rel) ? rel : INFINITY, n});
  }
  std::sort(errors.rbegin(), errors.rend());
  for (int i = 0; i < top && i < static_cast<int>(errors.size()); ++i)
    std::printf("  %.3e  %s\n", errors[i].first, errors[i].second.c_str());
  std::printf("%lld gradients compared, worst |dg|/|g| = %.3e (%s)\n%s\n", static_cast<long long>(compared),
              errors.empty() ? 0.0 : errors[0].first, errors.empty() ? "" : errors[0].second.c_str(),
              ok ? "grad-compare: PASS" : "grad-compare: FAIL");
  return ok ? 0 : 1;
}

}  // namespace

DSV4_COMMAND(grad, "grad", "training loss and gradients of a batch (MODEL_DIR BATCH OUT)", run_grad);
DSV4_COMMAND(grad_compare, "grad-compare", "compare two gradient files by the fixture rule", run_compare);
