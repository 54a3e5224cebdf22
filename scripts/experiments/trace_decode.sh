#!/usr/bin/env bash
# A kernel timeline of graph decode steps (kernel_trace.cpp) and its summary (kernel_trace.py).
# Device machine only; after scripts/device.sh build. Extra arguments go to dsv4 bench.
#   scripts/experiments/trace_decode.sh NAME [bench options]   -> $OUT/trace-NAME.txt (+ .sum)
set -euo pipefail
OUT=${OUT:-out}
NAME=$1
shift
CU=/usr/local/cuda
[ -f /tmp/libktrace.so ] || g++ -O2 -shared -fPIC -I$CU/include scripts/experiments/kernel_trace.cpp \
  -L$CU/lib64 -L$CU/lib -lcupti -Wl,-rpath,$CU/lib64 -Wl,-rpath,$CU/lib -o /tmp/libktrace.so
CUDA_INJECTION64_PATH=/tmp/libktrace.so KTRACE_OUT=/tmp/trace-$NAME.txt ${BUILD:-build-dev}/dsv4 bench --no-prefill "$@" \
  2>&1 | grep -E "^decode|graph:" >"$OUT/trace-$NAME.sum"
nodes=$(grep -oE "graph: [0-9]+ nodes" "$OUT/trace-$NAME.sum" | tail -1 | grep -oE "[0-9]+")
python3 scripts/experiments/kernel_trace.py /tmp/trace-$NAME.txt --nodes "$nodes" --list >>"$OUT/trace-$NAME.sum"
