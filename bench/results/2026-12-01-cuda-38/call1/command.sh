# at fb2b19f + ../2026-12-01-cuda-37/w2-smem-xs-not-run.patch + the cuda_layers.cu part of
# ../2026-12-01-cuda-37/call8/probes.patch (DSV4_PROBE_NO_SHARED: a probe that skips work)
BUILD=build-dev OUT=/tmp/t bash scripts/device.sh test >/dev/null 2>&1; cp /tmp/t/summary.txt $OUT/
A="-DDSV4_W2_SMEM=0" B="" C="-DDSV4_W2_SMEM_XS=0" D="-DDSV4_W2_SMEM=0 -DDSV4_PROBE_NO_SHARED=1" E="-DDSV4_PROBE_NO_SHARED=1" OUT=$OUT bash scripts/experiments/model_ab.sh --layers 20 --batches 1 --contexts 4096 --no-prefill --steps 16 | grep -o "^== [a-z] ([^)]*)\|^decode B=[0-9]* C=4096: [0-9.]* ms\|moe.experts [0-9.]* ms"
