#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole CPU test suite with ctest.
# GPU tests (label `gpu`) run on the device machine: scripts/device.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD=${BUILD_DIR:-build}
cd "$BUILD"
# Tests run two at a time on small models: one thread each avoids oversubscribing the
# cores (OpenMP and OpenBLAS would otherwise each start a thread per core per test).
# Tests of the threaded paths set their own thread counts.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
ctest --output-on-failure -LE gpu -j "${JOBS:-$(nproc)}" --timeout 1500
