BUILD=build-dev OUT=/tmp/b bash scripts/device.sh build >/dev/null 2>&1 || { tail -20 /tmp/b/build.log; exit 1; }
export LD_LIBRARY_PATH=/tmp/deps/usr/lib/x86_64-linux-gnu:/tmp/deps/usr/lib/x86_64-linux-gnu/openblas-pthread
build-dev/dsv4 bench --batches 1,8 --contexts 4096 --json $OUT/bench.json >$OUT/bench.log 2>&1
PYTHONUNBUFFERED=1 python3 bench/torch_twin.py --batches 1,8 --contexts 4096 --compile '' --json $OUT/twin.json >$OUT/twin.log 2>&1
grep -E "^decode|^prefill|ceiling" $OUT/bench.log; grep -E "^twin" $OUT/twin.log
