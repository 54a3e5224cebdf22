// dsv4 plot RUN_DIR [RUN_DIR...] -o FILE.png: a run's metrics as a multi-panel PNG (gnuplot):
// training and validation loss against tokens, learning rate, gradient norm, mHC gains,
// expert load and indexer recall. Several runs are overlaid.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "cli.h"
#include "train/plot.h"

namespace {

int run(int argc, char** argv) {
  CLI::App app{"Plot the metrics of one or more `dsv4 train` runs into a PNG (gnuplot)"};
  app.name(argv[0]);
  std::vector<std::string> runs;
  std::string out;
  dsv4::PlotOptions opt;
  app.add_option("RUN_DIR", runs, "run folders (metrics.jsonl); several are overlaid")->required();
  app.add_option("-o,--output", out, "the PNG to write")->required();
  app.add_option("--title", opt.title, "title (default: the run folders' names)");
  app.add_option("--width", opt.width, "pixels")->capture_default_str();
  app.add_option("--height", opt.height, "pixels")->capture_default_str();
  app.add_flag("--keep-script", opt.keep_script, "keep the gnuplot script (FILE.png.gp) and its data (FILE.png.d/)");
  CLI11_PARSE(app, argc, argv);
  dsv4::plot_runs(runs, out, opt);
  std::printf("wrote %s\n", out.c_str());
  return 0;
}

}  // namespace

DSV4_COMMAND(plot, "plot", "plot training runs' metrics into a PNG (RUN_DIR... -o FILE.png)", run);
