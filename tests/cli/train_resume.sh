#!/usr/bin/env bash
# `dsv4 train` survives interruptions (docs/train.md): a run killed with SIGKILL at random
# moments, and killed inside each stage of a checkpoint save (DSV4_TRAIN_FAULT), then resumed
# each time, ends with exactly the metrics of an uninterrupted run; after every
# kill the newest checkpoint is a loadable model. SIGINT saves the current step and exits.
# usage: train_resume.sh DSV4_CLI FIXTURES_DIR SCRATCH_DIR
set -euo pipefail
dsv4=$1
scratch=$3
src=$(cd "$(dirname "$0")/../.." && pwd)
rm -rf "$scratch"
mkdir -p "$scratch"
cd "$scratch"
fail() { echo "FAIL: $*" >&2; exit 1; }

# A corpus of paragraphs of varied length.
words=(the jury said county election was of and a report)
for p in $(seq 0 59); do
  n=$((3 + (p * 7) % 25)); line=""
  for w in $(seq 0 $((n - 1))); do line+="${words[$(((p * 3 + w * w) % 10))]} "; done
  printf '%s.\n\n' "$line"
done > text.txt
"$dsv4" tokenize -t "$src/data/tokenizers/byte/tokenizer.json" -o shards --paragraphs text.txt >/dev/null

cat > recipe.json <<EOF
{
  "model": "$src/tests/data/micro-config.json",
  "tokenizer": "$src/data/tokenizers/byte/tokenizer.json",
  "data": {"corpus": "shards", "val_fraction": 0.1},
  "steps": 16,
  "tokens_per_step": 128,
  "seq_len_stages": [{"seq_len": 32, "steps": 7}, {"seq_len": 64}],
  "attention_phases": [{"phase": "dense", "steps": 6}, {"phase": "indexer_warmup", "steps": 3}, {"phase": "sparse"}],
  "lr_schedule": {"peak": 3e-3, "warmup_steps": 3, "decay_steps": 10},
  "eval": {"interval_steps": 5, "rows": 2},
  "checkpoint": {"interval_steps": 2, "keep": 3},
  "monitor_interval_steps": 3,
  "seed": 3,
  "threads": 1
}
EOF

# Metrics without the wall-clock fields, one record per line.
strip() { sed -E 's/"elapsed_s":[^,}]*,?//' "$1/metrics.jsonl"; }
check_loadable() {  # the newest checkpoint is a model that generates
  "$dsv4" generate -m "$1/latest" -p "the" --max-tokens 3 --seed 1 >/dev/null 2>&1 ||
    fail "$1/latest does not load in dsv4 generate after $2"
}

"$dsv4" train --recipe recipe.json --out full --quiet 2>/dev/null
[ "$(grep -c '"loss"' full/metrics.jsonl)" = 16 ] || fail "the uninterrupted run did not log 16 steps"

# 1. SIGKILL at random moments (a seeded sequence of delays), resuming after each.
RANDOM=7
"$dsv4" train --recipe recipe.json --out killed --quiet 2>/dev/null &
pid=$!
kills=0
for i in $(seq 1 6); do
  sleep "0.$((RANDOM % 6 + 1))"
  if kill -0 "$pid" 2>/dev/null; then
    kill -9 "$pid"; wait "$pid" 2>/dev/null || true; kills=$((kills + 1))
    if [ -e killed/latest ]; then check_loadable killed "a SIGKILL"; fi
  else
    wait "$pid" 2>/dev/null || true
  fi
  "$dsv4" train --recipe recipe.json --out killed --resume --quiet 2>/dev/null &
  pid=$!
done
wait "$pid"
echo "killed $kills times"
diff <(strip full) <(strip killed) >/dev/null || fail "metrics after SIGKILLs differ from the uninterrupted run"

# 2. SIGKILL inside each stage of a save: the save is lost, the previous checkpoint is intact.
"$dsv4" train --recipe recipe.json --out faults --quiet --stop-after 2 2>/dev/null && true
[ -d faults/ckpt-2 ] || fail "no checkpoint after --stop-after 2"
for point in model optimizer state rename latest; do
  before=$(readlink faults/latest)
  set +e
  DSV4_TRAIN_FAULT=$point "$dsv4" train --out faults --resume --quiet 2>/dev/null
  rc=$?
  set -e
  [ "$rc" = 137 ] || fail "DSV4_TRAIN_FAULT=$point: exit $rc, expected 137 (SIGKILL)"
  after=$(readlink faults/latest)
  case $point in
    model|optimizer|state|rename) [ "$after" = "$before" ] || fail "$point: latest moved to $after" ;;
    latest) [ "$after" != "$before" ] || fail "latest: the symlink was not updated" ;;
  esac
  check_loadable faults "a kill at '$point'"
  ls -a faults | grep -q '^ckpt-.*tmp' && fail "$point: a temporary folder looks like a checkpoint"
done
"$dsv4" train --out faults --resume --quiet 2>/dev/null
ls -a faults | grep -q '^\.staging' && fail "staging folders were left behind"
diff <(strip full) <(strip faults) >/dev/null || fail "metrics after kills inside saves differ from the uninterrupted run"

# 3. SIGINT: saves a checkpoint at the current step and exits 130 (a long run, so that the
# signal always lands mid-run).
sed 's/"steps": 16,/"steps": 4000,/' recipe.json > long.json
"$dsv4" train --recipe long.json --out sigint --quiet 2>/dev/null &
pid=$!
for _ in $(seq 1 300); do
  n=$(grep -c '"loss"' sigint/metrics.jsonl 2>/dev/null) || n=0
  [ "$n" -ge 3 ] && break
  sleep 0.1
done
kill -INT "$pid"
set +e; wait "$pid"; rc=$?; set -e
[ "$rc" = 130 ] || fail "SIGINT: exit $rc, expected 130"
step=$(grep -c '"loss"' sigint/metrics.jsonl)
[ "$step" -ge 3 ] && [ "$step" -lt 4000 ] || fail "SIGINT: $step steps logged"
[ "$(readlink sigint/latest)" = "ckpt-$step" ] || fail "SIGINT: latest is $(readlink sigint/latest), not ckpt-$step"
check_loadable sigint "SIGINT"

# A bad recipe is an error naming the key; the run folder is left alone.
sed 's/"tokens_per_step": 128/"tokens_per_step": 100/' recipe.json > bad.json
set +e; out=$("$dsv4" train --recipe bad.json --out bad 2>&1); rc=$?; set -e
[ "$rc" = 1 ] || fail "bad recipe: exit $rc"
echo "$out" | grep -q "seq_len_stages\[0\].seq_len' 32 does not divide tokens_per_step 100" || fail "bad recipe message: $out"
[ ! -e bad ] || fail "a bad recipe created its run folder"
echo "train_resume: PASS"
