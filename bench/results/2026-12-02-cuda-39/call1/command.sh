# at e507478 + call1/tile-wait.patch (DSV4_MOE_TILE_WAIT, default 1: each routed down block waits for
# its own tile's h through per-tile counters, not for the whole SwiGLU launch)
BUILD=build-dev OUT=/tmp/t bash scripts/device.sh test >/dev/null 2>&1; cp /tmp/t/summary.txt $OUT/
A="-DDSV4_MOE_TILE_WAIT=0" B="" OUT=$OUT bash scripts/experiments/model_ab.sh --layers 20 --batches 1,8 --contexts 4096 --no-prefill --steps 16 | grep -o "^== [a-z] ([^)]*)\|^decode B=[0-9]* C=4096: [0-9.]* ms\|moe.experts [0-9.]* ms"
