#!/usr/bin/env bash
# The GPU work of dsv4 in one call on the device machine (the `run` tool of this workplace):
#   scripts/device.sh [test|bench|all] [bench options...]
# (a) unpacks the build dependencies carried in .deps/debs (Debian packages, see
#     scripts/pack_deps.sh) into /tmp/deps, since the device image lacks the -dev packages;
# (b) configures and builds for sm_90a (CMake + Ninja) in build-dev (or $BUILD; $CUDA_DEFS adds
#     -D definitions to the CUDA sources, for side-by-side builds of a variant);
# (c) test: the GPU tests (ctest -L gpu), parity of both fixtures on the GPU (f32 and fast);
#     bench: dsv4 bench and the PyTorch twin (bench/torch_twin.py) on the same machine
#     (SKIP_TWIN=1 leaves the twin out; extra arguments go to dsv4 bench);
# (d) prints a short table last. Logs go to $OUT (the tool brings them back).
set -uo pipefail
MODE=${1:-all}
shift || true
ROOT=$(pwd)
OUT=${OUT:-$ROOT/out}
mkdir -p "$OUT"
DEPS=/tmp/deps
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
note() { echo "$*" | tee -a "$SUMMARY"; }

# ---- (a) dependencies ----------------------------------------------------------------------
{
  echo "== machine"; uname -a; grep PRETTY /etc/os-release; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
  nvcc --version | tail -2; cmake --version | head -1; g++ --version | head -1
  python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.is_available())'
} >>"$SUMMARY" 2>&1
mkdir -p "$DEPS"
for f in .deps/debs/*.deb; do
  if command -v dpkg-deb >/dev/null; then dpkg-deb -x "$f" "$DEPS"
  else (d=$(mktemp -d) && cd "$d" && ar x "$ROOT/$f" && tar xf data.tar.* -C "$DEPS"); fi
done
ML=$DEPS/usr/lib/x86_64-linux-gnu
# .pc files name absolute /usr paths: point them at the unpacked prefix.
find "$DEPS" -name '*.pc' -exec sed -i "s|=/usr|=$DEPS/usr|g; s|^prefix=/usr|prefix=$DEPS/usr|" {} +
export PKG_CONFIG_PATH=$ML/pkgconfig:$ML/openblas-pthread/pkgconfig:$DEPS/usr/share/pkgconfig
export LD_LIBRARY_PATH=$ML:$ML/openblas-pthread:${LD_LIBRARY_PATH:-}
PKGCONF=$(command -v pkg-config || echo "$DEPS/usr/bin/pkgconf")
# The golden fixtures: .deps/shared, or packed as .deps/shared.tar.xz (the carry limit).
SHARED=$ROOT/.deps/shared
if [ ! -d "$SHARED" ] && [ -f "$ROOT/.deps/shared.tar.xz" ]; then
  SHARED=/tmp/dsv4-shared/shared
  [ -d "$SHARED" ] || { mkdir -p /tmp/dsv4-shared && tar xJf "$ROOT/.deps/shared.tar.xz" -C /tmp/dsv4-shared; }
fi

# ---- (b) build -------------------------------------------------------------------------------
GEN=$(command -v ninja >/dev/null && echo Ninja || echo "Unix Makefiles")
t0=$(date +%s)
BUILD=${BUILD:-build-dev}
cmake -S . -B "$BUILD" -G "$GEN" -DCMAKE_BUILD_TYPE=Release -DDSV4_CUDA=ON -DCMAKE_CUDA_FLAGS="${CUDA_DEFS:-}" \
  -DCMAKE_PREFIX_PATH="$DEPS/usr" -DPKG_CONFIG_EXECUTABLE="$PKGCONF" \
  -DGTest_DIR="$ML/cmake/GTest" -Dbenchmark_DIR="$ML/cmake/benchmark" \
  -DCLI11_DIR="$DEPS/usr/share/cmake/CLI11" -Dnlohmann_json_DIR="$DEPS/usr/share/cmake/nlohmann_json" \
  -DDSV4_SHARED="$SHARED" >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
cmake --build "$BUILD" -j "$(nproc)" --target dsv4_cli dsv4_gpu_tests >>"$OUT/build.log" 2>&1 ||
  { grep -E "error|Error" -A5 "$OUT/build.log" | head -60; exit 1; }
note "build: $(( $(date +%s) - t0 )) s"
DSV4=$BUILD/dsv4
FIX=$SHARED/fixtures

# ---- (c) tests -------------------------------------------------------------------------------
if [ "$MODE" = test ] || [ "$MODE" = all ]; then
  t0=$(date +%s)
  "$BUILD"/tests/dsv4_gpu_tests --gtest_color=no >"$OUT/gpu_tests.log" 2>&1
  note "gpu tests: exit $? in $(( $(date +%s) - t0 )) s; $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/gpu_tests.log" | tr '\n' ' ')"
  grep -E '^\[  FAILED  \]' "$OUT/gpu_tests.log" | tee -a "$SUMMARY"
  for fx in tiny-fp32 tiny-fp8; do
    for p in f32 fast; do
      echo "== dsv4 parity $fx --device cuda --precision $p" >>"$OUT/parity.log"
      $DSV4 parity "$FIX/$fx" --device cuda --precision $p >/tmp/parity.txt 2>&1
      rc=$?
      cat /tmp/parity.txt >>"$OUT/parity.log"
      note "parity $fx $p: exit $rc | $(grep -E '^(long|short|fast path over)' /tmp/parity.txt | sed 's/  */ /g' | tr '\n' ';')"
    done
  done
  echo "== dsv4 parity tiny-fp32 --device cuda --trace" >>"$OUT/parity.log"
  $DSV4 parity "$FIX/tiny-fp32" --device cuda --trace >>"$OUT/parity.log" 2>&1
fi

# ---- (c') benchmarks ---------------------------------------------------------------------------
if [ "$MODE" = bench ] || [ "$MODE" = all ]; then
  $DSV4 bench --json "$OUT/bench.json" "$@" 2>&1 | tee "$OUT/bench.log" | tail -40
  if [ -f bench/torch_twin.py ] && [ -z "${SKIP_TWIN:-}" ]; then
    PYTHONUNBUFFERED=1 python3 bench/torch_twin.py --json "$OUT/twin.json" 2>&1 | tee "$OUT/twin.log" | tail -20
  fi
fi

# ---- (d) the short table -------------------------------------------------------------------
echo "================ summary"
cat "$SUMMARY"
