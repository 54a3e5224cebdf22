#include "infer/parity.h"

#include <cmath>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "model/backend.h"
#include "model/model.h"

namespace dsv4 {

LogitStats compare_logits(const float* got, const float* want, int64_t rows, int64_t V) {
  LogitStats s;
  s.rows = rows;
  double sum = 0;
  int64_t agree = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = got + r * V;
    const float* w = want + r * V;
    int64_t ag = 0, aw = 0;
    for (int64_t v = 0; v < V; ++v) {
      double d = std::fabs(static_cast<double>(g[v]) - w[v]);
      if (!std::isfinite(g[v])) d = INFINITY;  // NaN or Inf where the reference has none fails
      sum += d;
      s.max_abs = std::max(s.max_abs, d);
      if (g[v] > g[ag]) ag = v;
      if (w[v] > w[aw]) aw = v;
    }
    agree += ag == aw;
  }
  s.mean_abs = rows ? sum / (rows * V) : 0;
  s.argmax_agree = rows ? static_cast<double>(agree) / rows : 1;
  return s;
}

bool fast_verdict(const std::vector<ParityCase>& cases, double* logits_agree, double* mtp_agree) {
  double la = 0, lr = 0, ma = 0, mr = 0;
  for (const ParityCase& pc : cases) {
    la += pc.logits.argmax_agree * pc.logits.rows;
    lr += pc.logits.rows;
    if (pc.has_mtp) {
      ma += pc.mtp.argmax_agree * pc.mtp.rows;
      mr += pc.mtp.rows;
    }
  }
  const double l = lr > 0 ? la / lr : 1.0, m = mr > 0 ? ma / mr : 1.0;
  if (logits_agree) *logits_agree = l;
  if (mtp_agree) *mtp_agree = m;
  return l >= 0.95 && m >= 0.95;
}

namespace {

std::string fmt_stats(const char* what, const LogitStats& s) {
  char buf[200];
  std::snprintf(buf, sizeof buf, "%s mean|d| %.3g max|d| %.3g argmax %.2f%%", what, s.mean_abs, s.max_abs,
                100 * s.argmax_agree);
  return buf;
}

// Per-layer comparison of the prefill's hidden states and indexer selections.
void trace_case(const ModelConfig& c, const SafetensorsFile& exp, const std::string& name, const ForwardTrace& tr,
                int64_t B, int64_t P, std::vector<std::string>& lines) {
  const int64_t nD = static_cast<int64_t>(c.hc_mult) * c.hidden_size;
  bool first_hidden = true, first_topk = true;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    std::string line = "  layer " + std::to_string(l) + " (m=" + std::to_string(c.ratio(l)) + ")";
    const std::string hk = name + ".hidden." + std::to_string(l);
    if (exp.has(hk)) {
      Tensor want = exp.read_f32(hk);
      double mx = 0, mean = 0;
      for (int64_t i = 0; i < B * P * nD; ++i) {
        double d = std::fabs(static_cast<double>(tr.hidden[l][i]) - want[i]);
        mx = std::max(mx, d);
        mean += d;
      }
      mean /= static_cast<double>(B * P * nD);
      char buf[120];
      std::snprintf(buf, sizeof buf, " hidden mean|d| %.3g max|d| %.3g", mean, mx);
      line += buf;
      if (mx > 1e-3 && first_hidden) { line += "  <- hidden states first differ here"; first_hidden = false; }
    }
    const std::string tk = name + ".topk." + std::to_string(l);
    if (exp.has(tk)) {
      Shape shape;
      std::vector<int64_t> want = exp.read_i64(tk, &shape);
      const int64_t Kp = shape.size() == 3 ? shape[2] : 0;
      int64_t equal = 0, first_row = -1;
      for (int64_t r = 0; r < B * P; ++r) {
        std::set<int64_t> w, g(tr.topk[l][r].begin(), tr.topk[l][r].end());
        for (int64_t k = 0; k < Kp; ++k)
          if (want[r * Kp + k] >= 0) w.insert(want[r * Kp + k]);
        if (w == g) ++equal;
        else if (first_row < 0) first_row = r;
      }
      char buf[160];
      std::snprintf(buf, sizeof buf, " topk rows equal %lld/%lld", static_cast<long long>(equal),
                    static_cast<long long>(B * P));
      line += buf;
      if (first_row >= 0 && first_topk) {
        line += "  <- selections first differ at batch " + std::to_string(first_row / P) + " position " +
                std::to_string(first_row % P);
        first_topk = false;
      }
    }
    lines.push_back(line);
  }
}

}  // namespace

std::vector<ParityCase> run_parity(const std::string& dir, bool trace, const Model* model) {
  std::unique_ptr<Model> owned;
  if (!model) {
    owned = std::make_unique<Model>(Model::load(dir));
    model = owned.get();
  }
  std::unique_ptr<Backend> cpu = make_backend(Device::Cpu, *model, Precision::F32);
  return run_parity(dir, trace, *cpu);
}

std::vector<ParityCase> run_parity(const std::string& dir, bool trace, Backend& backend, bool fast) {
  const ModelConfig& c = backend.config();
  std::ifstream cf(dir + "/cases.json");
  DSV4_CHECK(cf, "parity", "cannot open ", dir, "/cases.json");
  nlohmann::json cases;
  try {
    cases = nlohmann::json::parse(cf);
  } catch (const std::exception& e) {
    throw Error("parity", str(dir, "/cases.json: ", e.what()));
  }
  SafetensorsFile exp(dir + "/expected.safetensors");
  const int64_t V = c.vocab_size, nD = static_cast<int64_t>(c.hc_mult) * c.hidden_size;

  std::vector<ParityCase> results;
  for (const auto& jc : cases.at("cases")) {
    ParityCase pc;
    pc.fast = fast;
    pc.name = jc.at("name").get<std::string>();
    pc.batch = jc.at("batch").get<int64_t>();
    pc.prefill = jc.at("prefill").get<int64_t>();
    pc.total = jc.at("total").get<int64_t>();
    const int64_t B = pc.batch, P = pc.prefill, T = pc.total;
    Shape ids_shape;
    std::vector<int64_t> ids = exp.read_i64(pc.name + ".ids", &ids_shape);
    DSV4_CHECK(ids_shape == (Shape{B, T}), "parity", pc.name, ".ids has shape ", shape_str(ids_shape), ", expected [",
               B, ", ", T, "]");
    Tensor want = exp.read_f32(pc.name + ".logits");
    DSV4_CHECK(want.numel() == B * T * V, "parity", pc.name, ".logits has ", want.numel(), " values, expected ",
               B * T * V);

    // Prefill of ids[:, :P], then one decode step per position p >= P.
    std::vector<int> seqs;
    for (int64_t b = 0; b < B; ++b) seqs.push_back(backend.new_sequence(T));
    std::vector<SeqChunk> prefill;
    for (int64_t b = 0; b < B; ++b)
      prefill.push_back({seqs[b], std::vector<int64_t>(ids.begin() + b * T, ids.begin() + b * T + P)});
    ForwardTrace tr;
    ForwardOut pre = backend.forward(prefill, true, trace ? &tr : nullptr);
    Tensor got({B, T, V});
    for (int64_t b = 0; b < B; ++b)
      std::copy(pre.logits.ptr() + b * P * V, pre.logits.ptr() + (b + 1) * P * V, got.ptr() + b * T * V);
    for (int64_t p = P; p < T; ++p) {
      std::vector<SeqChunk> step;
      for (int64_t b = 0; b < B; ++b) step.push_back({seqs[b], {ids[b * T + p]}});
      ForwardOut o = backend.forward(step);
      for (int64_t b = 0; b < B; ++b) std::copy(o.logits.ptr() + b * V, o.logits.ptr() + (b + 1) * V, got.ptr() + (b * T + p) * V);
    }
    pc.logits = compare_logits(got.ptr(), want.ptr(), B * T, V);
    {
      Tensor gp({B * P, V}), wp({B * P, V}), gd({B * (T - P), V}), wd({B * (T - P), V});
      for (int64_t b = 0; b < B; ++b) {
        std::copy(got.ptr() + b * T * V, got.ptr() + (b * T + P) * V, gp.ptr() + b * P * V);
        std::copy(want.ptr() + b * T * V, want.ptr() + (b * T + P) * V, wp.ptr() + b * P * V);
        std::copy(got.ptr() + (b * T + P) * V, got.ptr() + (b + 1) * T * V, gd.ptr() + b * (T - P) * V);
        std::copy(want.ptr() + (b * T + P) * V, want.ptr() + (b + 1) * T * V, wd.ptr() + b * (T - P) * V);
      }
      pc.prefill_logits = compare_logits(gp.ptr(), wp.ptr(), B * P, V);
      pc.decode_logits = compare_logits(gd.ptr(), wd.ptr(), B * (T - P), V);
    }

    // MTP: a prefill over positions 0..P−1 on the prefill's final streams.
    if (exp.has(pc.name + ".mtp_logits") && c.num_nextn_predict_layers > 0) {
      pc.has_mtp = true;
      std::vector<int64_t> mids = exp.read_i64(pc.name + ".mtp_ids");
      Tensor mwant = exp.read_f32(pc.name + ".mtp_logits");
      DSV4_CHECK(static_cast<int64_t>(mids.size()) == B * P && mwant.numel() == B * P * V, "parity", pc.name,
                 ": mtp_ids / mtp_logits do not have batch × prefill rows");
      std::vector<SeqChunk> mchunks;
      for (int64_t b = 0; b < B; ++b)
        mchunks.push_back({backend.new_sequence(P), std::vector<int64_t>(mids.begin() + b * P, mids.begin() + (b + 1) * P)});
      Tensor streams({B * P, nD});
      std::copy(pre.streams.data.begin(), pre.streams.data.end(), streams.data.begin());
      ForwardOut mo = backend.mtp_forward(mchunks, streams);
      for (const SeqChunk& ch : mchunks) backend.free_sequence(ch.seq);
      pc.mtp = compare_logits(mo.logits.ptr(), mwant.ptr(), B * P, V);
    }
    if (trace) {
      pc.trace.push_back("  " + fmt_stats("prefill logits", pc.prefill_logits) + " | " +
                         fmt_stats("decode logits", pc.decode_logits));
      trace_case(c, exp, pc.name, tr, B, P, pc.trace);
      std::string steps = "  decode steps with max|d| > 1e-3:";
      for (int64_t p = P; p < T; ++p) {
        double mx = 0;
        for (int64_t b = 0; b < B; ++b)
          mx = std::max(mx, compare_logits(got.ptr() + (b * T + p) * V, want.ptr() + (b * T + p) * V, 1, V).max_abs);
        if (mx > 1e-3) steps += " " + std::to_string(p) + "(" + std::to_string(mx).substr(0, 6) + ")";
      }
      pc.trace.push_back(steps);
    }
    for (int sq : seqs) backend.free_sequence(sq);
    results.push_back(std::move(pc));
  }
  return results;
}

}  // namespace dsv4
