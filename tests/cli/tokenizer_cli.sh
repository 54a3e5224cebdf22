#!/usr/bin/env bash
# dsv4 encode / decode as a user meets them (no oracle needed): the byte tokenizer's ids,
# a round trip, several files at once, and clear failures for a broken tokenizer file, a
# missing file and bad ids.
# Usage: tokenizer_cli.sh DSV4_CLI FIXTURES_DIR SCRATCH_DIR
set -euo pipefail
CLI=$1
SCRATCH=$3
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BYTE=$ROOT/data/tokenizers/byte/tokenizer.json
rm -rf "$SCRATCH"
mkdir -p "$SCRATCH"

fail() { echo "FAIL: $*" >&2; exit 1; }

# expect_error WHAT PATTERN COMMAND...: the command fails, saying PATTERN on stderr.
expect_error() {
  local what=$1 pattern=$2
  shift 2
  if "$@" > "$SCRATCH/out" 2> "$SCRATCH/err"; then fail "$what: exit status 0"; fi
  grep -q -- "$pattern" "$SCRATCH/err" || fail "$what: stderr lacks '$pattern': $(cat "$SCRATCH/err")"
  echo "ok   $what: $(head -n 1 "$SCRATCH/err")"
}

# BOS is id 0 and byte b is id 2 + b ("H" = 72 -> 74, "i" = 105 -> 107).
ids=$(printf '<｜begin▁of▁sentence｜>Hi' | "$CLI" encode -t "$BYTE")
[ "$ids" = "0 74 107" ] || fail "encode gave '$ids', expected '0 74 107'"
text=$(printf '0 74 107 1' | "$CLI" decode -t "$BYTE" --skip-special)
[ "$text" = "Hi" ] || fail "decode --skip-special gave '$text'"
echo "ok   byte tokenizer ids"

printf 'na\xefve caf\xc3\xa9\r\n\t<｜User｜> 😀' > "$SCRATCH/a.txt"
printf '' > "$SCRATCH/b.txt"
"$CLI" encode -t "$BYTE" "$SCRATCH/a.txt" "$SCRATCH/b.txt" > "$SCRATCH/ids"
[ "$(wc -l < "$SCRATCH/ids")" -eq 2 ] || fail "two files should give two lines of ids"
[ -z "$(sed -n 2p "$SCRATCH/ids")" ] || fail "an empty file should give an empty line"
head -n 1 "$SCRATCH/ids" | "$CLI" decode -t "$BYTE" > "$SCRATCH/a.decoded"
cmp "$SCRATCH/a.txt" "$SCRATCH/a.decoded" || fail "decode(encode(x)) != x for invalid UTF-8"
echo "ok   round trip of bytes, several files"

printf '{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}}' > "$SCRATCH/merges.json"
printf '{"model": ' > "$SCRATCH/truncated.json"
printf '{"model": {"type": "Unigram", "vocab": []}}' > "$SCRATCH/unigram.json"
expect_error "broken JSON" "not valid JSON" "$CLI" encode -t "$SCRATCH/truncated.json"
expect_error "unknown model type" "model type 'Unigram' is not supported" "$CLI" encode -t "$SCRATCH/unigram.json"
expect_error "merge of an unknown token" "token 'b' is not in the vocabulary" "$CLI" encode -t "$SCRATCH/merges.json"
expect_error "missing tokenizer file" "cannot open" "$CLI" decode -t "$SCRATCH/none.json"
expect_error "id out of range" "token id 271 is not in the vocabulary" \
  bash -c "printf '5 271' | '$CLI' decode -t '$BYTE'"
expect_error "id that is not a number" "'x7' is not a non-negative integer id" \
  bash -c "printf '5 x7' | '$CLI' decode -t '$BYTE'"
expect_error "no -t" "tokenizer" "$CLI" encode
echo "PASS tokenizer cli"
