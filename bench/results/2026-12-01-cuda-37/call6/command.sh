# at 3850cbf + carveout-probe.patch
A="" B="-DDSV4_PROBE_CARVEOUT=1" C="-DDSV4_PROBE_CARVEOUT=2" OUT=$OUT bash scripts/experiments/model_ab.sh --layers 20 --batches 1,8 --contexts 4096 --no-prefill --steps 16
