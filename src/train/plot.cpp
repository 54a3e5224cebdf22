#include "train/plot.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace dsv4 {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// One run's series, each row "tokens value..." (NaN where missing).
struct Series {
  std::vector<std::string> columns;  // names of the value columns
  std::vector<std::vector<double>> rows;
};

struct RunData {
  std::string name;
  Series train{{"loss_main", "loss_main_smoothed", "loss", "lr", "grad_norm", "indexer_lr"}, {}};
  bool has_indexer_lr = false;
  Series val{{"val_loss"}, {}};
  Series gain{{"mhc_gain_fwd", "mhc_gain_bwd"}, {}};
  Series recall, load;  // one column per layer
};

double num(const json& j, const char* key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : NAN;
}

// Adds a row of per-layer values from an object {layer: value}, columns in first-seen order.
void add_layers(Series& s, double tokens, const json& obj) {
  std::vector<double> row(s.columns.size() + 1, NAN);
  row[0] = tokens;
  for (const auto& [layer, v] : obj.items()) {
    size_t i = 0;
    while (i < s.columns.size() && s.columns[i] != layer) ++i;
    if (i == s.columns.size()) {
      s.columns.push_back(layer);
      row.push_back(NAN);
      for (auto& r : s.rows) r.push_back(NAN);
    }
    row[i + 1] = v.is_number() ? v.get<double>() : NAN;
  }
  s.rows.push_back(std::move(row));
}

RunData read_run(const std::string& dir) {
  const std::string path = (fs::path(dir) / "metrics.jsonl").string();
  std::ifstream in(path);
  DSV4_CHECK(in.good(), "plot", "cannot read '", path, "' (is '", dir, "' a run folder of `dsv4 train`?)");
  RunData d;
  d.name = fs::path(dir).lexically_normal().filename().string();
  if (d.name.empty()) d.name = fs::path(dir).lexically_normal().parent_path().filename().string();
  std::string line;
  double ema = 0;
  int64_t n = 0;
  while (std::getline(in, line)) {
    const json j = json::parse(line, nullptr, false);
    if (!j.is_object() || !j.contains("tokens")) continue;  // a torn last line of a killed run
    const double tokens = num(j, "tokens");
    if (j.contains("loss_main")) {
      const double loss = num(j, "loss_main");
      // EMA with bias correction (as Adam's moments), so the first points are not pulled to 0.
      if (std::isfinite(loss)) {
        ema = 0.95 * ema + 0.05 * loss;
        ++n;
      }
      d.train.rows.push_back({tokens, loss, ema / (1 - std::pow(0.95, static_cast<double>(n))), num(j, "loss"),
                              num(j, "lr"), num(j, "grad_norm"), num(j, "indexer_lr")});
      d.has_indexer_lr = d.has_indexer_lr || std::isfinite(num(j, "indexer_lr"));
      if (j.contains("expert_load")) add_layers(d.load, tokens, j["expert_load"]);
    }
    if (j.contains("val_loss")) d.val.rows.push_back({tokens, num(j, "val_loss")});
    if (j.contains("mhc_gain_fwd")) d.gain.rows.push_back({tokens, num(j, "mhc_gain_fwd"), num(j, "mhc_gain_bwd")});
    if (j.contains("indexer_recall")) add_layers(d.recall, tokens, j["indexer_recall"]);
  }
  DSV4_CHECK(!d.train.rows.empty(), "plot", "'", path, "' has no training steps yet");
  return d;
}

void write_series(const std::string& path, const Series& s) {
  std::ofstream out(path);
  out << "# tokens";
  for (const std::string& c : s.columns) out << ' ' << c;
  out << '\n';
  char buf[32];
  for (const auto& row : s.rows) {
    for (size_t i = 0; i < row.size(); ++i) {
      if (std::isfinite(row[i])) std::snprintf(buf, sizeof(buf), "%.9g", row[i]);
      else std::snprintf(buf, sizeof(buf), "NaN");
      out << (i ? " " : "") << buf;
    }
    out << '\n';
  }
  DSV4_CHECK(out.good(), "plot", "cannot write '", path, "'");
}

std::string quoted(const std::string& s) {
  DSV4_CHECK(s.find('\'') == std::string::npos, "plot", "path '", s, "' contains a single quote");
  return "'" + s + "'";
}

const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"};

}  // namespace

void plot_runs(const std::vector<std::string>& run_dirs, const std::string& png_path, const PlotOptions& opt) {
  DSV4_CHECK(!run_dirs.empty(), "plot", "no run folder given");
  DSV4_CHECK(std::system("command -v gnuplot >/dev/null 2>&1") == 0, "plot",
             "gnuplot is not installed: install gnuplot-nox (scripts/setup.sh does)");
  std::vector<RunData> runs;
  for (const std::string& d : run_dirs) runs.push_back(read_run(d));
  const bool many = runs.size() > 1;

  const std::string data_dir = png_path + ".d";
  fs::create_directories(data_dir);
  auto file = [&](size_t i, const char* what) { return (fs::path(data_dir) / (str("run", i, "_", what, ".dat"))).string(); };
  for (size_t i = 0; i < runs.size(); ++i) {
    write_series(file(i, "train"), runs[i].train);
    write_series(file(i, "val"), runs[i].val);
    write_series(file(i, "gain"), runs[i].gain);
    write_series(file(i, "recall"), runs[i].recall);
    write_series(file(i, "load"), runs[i].load);
  }

  std::ostringstream gp;
  std::string title = opt.title;
  if (title.empty())
    for (size_t i = 0; i < runs.size(); ++i) title += (i ? " vs " : "") + runs[i].name;
  gp << "set terminal pngcairo size " << opt.width << "," << opt.height << " noenhanced font ',10'\n"
     << "set output " << quoted(png_path) << "\n"
     << "set multiplot layout 3,2 title " << quoted(title) << " font ',13'\n"
     << "set grid\nset key top right font ',8'\nset xlabel 'tokens'\nset format x '%.1s%c'\n"
     << "set datafile missing 'NaN'\n";
  // One panel: `lines` holds the plot clauses; an empty panel says so.
  auto panel = [&](const std::string& t, const std::string& extra, const std::vector<std::string>& lines) {
    gp << "set title " << quoted(t) << "\n" << extra;
    if (lines.empty()) {
      gp << "set label 1 'no data' at graph 0.5, 0.5 center\nplot [0:1][0:1] NaN notitle\nunset label 1\n";
    } else {
      gp << "plot ";
      for (size_t i = 0; i < lines.size(); ++i) gp << (i ? ", \\\n     " : "") << lines[i];
      gp << "\n";
    }
    gp << "unset logscale y\nset yrange [*:*]\n";
  };
  auto color = [&](size_t run, size_t k = 0) {
    return str("lc rgb '", kColors[(many ? run : k) % std::size(kColors)], "'");
  };
  auto label = [&](size_t run, const std::string& what) { return quoted(many ? runs[run].name + " " + what : what); };

  std::vector<std::string> loss, lr, norm, gain, load, recall;
  for (size_t i = 0; i < runs.size(); ++i) {
    const RunData& r = runs[i];
    const std::string tf = quoted(file(i, "train"));
    loss.push_back(str(tf, " u 1:2 w l lw 0.5 ", color(i, 0), " dt 3 notitle"));
    loss.push_back(str(tf, " u 1:3 w l lw 2 ", color(i, 0), " t ", label(i, "train (smoothed)")));
    if (!r.val.rows.empty())
      loss.push_back(str(quoted(file(i, "val")), " u 1:2 w lp pt 7 ps 0.6 lw 2 ", color(i, 1), many ? " dt 2" : "",
                         " t ", label(i, "validation")));
    lr.push_back(str(tf, " u 1:5 w l lw 2 ", color(i, 0), " t ", label(i, "lr")));
    if (r.has_indexer_lr)
      lr.push_back(str(tf, " u 1:7 w l lw 2 dt 2 ", color(i, 1), " t ", label(i, "indexer lr")));
    norm.push_back(str(tf, " u 1:6 w l lw 1 ", color(i, 0), " t ", label(i, "grad norm (pre-clip)")));
    if (!r.gain.rows.empty()) {
      gain.push_back(str(quoted(file(i, "gain")), " u 1:2 w lp pt 7 ps 0.4 ", color(i, 0), " t ", label(i, "forward")));
      gain.push_back(str(quoted(file(i, "gain")), " u 1:3 w lp pt 5 ps 0.4 ", color(i, 1), " dt 2 t ",
                         label(i, "backward")));
    }
    for (size_t k = 0; k < r.load.columns.size(); ++k)
      load.push_back(str(quoted(file(i, "load")), " u 1:", k + 2, " w l lw 1 ", color(many ? i : k, k), " t ",
                         label(i, r.load.columns[k])));
    for (size_t k = 0; k < r.recall.columns.size(); ++k)
      recall.push_back(str(quoted(file(i, "recall")), " u 1:", k + 2, " w lp pt 7 ps 0.4 ", color(many ? i : k, k),
                           " t ", label(i, r.recall.columns[k])));
  }
  // The first tenth of a run falls steeply; the range starts after it, so the later
  // differences between runs stay visible.
  double lo = INFINITY, hi = -INFINITY;
  for (const RunData& r : runs) {
    const size_t n = r.train.rows.size();
    for (size_t k = n / 10; k < n; ++k) {
      const double v = r.train.rows[k][2];  // smoothed
      if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
    }
    for (const auto& row : r.val.rows)
      if (std::isfinite(row[1]) && row[0] >= r.train.rows[n / 10][0]) lo = std::min(lo, row[1]), hi = std::max(hi, row[1]);
  }
  const std::string range = std::isfinite(lo) && hi > lo ? str("set yrange [", lo - 0.05 * (hi - lo), ":", hi + 0.05 * (hi - lo), "]\n") : "";
  panel("loss (main next-token cross-entropy; after the first tenth)", "set ylabel 'nats/token'\n" + range, loss);
  panel("learning rate", "set ylabel 'lr'\n", lr);
  panel("gradient norm", "set ylabel ''\nset logscale y\n", norm);
  panel("mHC composite amax gain (1 = no amplification)", "set ylabel 'gain'\nset yrange [0:*]\nset key bottom right\n", gain);
  gp << "set key top right\n";
  panel("expert load (max / mean) per MoE layer", "set ylabel 'max/mean'\n", load);
  panel("indexer recall (dense attention mass kept by top-k)", "set ylabel 'recall'\nset yrange [0:1.05]\n", recall);
  gp << "unset multiplot\n";

  const std::string script = png_path + ".gp";
  {
    std::ofstream out(script);
    out << gp.str();
    DSV4_CHECK(out.good(), "plot", "cannot write '", script, "'");
  }
  const std::string err = png_path + ".gnuplot.log";
  const int rc = std::system(("gnuplot " + quoted(script) + " >" + quoted(err) + " 2>&1").c_str());
  std::ifstream log(err);
  const std::string msg((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  std::error_code ec;
  fs::remove(err, ec);
  if (!opt.keep_script) {
    fs::remove(script, ec);
    fs::remove_all(data_dir, ec);
  }
  DSV4_CHECK(rc == 0, "plot", "gnuplot failed (exit ", rc, "): ", msg);
}

}  // namespace dsv4
