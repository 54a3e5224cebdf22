#!/usr/bin/env bash
# Builds of one of the standalone stream experiments side by side (device machine): the sources
# with the definitions of $A, of $B and, if set, of $C and $D (e.g. A=-DDSV4_SCORES_PAIR=1
# B=-DDSV4_SCORES_PAIR=2), each run twice, alternately; the outputs' hashes must agree when a
# variant keeps the summation order. The binaries stay as /tmp/NAME-a, -b, ... (for ncu).
#   A=... B=... [C=... D=...] scripts/experiments/stream_ab.sh indexer|attention|expert|expert_fp8 [args]   -> $OUT/NAME-ab.txt
set -uo pipefail
OUT=${OUT:-out}
NAME=$1
shift
case $NAME in
  indexer) SRC="scripts/experiments/indexer_stream.cu src/ops/indexer.cu src/ops/indexer_wgmma.cu src/ops/indexer_prefill.cu src/ops/topk.cu" ;;
  attention) SRC="scripts/experiments/attention_stream.cu src/ops/attention.cu src/ops/attention_mma.cu src/ops/rope.cu src/ops/quant.cu" ;;
  expert) SRC="scripts/experiments/expert_stream.cu src/ops/gemv.cu" ;;
  expert_fp8) SRC="scripts/experiments/expert_fp8_stream.cu" ;;
  *) echo "unknown experiment $NAME"; exit 2 ;;
esac
NV="nvcc -std=c++20 -O3 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -Isrc $SRC src/cuda/launch.cu"
declare -A DEFS=([a]="${A:-}" [b]="${B:-}")
[ -n "${C+x}" ] && DEFS[c]="$C"
[ -n "${D+x}" ] && DEFS[d]="$D"
VS=$(printf '%s\n' "${!DEFS[@]}" | sort)
for v in $VS; do $NV ${DEFS[$v]} -o /tmp/$NAME-$v 2>&1 | grep -E "error" & done
wait
for round in 1 2; do
  for v in $VS; do
    echo "== $v (${DEFS[$v]:-default}), round $round"
    /tmp/$NAME-$v "$@"
  done
done >"$OUT/$NAME-ab.txt" 2>&1
