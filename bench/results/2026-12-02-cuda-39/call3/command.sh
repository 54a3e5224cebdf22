# at e507478 + call3/combine-groups.patch (DSV4_COMBINE_GROUPS: the attention combine's warps a block)
A="" B="-DDSV4_COMBINE_GROUPS=1" C="-DDSV4_COMBINE_GROUPS=2" D="-DDSV4_COMBINE_GROUPS=4" OUT=$OUT bash scripts/experiments/model_ab.sh --layers 20 --batches 1 --contexts 4096,1048576 --no-prefill --steps 16 | grep -o "^== [a-z] ([^)]*)\|^decode B=[0-9]* C=[0-9]*: [0-9.]* ms\|attn.out [0-9.]* ms"
