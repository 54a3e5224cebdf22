#!/usr/bin/env bash
# Packs what scripts/device.sh needs on the device machine (which has nvcc, cmake and ninja but
# not the Debian -dev packages, and no network) into .deps/ (ignored by git: add `/.deps/` to
# .git/info/exclude): the .deb files of the build dependencies and a packed copy of the two golden
# fixtures (../shared does not travel with the checkout). Pass `.deps` in the tool's `carry`.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.deps/' .git/info/exclude 2>/dev/null || echo '/.deps/' >>.git/info/exclude
mkdir -p .deps/debs
(cd .deps/debs && apt-get download libopenblas0-pthread libopenblas-pthread-dev libopenblas-dev libgfortran5 \
  libpcre2-dev libpcre2-8-0 nlohmann-json3-dev libcli11-dev libgtest-dev libgmock-dev libbenchmark-dev \
  libbenchmark1debian pkgconf pkgconf-bin libpkgconf3)
# The fixtures travel packed (28 MB -> 25 MB): the working tree and the carry share a 64 MiB limit.
rm -rf .deps/shared
for f in tiny-fp32 tiny-fp8; do
  mkdir -p .deps/shared/fixtures/$f
  cp ../shared/fixtures/$f/{config.json,model.safetensors,cases.json,expected.safetensors} .deps/shared/fixtures/$f/
done
tar cf - -C .deps shared | xz -T0 -6 >.deps/shared.tar.xz
rm -rf .deps/shared
du -sh .deps
