# at 3850cbf + w2-smem-not-kept.patch + call8/probes.patch's cuda_layers.cu part (DSV4_PROBE_NO_SHARED)
A="-DDSV4_PROBE_NO_SHARED=1 -DDSV4_W2_SMEM=0" B="-DDSV4_PROBE_NO_SHARED=1" OUT=$OUT bash scripts/experiments/model_ab.sh --layers 20 --batches 1 --contexts 4096 --no-prefill --steps 16
