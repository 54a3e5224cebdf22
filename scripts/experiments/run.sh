#!/usr/bin/env bash
# The experiments of docs/experiments.md, each step skipped when its output exists.
#   scripts/experiments/run.sh retrieval   long-range retrieval: CSA/HCA + curriculum vs window-only
#   scripts/experiments/run.sh brown       Brown ablations against recipes/tiny-brown.json
# Runs go to runs/exp-*/, plots to docs/img/.
set -euo pipefail
cd "$(dirname "$0")/../.."
dsv4=${DSV4:-${BUILD_DIR:-build}/dsv4}
mkdir -p docs/img

train() {  # recipe run-dir
  "$dsv4" train --recipe "$1" --out "$2" --resume --quiet
}

case ${1:-} in
retrieval)
  if ! ls data/retrieval/shards/*.tok >/dev/null 2>&1; then
    mkdir -p data/retrieval
    node scripts/experiments/retrieval_data.js data/retrieval/train.txt 16000 data/retrieval/eval 200 246 1 16 1
    "$dsv4" tokenize -t data/tokenizers/byte/tokenizer.json -o data/retrieval/shards --paragraphs data/retrieval/train.txt
  fi
  # the two runs side by side (one thread each)
  train recipes/experiments/retrieval-csa.json runs/exp-retrieval-csa &
  train recipes/experiments/retrieval-window.json runs/exp-retrieval-window
  wait
  for m in csa window; do
    echo "retrieval-$m accuracy (correct total share): $(scripts/experiments/retrieval_eval.sh "$dsv4" runs/exp-retrieval-$m/latest data/retrieval/eval)"
  done
  "$dsv4" plot runs/exp-retrieval-csa runs/exp-retrieval-window -o docs/img/retrieval.png \
    --title "long-range retrieval (W = 16): CSA/HCA + curriculum vs window-only"
  # accuracy of every checkpoint (100 held-out prompts each)
  scripts/experiments/retrieval_curve.sh "$dsv4" docs/img/retrieval-accuracy.png 100
  ;;
brown)
  scripts/brown.sh "$dsv4"
  # two runs at a time (one thread each)
  train recipes/tiny-brown.json runs/tiny-brown &
  train recipes/experiments/brown-adamw.json runs/exp-brown-adamw
  wait
  train recipes/experiments/brown-n1.json runs/exp-brown-n1 &
  train recipes/experiments/brown-dense.json runs/exp-brown-dense
  wait
  "$dsv4" plot runs/tiny-brown runs/exp-brown-adamw -o docs/img/brown-muon-vs-adamw.png --title "Brown: Muon vs AdamW"
  "$dsv4" plot runs/tiny-brown runs/exp-brown-n1 -o docs/img/brown-mhc-n4-vs-n1.png --title "Brown: mHC n = 4 vs n = 1"
  "$dsv4" plot runs/tiny-brown runs/exp-brown-dense -o docs/img/brown-curriculum-vs-dense.png \
    --title "Brown: dense -> indexer warm-up -> sparse vs dense only"
  ;;
*)
  echo "usage: $0 retrieval|brown" >&2
  exit 2
  ;;
esac
