#!/usr/bin/env bash
# dsv4 parity passes both shared golden fixtures (tolerance rule of fixtures/README.md),
# and fails with a clear message on a folder that is not a fixture.
set -euo pipefail
dsv4=$1 fixtures=$2 scratch=$3
mkdir -p "$scratch"
for f in tiny-fp32 tiny-fp8; do
  "$dsv4" parity "$fixtures/$f" --trace
done
# The threaded paths (OpenMP loops, threaded BLAS) give the same answer.
OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 "$dsv4" parity "$fixtures/tiny-fp8"
if "$dsv4" parity "$scratch" 2>"$scratch/err"; then
  echo "parity on an empty folder should fail"; exit 1
fi
grep -q "config.json" "$scratch/err" || { echo "unclear error:"; cat "$scratch/err"; exit 1; }
echo "parity: both fixtures pass"
