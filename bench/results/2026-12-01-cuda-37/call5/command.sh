# at 3850cbf + expert-stream-xs-prefetch-not-kept.patch (DSV4_MOE_PREFETCH_X on, staging off)
A="-DDSV4_MOE_PREFETCH_X=0" B="" OUT=$OUT bash scripts/experiments/model_ab.sh --layers 20 --batches 1,8 --contexts 4096 --no-prefill --steps 16
