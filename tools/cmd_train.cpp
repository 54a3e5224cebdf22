// dsv4 train --recipe RECIPE.json --out RUN_DIR [--resume]: trains a model by a recipe
// (docs/train.md). Progress on stderr; RUN_DIR gets metrics.jsonl and ckpt-<step>/ folders
// (release layout + training state) with `latest` naming the newest. SIGINT saves and exits.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>

#include "cli.h"
#include "core/error.h"
#include "train/recipe.h"
#include "train/trainer.h"

namespace {

int run(int argc, char** argv) {
  CLI::App app{"Train a DeepSeek-V4 model by a recipe (model, data, curriculum, optimizer, checkpoints)"};
  app.name(argv[0]);
  std::string recipe_path;
  dsv4::TrainRunOptions opt;
  bool quiet = false;
  app.add_option("--recipe", recipe_path, "recipe JSON (see docs/train.md); with --resume, defaults to RUN_DIR/recipe.json");
  app.add_option("--out", opt.run_dir, "run folder: metrics.jsonl, ckpt-<step>/, latest")->required();
  app.add_flag("--resume", opt.resume, "continue from the newest checkpoint in --out");
  app.add_flag("--quiet", quiet, "no progress bar");
  app.add_option("--stop-after", opt.stop_after, "stop with a checkpoint once this many steps are done (as SIGINT does)");
  CLI11_PARSE(app, argc, argv);
  opt.progress = !quiet;

  if (recipe_path.empty()) {
    DSV4_CHECK(opt.resume, "train", "--recipe is required (it may be left out only with --resume)");
    recipe_path = (std::filesystem::path(opt.run_dir) / "recipe.json").string();
  }
  const dsv4::Recipe recipe = dsv4::load_recipe(recipe_path);
  dsv4::install_interrupt_handler();
  const dsv4::TrainOutcome outcome = dsv4::train(recipe, opt);
  return outcome == dsv4::TrainOutcome::Finished ? 0 : 130;
}

}  // namespace

DSV4_COMMAND(train, "train", "train a model by a recipe (--recipe R.json --out RUN_DIR [--resume])", run);
