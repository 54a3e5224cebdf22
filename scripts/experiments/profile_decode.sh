#!/usr/bin/env bash
# Per-kernel times of a 4-layer B=1 decode step (ncu, real clocks) and full profiles of chosen kernels. Device machine only.
set -x
bash scripts/device.sh build >/dev/null 2>&1; B=build-dev/dsv4
A="bench --layers 4 --batches 1 --contexts 4096 --no-prefill --steps 1"
ncu --clock-control none --metrics gpu__time_duration.sum --csv $B $A > /tmp/ncu-4k.csv 2>&1
python3 bench/ncu_summary.py /tmp/ncu-4k.csv --sequence 130 > $OUT/ncu-4k.txt 2>&1
cp /tmp/ncu-4k.csv $OUT/
ncu --clock-control none --set full -k regex:"hc_pre_fused|sparse_attention_mma" --launch-skip 4 --launch-count 4 $B $A > $OUT/ncu-full-hc-attn.txt 2>&1
ncu --clock-control none --set full -k regex:"gemv_kernel" --launch-skip 6 --launch-count 6 $B $A > $OUT/ncu-full-gemv.txt 2>&1
ls -la $OUT
