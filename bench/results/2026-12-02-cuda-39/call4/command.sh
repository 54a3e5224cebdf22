# at 97b325a + call4/scale-fixed-probe.patch (DSV4_PROBE_SCALE_FIXED: every FP4 step reads step 0's
# scale bytes; wrong outputs, timings only)
A="" B="-DDSV4_PROBE_SCALE_FIXED=1" OUT=$OUT bash scripts/experiments/model_ab.sh --layers 20 --batches 1,8 --contexts 4096 --no-prefill --steps 16 | grep -o "^== [a-z] ([^)]*)\|^decode B=[0-9]* C=4096: [0-9.]* ms\|moe.experts [0-9.]* ms"
