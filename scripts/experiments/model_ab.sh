#!/usr/bin/env bash
# Whole-model builds of dsv4 side by side (device machine): the sources with the -D definitions of
# $A, of $B and, if set, of $C, $D and $E, each built by scripts/device.sh into build-ab-X (a variant
# with the definitions of an earlier one reuses its build), then the decode benchmark of each run
# alternately, twice (extra arguments replace the default bench options). $AENV .. $EENV: environment
# settings for a variant's runs (e.g. DENV="DSV4_PDL=0").
#   A=... B=... [C=...] scripts/experiments/model_ab.sh [bench options]   -> $OUT/model-ab.txt
set -uo pipefail
OUT=${OUT:-out}
ARGS=("$@")
[ ${#ARGS[@]} -eq 0 ] && ARGS=(--layers 20 --batches 1 --contexts 4096,1048576 --no-prefill --steps 16)
declare -A DEFS=([a]="${A:-}" [b]="${B:-}")
[ -n "${C+x}" ] && DEFS[c]="$C"
[ -n "${D+x}" ] && DEFS[d]="$D"
[ -n "${E+x}" ] && DEFS[e]="$E"
declare -A ENVS=([a]="${AENV:-}" [b]="${BENV:-}" [c]="${CENV:-}" [d]="${DENV:-}" [e]="${EENV:-}")
VS=$(printf '%s\n' "${!DEFS[@]}" | sort)
declare -A BIN=()
for v in $VS; do
  for u in $VS; do
    [ "$u" = "$v" ] && break
    [ "${DEFS[$u]}" = "${DEFS[$v]}" ] && BIN[$v]=${BIN[$u]} && break
  done
  [ -n "${BIN[$v]:-}" ] && continue
  BIN[$v]=build-ab-$v/dsv4
  BUILD=build-ab-$v CUDA_DEFS="${DEFS[$v]}" OUT=/tmp/ab-$v bash scripts/device.sh build >/dev/null 2>&1 ||
    { echo "build $v failed"; tail -20 /tmp/ab-$v/build.log; exit 1; }
done
export LD_LIBRARY_PATH=/tmp/deps/usr/lib/x86_64-linux-gnu:/tmp/deps/usr/lib/x86_64-linux-gnu/openblas-pthread:${LD_LIBRARY_PATH:-}
for round in 1 2; do
  for v in $VS; do
    echo "== $v (${DEFS[$v]:-default} ${ENVS[$v]}), round $round"
    env ${ENVS[$v]} ${BIN[$v]} bench "${ARGS[@]}" 2>&1 | grep -E "^decode|one step by section"
  done
done >"$OUT/model-ab.txt" 2>&1
cat "$OUT/model-ab.txt"
