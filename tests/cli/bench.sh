#!/usr/bin/env bash
# dsv4 bench refuses options out of range with a message naming the option, before it looks for a
# GPU; it checks that --json can be written before anything runs, without truncating the file;
# and without a GPU it says so.
set -euo pipefail
dsv4=$1 scratch=$3
mkdir -p "$scratch"
fail() { echo "bench: $*"; exit 1; }

# expect_error "what the message names" args...: exit status 1 and the name in the message.
expect_error() {
  local name=$1
  shift
  set +e
  "$dsv4" bench "$@" > /dev/null 2> "$scratch/err"
  local rc=$?
  set -e
  [ "$rc" = 1 ] || fail "bench $*: exit $rc, expected 1: $(cat "$scratch/err")"
  grep -q -- "$name" "$scratch/err" || fail "bench $*: the message does not name $name: $(cat "$scratch/err")"
}

expect_error --layers --layers 0
expect_error --layers --layers 44
expect_error --experts --experts 5
expect_error --experts --experts 300
expect_error --steps --steps 0
expect_error --chunk --chunk -1
expect_error --prefill --prefill 0
expect_error --long --long -5
expect_error --batches --batches 1,0
expect_error --contexts --contexts 4096,-1
expect_error --json --json "$scratch/no-such-folder/out.json"
# A range error comes first even where a GPU would be found: nothing has run.
expect_error --layers --layers 0 --json "$scratch/never.json"
[ ! -e "$scratch/never.json" ] || fail "an option error left --json's file behind"

if ! nvidia-smi > /dev/null 2>&1; then
  # Good options, no GPU: a clear message; the --json check neither truncated an existing file
  # nor left a new one behind.
  echo keep > "$scratch/kept.json"
  expect_error "CUDA" --no-prefill --no-decode --json "$scratch/kept.json"
  grep -q "no usable CUDA device\|built without CUDA" "$scratch/err" || fail "no GPU: unclear: $(cat "$scratch/err")"
  [ "$(cat "$scratch/kept.json")" = keep ] || fail "the --json check changed an existing file"
  expect_error "CUDA" --no-prefill --no-decode --json "$scratch/new.json"
  [ ! -e "$scratch/new.json" ] || fail "the --json check left a new file behind"
fi
echo "bench: bad options and a missing GPU give clear errors"
