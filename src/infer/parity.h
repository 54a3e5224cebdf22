// Parity against golden fixtures (../shared/fixtures/README.md): each case runs a
// prefill of P tokens and T − P decode steps per sequence of the batch, and the MTP
// block as a prefill on the prefill's final streams; logits are compared by the
// fixture tolerance rule (mean |Δ| ≤ 1e-3, max |Δ| ≤ 0.25, argmax agreement ≥ 99%).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace dsv4 {

class Backend;
class Model;

struct LogitStats {
  int64_t rows = 0;
  double mean_abs = 0, max_abs = 0, argmax_agree = 1;
  bool passes() const { return mean_abs <= 1e-3 && max_abs <= 0.25 && argmax_agree >= 0.99; }
  // The fast (bf16 / FP8 / FP4, compact caches) path against the float32 definition: the same
  // next-token choice in at least 95% of the rows (its mean |Δ| is reported, not bounded).
  // Judge it over many rows (fast_verdict pools the cases): a 5-row case says little.
  bool passes_fast() const { return argmax_agree >= 0.95; }
};

LogitStats compare_logits(const float* got, const float* want, int64_t rows, int64_t V);

struct ParityCase {
  std::string name;
  int64_t batch = 0, prefill = 0, total = 0;
  LogitStats logits, mtp;
  LogitStats prefill_logits, decode_logits;  // the same logits split by phase
  bool has_mtp = false;
  std::vector<std::string> trace;  // per-layer lines when tracing
  bool fast = false;  // judged by LogitStats::passes_fast
  bool passes() const {
    auto ok = [&](const LogitStats& s) { return fast ? s.passes_fast() : s.passes(); };
    return ok(logits) && (!has_mtp || ok(mtp));
  }
};

// Runs every case of a fixture folder (config.json, model.safetensors, cases.json,
// expected.safetensors). With `trace`, compares per-layer hidden states and indexer
// selections where the fixture has them.
std::vector<ParityCase> run_parity(const std::string& dir, bool trace, const Model* model = nullptr);
// The fast path's verdict over all cases of a fixture: argmax agreement pooled over every row
// (logits, and MTP logits where present) >= 95%.
bool fast_verdict(const std::vector<ParityCase>& cases, double* logits_agree = nullptr, double* mtp_agree = nullptr);

// The same through any backend (model/backend.h) of the fixture's model; `fast` selects the
// fast path's rule.
std::vector<ParityCase> run_parity(const std::string& dir, bool trace, Backend& backend, bool fast = false);

}  // namespace dsv4
