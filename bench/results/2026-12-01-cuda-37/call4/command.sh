# at 3850cbf + expert-stream-xs-prefetch-not-kept.patch without the L1 prefetch (DSV4_MOE_STAGE_X on,
# DSV4_EXPERT_STREAM off by default)
BUILD=build-dev OUT=/tmp/t bash scripts/device.sh test >/dev/null 2>&1; cp /tmp/t/summary.txt $OUT/
A="-DDSV4_MOE_STAGE_X=0" B="" C="-DDSV4_EXPERT_STREAM=1" OUT=$OUT bash scripts/experiments/model_ab.sh --layers 20 --batches 1,8 --contexts 4096 --no-prefill --steps 16
