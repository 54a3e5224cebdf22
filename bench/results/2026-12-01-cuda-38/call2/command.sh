# at 7783b20 + call2/l2-next-layer.patch (DSV4_L2_NEXT: the next layer's first products' weights
# requested into L2 by the routed experts' blocks; 1 = the products before wq_b, 2 = and wq_b;
# DSV4_L2_NEXT_FROM=1: by W1/W3's blocks instead of W2's)
A="" B="-DDSV4_L2_NEXT=1" C="-DDSV4_L2_NEXT=2" D="-DDSV4_L2_NEXT=2 -DDSV4_L2_NEXT_FROM=1" E="-DDSV4_L2_NEXT=1 -DDSV4_L2_NEXT_FROM=1" OUT=$OUT bash scripts/experiments/model_ab.sh --layers 20 --batches 1 --contexts 4096 --no-prefill --steps 16 | grep -o "^== [a-z] ([^)]*)\|^decode B=[0-9]* C=4096: [0-9.]* ms\|one step by section.*"
