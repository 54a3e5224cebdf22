// `dsv4 plot`: a run's metrics.jsonl as a multi-panel PNG drawn by gnuplot (docs/train.md):
// training loss (raw and smoothed) and validation loss against tokens, the learning rate,
// the gradient norm, the mHC composite gains, the expert load (max/mean) per MoE layer and
// the indexer recall per CSA layer. Several runs are overlaid, one colour each.
#pragma once
#include <string>
#include <vector>

namespace dsv4 {

struct PlotOptions {
  std::string title;     // "" : the run folders' names
  int width = 1400, height = 1000;
  bool keep_script = false;  // leave the gnuplot script and data next to the PNG (FILE.png.gp, FILE.png.d/)
};

// Throws when a run has no metrics, or gnuplot is missing or fails.
void plot_runs(const std::vector<std::string>& run_dirs, const std::string& png_path, const PlotOptions& opt);

}  // namespace dsv4
