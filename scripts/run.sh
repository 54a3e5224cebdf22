#!/usr/bin/env bash
# The main job on a fresh machine: set up, check the engine against the official
# reference fixtures, then train a tiny DeepSeek-V4 on the Brown corpus and generate
# from it (when `dsv4 train` is available; otherwise a randomly initialized model).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD=${BUILD_DIR:-build}
dsv4=$BUILD/dsv4
shared=${DSV4_SHARED:-../shared}

if [ -d "$shared/fixtures" ]; then
  echo "== parity with the official reference (golden fixtures)"
  $dsv4 parity "$shared/fixtures/tiny-fp32"
  $dsv4 parity "$shared/fixtures/tiny-fp8"
fi

if $dsv4 --help | grep -q "^  train "; then
  echo "== training a tiny V4 on Brown (recipes/tiny-brown.json)"
  scripts/brown.sh "$dsv4"
  $dsv4 train --recipe recipes/tiny-brown.json --out runs/tiny-brown --resume
  model=runs/tiny-brown/latest
else
  echo "== dsv4 train is not built yet: generating from a randomly initialized tiny model"
  $dsv4 init --config configs/tiny.json --tokenizer data/tokenizers/byte/tokenizer.json -o runs/tiny-random
  model=runs/tiny-random
fi
echo "== generating"
$dsv4 generate -m "$model" -p "The jury said" --max-tokens 200 --temperature 0.8 --seed 1
