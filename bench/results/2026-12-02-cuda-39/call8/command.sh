# at 88919ec + scripts/experiments/wgmma_fp8_consume.cu (its tidied form reran in call 9)
nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Isrc scripts/experiments/wgmma_fp8_consume.cu -o /tmp/wc && timeout 120 /tmp/wc | tee $OUT/wgmma-consume.txt
