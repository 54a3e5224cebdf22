# at 3850cbf + w2-smem-not-kept.patch (DSV4_W2_SMEM on by default)
BUILD=build-dev OUT=/tmp/t bash scripts/device.sh test >/dev/null 2>&1; cp /tmp/t/summary.txt $OUT/
A="-DDSV4_W2_SMEM=0" B="" OUT=$OUT bash scripts/experiments/model_ab.sh --layers 20 --batches 1,8 --contexts 4096 --no-prefill --steps 16
