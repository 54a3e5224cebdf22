F=$OUT/final; mkdir -p $F; OUT=$F bash scripts/device.sh all >$F/all.out 2>&1
export LD_LIBRARY_PATH=/tmp/deps/usr/lib/x86_64-linux-gnu:/tmp/deps/usr/lib/x86_64-linux-gnu/openblas-pthread
build-dev/dsv4 bench --layers 43 --experts 32 --batches 1 --contexts 4096,1048576 --no-prefill --steps 8 >$OUT/l43.txt 2>&1
tail -30 $F/summary.txt; grep -E "^decode|ceiling|read bandwidth:" $OUT/l43.txt
