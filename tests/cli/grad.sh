#!/usr/bin/env bash
# dsv4 grad reproduces the reference's training gradients on tiny-fp32 (fixtures/README.md,
# "Training gradients": per tensor ‖Δg‖/‖g‖ <= 1e-3, |Δloss| <= 1e-4, the same names), and
# grad-compare fails on gradients that are off.
set -euo pipefail
dsv4=$1 fixtures=$2 scratch=$3
mkdir -p "$scratch"
ref=$fixtures/tiny-fp32/grad.safetensors
"$dsv4" grad "$fixtures/tiny-fp32" "$scratch/batch.safetensors" "$scratch/grad.safetensors" --ids-from "$ref"
"$dsv4" grad-compare "$scratch/grad.safetensors" "$ref" --top 5
# the comparison must notice a wrong gradient: the dense phase attends other entries in CSA layers
"$dsv4" grad "$fixtures/tiny-fp32" "$scratch/batch.safetensors" "$scratch/dense.safetensors" --phase dense
if "$dsv4" grad-compare "$scratch/dense.safetensors" "$ref" > "$scratch/dense.log"; then
  echo "grad-compare accepted dense-phase gradients against the sparse reference"; exit 1
fi
grep -q "grad-compare: FAIL" "$scratch/dense.log"
echo "grad: matches the reference"
