#!/usr/bin/env bash
# Runs decode_frame.cu's builds side by side on the device machine (a development experiment, not
# part of dsv4). Full outputs go to $OUT as two files (table.md and logs.tgz, the device's way
# back); a short table is printed last. The check column is the CPU comparison of every stage.
# One warpgroup's builds must print the measured form's hash (90ad7cf5b75ffec1 for `attn 8` with
# WQA_SPLITS=2, bench/results/2026-12-02-cuda-40.md); two warpgroups add in another order.
#   SWEEP=builds (the default): the measured form and the switches after it (-DPIPE=1,
#     -DB_BRANCHLESS=1, both; -DCONSUMER_WGS=2 alone and with -DB_BRANCHLESS=1), each on `attn 8`
#     with WQA_SPLITS=2 at 1, 2 and 5 copies in flight, then the fastest with latency stages of
#     3 + 8 µs (bench/results/2026-12-02-cuda-41.md, call 1).
#   SWEEP=spun: the -DPIPE=1 -DB_BRANCHLESS=1 build with latency stages of 3 + 8 µs, at copies in
#     flight (INFLIGHT) and copies in flight for the stages after a latency stage (INFLIGHT_SPUN):
#     can the ring's run-ahead hide a latency stage when its copies go out deep, or with the rest of
#     the stage's share requested into L2 (L2_AHEAD=1)? (2026-12-02-cuda-41.md, calls 2 and 3)
#   OUT=/tmp/df bash scripts/experiments/decode_frame.sh
set -euo pipefail
cd "$(dirname "$0")"
OUT=${OUT:-/tmp/decode_frame}
WORK=$(mktemp -d)  # the builds and the runs' outputs
mkdir -p "$OUT"
F="-std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -I../../src"
declare -A FLAGS=([base]="" [pipe]="-DPIPE=1" [branchless]="-DB_BRANCHLESS=1" [both]="-DPIPE=1 -DB_BRANCHLESS=1"
  [wg2]="-DCONSUMER_WGS=2" [wg2-branchless]="-DCONSUMER_WGS=2 -DB_BRANCHLESS=1")
SWEEP=${SWEEP:-builds}
BUILDS="base pipe branchless both wg2 wg2-branchless"
[ "$SWEEP" = spun ] && BUILDS="both"
for b in $BUILDS; do
  # shellcheck disable=SC2086
  nvcc $F ${FLAGS[$b]} decode_frame.cu -o "$WORK/df-$b" &
done
wait
# One row: build, in flight, µs a half of the persistent form (both rounds), of the launches, the
# check and the hash, from a run's output.
row() {
  awk -F'|' -v b="$1" -v n="$2" '
    /^persist: worst/ { check = ($0 ~ /PASS/) ? "PASS" : "FAIL"; k = split($0, w, " "); hash = w[k] }
    /^\| persist: ring/ { p = p (p == "" ? "" : ", ") ($4 + 0) }
    /^\| launches: a kernel/ { l = l (l == "" ? "" : ", ") ($4 + 0) }
    END { printf "| %s | %s | %s | %s | %s | %s |\n", b, n, p, l, check, hash }' "$3"
}
TABLE="$WORK/table.md"
echo "| build | in flight | persist, µs a half | launches | check | hash |" >"$TABLE"
echo "|---|---|---|---|---|---|" >>"$TABLE"
if [ "$SWEEP" = spun ]; then
  # label, then the environment of one run
  while read -r label envs; do
    log="$WORK/spun-$label.txt"
    # shellcheck disable=SC2086
    env WQA_SPLITS=2 $envs timeout 120 "$WORK/df-both" attn 8 >"$log" 2>&1 || echo "($label: exit $?)" >>"$log"
    row "$label" "${envs// /, }" "$log" >>"$TABLE"
  done <<'RUNS'
nospin-1 INFLIGHT=1
spin-1 INFLIGHT=1 SPIN_MHC_NS=3000 SPIN_ATTN_NS=8000
spin-1-spun5 INFLIGHT=1 INFLIGHT_SPUN=5 SPIN_MHC_NS=3000 SPIN_ATTN_NS=8000
spin-1-l2 INFLIGHT=1 L2_AHEAD=1 SPIN_MHC_NS=3000 SPIN_ATTN_NS=8000
spin-1-spun5-l2 INFLIGHT=1 INFLIGHT_SPUN=5 L2_AHEAD=1 SPIN_MHC_NS=3000 SPIN_ATTN_NS=8000
long-1 INFLIGHT=1 SPIN_MHC_NS=3000 SPIN_ATTN_NS=16000
long-1-spun5 INFLIGHT=1 INFLIGHT_SPUN=5 SPIN_MHC_NS=3000 SPIN_ATTN_NS=16000
long-1-l2 INFLIGHT=1 L2_AHEAD=1 SPIN_MHC_NS=3000 SPIN_ATTN_NS=16000
RUNS
  cp "$TABLE" "$OUT/table.md"
  tar czf "$OUT/logs.tgz" -C "$WORK" --exclude='df-*' .
  cat "$TABLE"
  exit 0
fi
for b in $BUILDS; do
  for n in 1 2 5; do
    log="$WORK/$b-inflight$n.txt"
    INFLIGHT=$n WQA_SPLITS=2 timeout 120 "$WORK/df-$b" attn 8 >"$log" 2>&1 || echo "($b, $n: exit $?)" >>"$log"
    row "$b" "$n" "$log" >>"$TABLE"
  done
done
# The fastest build that passed, again with the latency stages.
best=$(tail -n +3 "$TABLE" | awk -F'|' '$6 ~ /PASS/ {split($4, a, ","); print a[1] + 0, $2, $3}' | sort -n | head -1)
if [ -z "$best" ]; then
  cp "$TABLE" "$OUT/table.md"
  tar czf "$OUT/logs.tgz" -C "$WORK" --exclude='df-*' .
  cat "$TABLE"
  echo "no build passed its check" >&2
  exit 1
fi
read -r _ bb nn <<<"$best"
log="$WORK/$bb-inflight$nn-spins.txt"
SPIN_MHC_NS=3000 SPIN_ATTN_NS=8000 INFLIGHT=$nn WQA_SPLITS=2 timeout 120 "$WORK/df-$bb" attn 8 >"$log" 2>&1 || true
row "$bb + spins 3 + 8 µs" "$nn" "$log" >>"$TABLE"
cp "$TABLE" "$OUT/table.md"
tar czf "$OUT/logs.tgz" -C "$WORK" --exclude='df-*' .
cat "$TABLE"
