# at 3850cbf + call8/probes.patch (probes that skip work: the numbers are timings only)
A="" B="-DDSV4_PROBE_NO_W2=1" C="-DDSV4_PROBE_NO_SHARED=1" D="-DDSV4_PROBE_NO_W2=1 -DDSV4_PROBE_NO_SHARED=1" OUT=$OUT bash scripts/experiments/model_ab.sh --layers 20 --batches 1 --contexts 4096 --no-prefill --steps 16
