# at 7d76667 + scripts/experiments/persistent_chain.cu's SPIN_NS (committed after the call, unchanged)
nvcc -std=c++17 -O3 -DBATCHED_NORM=1 -gencode=arch=compute_90a,code=sm_90a scripts/experiments/persistent_chain.cu -o /tmp/pc && for D in 4096 2048; do for t in 0 3000 6000 10000; do echo "== D=$D SPIN_NS=$t"; SPIN_NS=$t /tmp/pc $D 20; done; done | tee $OUT/spin.txt
