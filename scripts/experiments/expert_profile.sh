#!/usr/bin/env bash
# Pipe use and SASS of the decode expert products (moe_gemv_kernel) at B=1: ncu's full set (raw
# metrics) of the first launches of a 2-layer bench, as kept and with the -D definitions of
# $PROBE_DEFS (e.g. -DDSV4_MOE_FP4_DEPTH=3, or a timing probe's), and the SASS of the W1/W3
# and W2 forms with an opcode count of each. Device machine only. BUILDS="dir1 dir2" profiles builds
# made before (e.g. by model_ab.sh) instead.
#   OUT=... bash scripts/experiments/expert_profile.sh  -> $OUT/raw-*.csv, $OUT/sass-*.txt, $OUT/ops.txt
# KREGEX=... profiles other kernels (a regex of their names; moe_gemv_kernel by default).
set -uo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
if [ -z "${BUILDS:-}" ]; then
  BUILDS="build-dev build-probe"
  BUILD=build-dev OUT=/tmp/b1 bash scripts/device.sh build >/dev/null 2>&1 || { echo "build failed"; tail -30 /tmp/b1/*; }
  BUILD=build-probe CUDA_DEFS="${PROBE_DEFS:-}" OUT=/tmp/b2 bash scripts/device.sh build >/dev/null 2>&1 ||
    { echo "probe build failed"; tail -30 /tmp/b2/*; }
fi
export LD_LIBRARY_PATH=/tmp/deps/usr/lib/x86_64-linux-gnu:/tmp/deps/usr/lib/x86_64-linux-gnu/openblas-pthread
A="bench --layers 2 --experts 64 --batches 1 --contexts 4096 --no-prefill --steps 1"
for b in $BUILDS; do
  ncu --clock-control none --set full -k regex:${KREGEX:-moe_gemv_kernel} --launch-count ${COUNT:-8} --page raw --csv \
    $b/dsv4 $A >"$OUT/raw-$b.csv" 2>/tmp/err-$b.txt
  python3 scripts/experiments/ncu_raw_summary.py "$OUT/raw-$b.csv"
  tail -5 /tmp/err-$b.txt
done
SASS_BUILD=${BUILDS%% *}
cuobjdump -sass "$SASS_BUILD/dsv4" >/tmp/all.sass 2>/dev/null
for pair in "w13:moe_gemv_kernelILb1ELb1ELi1E" "w2:moe_gemv_kernelILb0ELb1ELi4E"; do
  name=${pair%%:*} pat=${pair#*:}
  awk -v p="$pat" '/Function : /{on = index($0, p) > 0} on' /tmp/all.sass >"$OUT/sass-$name.txt"
  echo "== $name: $(grep -c '/\*[0-9a-f]*\*/' "$OUT/sass-$name.txt") instructions"
  grep -o '/\*[0-9a-f]*\*/ *[@!A-Z0-9P]* *[A-Z][A-Z0-9_.]*' "$OUT/sass-$name.txt" | awk '{print $NF}' | sed 's/\..*//' |
    sort | uniq -c | sort -rn | head -30
done >"$OUT/ops.txt"
cat "$OUT/ops.txt"
