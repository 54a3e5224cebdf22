#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole CPU test suite with ctest.
# GPU tests (label `gpu`) run on the device machine: scripts/device.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD=${BUILD_DIR:-build}
cd "$BUILD"
ctest --output-on-failure -LE gpu -j "${JOBS:-$(nproc)}" --timeout 1500
