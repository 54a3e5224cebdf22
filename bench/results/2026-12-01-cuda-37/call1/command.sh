# at 3850cbf + expert-stream-xs-prefetch-not-kept.patch's stream kernel only (DSV4_EXPERT_STREAM on by default then)
BUILD=build-dev OUT=/tmp/t bash scripts/device.sh test >/dev/null 2>&1; cp /tmp/t/summary.txt $OUT/
A="-DDSV4_EXPERT_STREAM=0" B="" C="-DDSV4_STREAM_CHUNK=4" OUT=$OUT bash scripts/experiments/model_ab.sh --layers 20 --batches 1,8 --contexts 4096 --no-prefill --steps 16
