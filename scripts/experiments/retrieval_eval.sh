#!/usr/bin/env bash
# Accuracy of a model on the retrieval prompts of retrieval_data.js: the share of prompts
# whose greedy next character is the value. Prints "correct total accuracy".
# usage: retrieval_eval.sh DSV4_CLI MODEL_DIR EVAL_DIR [N]
set -euo pipefail
dsv4=$1; model=$2; dir=$3; n=${4:-1000000}
mapfile -t answers < "$dir/answers.txt"
correct=0; total=0
for prompt in "$dir"/prompt-*.txt; do
  [ "$total" -ge "$n" ] && break
  got=$("$dsv4" generate -m "$model" -f "$prompt" --temperature 0 --max-tokens 1 2>/dev/null)
  [ "$got" = "${answers[$total]}" ] && correct=$((correct + 1))
  total=$((total + 1))
done
awk -v c="$correct" -v t="$total" 'BEGIN { printf "%d %d %.4f\n", c, t, c / t }'
