// The training loop of `dsv4 train` (docs/train.md): a recipe, a run folder, and steps of
// packed rows through the training graph and the optimizers, with the sequence-length
// stages and attention phases of the curriculum (training.md §4), evaluations, health
// monitors, metrics.jsonl, checkpoints and exact resumption.
#pragma once
#include <cstdint>
#include <string>

#include "train/recipe.h"

namespace dsv4 {

struct TrainRunOptions {
  std::string run_dir;
  bool resume = false;        // continue from the newest checkpoint of run_dir (start when there is no run)
  bool progress = true;       // the progress bar on stderr
  int64_t stop_after = -1;    // stop (with a checkpoint, as on SIGINT) once this many steps are done
};

enum class TrainOutcome { Finished, Interrupted };

// Runs the recipe to its last step (or an interrupt). A new run needs a run_dir without a
// run in it; a resumed one needs the same recipe (RUN_DIR/recipe.json) and continues
// exactly: with the same thread count, its metrics equal those of an uninterrupted run.
TrainOutcome train(const Recipe& recipe, const TrainRunOptions& options);

// After this, SIGINT (and SIGTERM) make a run finish its current step, save a checkpoint and
// return Interrupted; a second one kills the process at once.
void install_interrupt_handler();

}  // namespace dsv4
