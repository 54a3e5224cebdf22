#!/usr/bin/env bash
# The whole model against its parent (or any commit), side by side, where a change has no -D switch
# for model_ab.sh. Two steps:
#   here:   scripts/experiments/tree_ab.sh prepare [COMMIT]   (default HEAD)
#           writes base-tree/: COMMIT's sources (git archive; git-ignored), for the run tool's
#           `carry` (base-tree beside .deps);
#   device: scripts/experiments/tree_ab.sh run [bench options]   -> $OUT/tree-ab.txt
#           builds base-tree (its own build-base, the carried .deps) and the working tree
#           (build-dev, as scripts/device.sh does), then runs `dsv4 bench` with each, alternately,
#           twice (default options: 20 layers, batch 1, 4K and 1M, no prefill, 16 steps).
# The device run needs no git: the device machine's copy of the tree has none.
set -uo pipefail
MODE=${1:-}
shift || true
ROOT=$(pwd)
BASE=$ROOT/base-tree
case "$MODE" in
  prepare)
    COMMIT=${1:-HEAD}
    git rev-parse --verify --quiet "$COMMIT^{commit}" >/dev/null || { echo "tree_ab: no commit $COMMIT" >&2; exit 2; }
    rm -rf "$BASE" && mkdir -p "$BASE" || exit 1
    git archive "$COMMIT" CMakeLists.txt src tests tools bench/CMakeLists.txt bench/bench_forward.cpp \
      bench/bench_tokenizer.cpp scripts configs data | tar -x -C "$BASE" || exit 1
    git rev-parse "$COMMIT" >"$BASE/COMMIT"
    echo "tree_ab: base-tree/ holds $(cut -c1-7 "$BASE/COMMIT") ($(du -sh "$BASE" | cut -f1)); carry it with .deps"
    ;;
  run)
    [ -f "$BASE/COMMIT" ] || { echo "tree_ab: no base-tree/ (run 'prepare' here and carry it)" >&2; exit 2; }
    [ -d .deps ] || { echo "tree_ab: no .deps (carry it)" >&2; exit 2; }
    OUT=${OUT:-$ROOT/out}
    mkdir -p "$OUT"
    ARGS=("$@")
    [ ${#ARGS[@]} -eq 0 ] && ARGS=(--layers 20 --batches 1 --contexts 4096,1048576 --no-prefill --steps 16)
    rm -rf "$BASE/.deps" && cp -r .deps "$BASE/" || exit 1
    (cd "$BASE" && BUILD=build-base OUT=/tmp/tree-ab-base bash scripts/device.sh build >/dev/null 2>&1) ||
      { echo "tree_ab: the base build failed"; tail -20 /tmp/tree-ab-base/build.log; exit 1; }
    BUILD=build-dev OUT=/tmp/tree-ab-dev bash scripts/device.sh build >/dev/null 2>&1 ||
      { echo "tree_ab: the build failed"; tail -20 /tmp/tree-ab-dev/build.log; exit 1; }
    export LD_LIBRARY_PATH=/tmp/deps/usr/lib/x86_64-linux-gnu:/tmp/deps/usr/lib/x86_64-linux-gnu/openblas-pthread:${LD_LIBRARY_PATH:-}
    for round in 1 2; do
      for v in base dev; do
        bin=build-dev/dsv4
        label="working tree"
        [ $v = base ] && bin=$BASE/build-base/dsv4 && label="base $(cut -c1-7 "$BASE/COMMIT")"
        echo "== $label, round $round"
        $bin bench "${ARGS[@]}" >/tmp/tree-ab-bench.log 2>&1
        rc=$?
        grep -E "^decode|^prefill" /tmp/tree-ab-bench.log
        [ $rc -eq 0 ] || { echo "tree_ab: dsv4 bench failed (exit $rc):"; tail -3 /tmp/tree-ab-bench.log; }
      done
    done >"$OUT/tree-ab.txt" 2>&1
    cat "$OUT/tree-ab.txt"
    ! grep -q "^tree_ab: dsv4 bench failed" "$OUT/tree-ab.txt"
    ;;
  *)
    echo "usage: scripts/experiments/tree_ab.sh prepare [COMMIT] | run [bench options]" >&2
    exit 2
    ;;
esac
