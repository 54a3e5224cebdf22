# as call 1; ncu source counters of one W1/W3 launch of the stream kernel (the register kernel's run
# named no kernel: its regex did not match)
A="--layers 2 --experts 64 --batches 1 --contexts 4096 --steps 1"
OUT=$OUT bash scripts/experiments/ncu_source.sh stream moe_stream_swiglu 3 $A
