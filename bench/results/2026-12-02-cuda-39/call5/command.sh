# at 97b325a + scripts/experiments/scale_layout.cu (its first form; the rerun ran the committed one)
nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a scripts/experiments/scale_layout.cu -o /tmp/sl && /tmp/sl | tee $OUT/scale-layout.txt
