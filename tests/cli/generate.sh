#!/usr/bin/env bash
# dsv4 init + dsv4 generate on a tiny random model with the byte tokenizer: a prompt from
# -p, from stdin, from a file; --chat; --interactive fed through a pipe (state reused on
# the second turn); same seed = same text; broken model folders fail with a message.
# usage: generate.sh <dsv4-cli> <fixtures-dir> <scratch-dir>
set -euo pipefail
cli=$1
scratch=$3
src=$(cd "$(dirname "$0")/../.." && pwd)
rm -rf "$scratch"
mkdir -p "$scratch"
export OMP_NUM_THREADS=1  # a tiny model: threads cost more than they give

fail() { echo "generate.sh: $*" >&2; exit 1; }

model=$scratch/tiny
"$cli" init --config "$src/configs/tiny.json" --tokenizer "$src/data/tokenizers/byte/tokenizer.json" \
  -o "$model" --seed 1 > "$scratch/init.txt"
for f in config.json model.safetensors tokenizer.json tokenizer_config.json generation_config.json; do
  [ -s "$model/$f" ] || fail "init did not write $f"
done
grep -q '"eos_token_id": 1' "$model/generation_config.json" || fail "generation_config.json lacks eos_token_id"

# The device flags: the fast precision needs cuda; cuda without a GPU (or without a CUDA build)
# fails with a message, not a crash.
if "$cli" generate -m "$model" -p "Hi" --max-tokens 2 --precision fast > /dev/null 2> "$scratch/dev.err"; then
  fail "--precision fast on the cpu was accepted"
fi
grep -q "needs --device cuda" "$scratch/dev.err" || fail "--precision fast on the cpu: no clear message: $(cat "$scratch/dev.err")"
if ! nvidia-smi > /dev/null 2>&1; then
  set +e
  "$cli" generate -m "$model" -p "Hi" --max-tokens 2 --device cuda > /dev/null 2> "$scratch/dev2.err"
  rc=$?
  set -e
  [ "$rc" = 1 ] || fail "--device cuda without a GPU: exit $rc, expected 1: $(cat "$scratch/dev2.err")"
  grep -qi "cuda" "$scratch/dev2.err" || fail "--device cuda without a GPU: no message"
fi

# -p, with a summary on stderr; the same seed gives the same bytes, greedy too.
"$cli" generate -m "$model" -p "Hello" --max-tokens 12 --seed 7 > "$scratch/a.txt" 2> "$scratch/a.err"
"$cli" generate -m "$model" -p "Hello" --max-tokens 12 --seed 7 > "$scratch/b.txt" 2> /dev/null
cmp "$scratch/a.txt" "$scratch/b.txt" || fail "same seed, different output"
[ -s "$scratch/a.txt" ] || fail "no text generated"
grep -Eq '^prompt 6 tokens \(6 prefilled\) \| generated [0-9]+ tokens \((max tokens|eos)\) \| prefill .* tok/s \| decode .* tok/s \| seed 7$' \
  "$scratch/a.err" || fail "bad summary: $(cat "$scratch/a.err")"

# stdin and -f give what -p gives.
"$cli" generate -m "$model" -p "From a pipe" --temperature 0 --max-tokens 8 > "$scratch/p.txt" 2> /dev/null
printf 'From a pipe' | "$cli" generate -m "$model" --temperature 0 --max-tokens 8 > "$scratch/s.txt" 2> /dev/null
printf 'From a pipe' > "$scratch/prompt.txt"
"$cli" generate -m "$model" -f "$scratch/prompt.txt" --temperature 0 --max-tokens 8 > "$scratch/f.txt" 2> /dev/null
cmp "$scratch/p.txt" "$scratch/s.txt" || fail "stdin prompt differs from -p"
cmp "$scratch/p.txt" "$scratch/f.txt" || fail "-f prompt differs from -p"

# --chat: the prompt is <BOS><｜User｜>hi<｜Assistant｜></think> = 6 tokens with the byte tokenizer.
"$cli" generate -m "$model" --chat -p "hi" --temperature 0 --max-tokens 6 > /dev/null 2> "$scratch/chat.err"
grep -q '^prompt 6 tokens' "$scratch/chat.err" || fail "chat prompt: $(cat "$scratch/chat.err")"
"$cli" generate -m "$model" --thinking --system "Think." -p "hi" --max-tokens 4 --seed 1 > /dev/null 2> "$scratch/think.err"
grep -q '^prompt 12 tokens' "$scratch/think.err" || fail "thinking prompt: $(cat "$scratch/think.err")"

# --interactive through a pipe: two turns, one summary each; the second prefills only its new tokens.
printf 'hello\nsecond turn\n' | "$cli" generate -m "$model" -i --temperature 0 --max-tokens 5 \
  > "$scratch/i.txt" 2> "$scratch/i.err"
[ "$(grep -c '^prompt' "$scratch/i.err")" = 2 ] || fail "interactive: $(cat "$scratch/i.err")"
second=$(grep '^prompt' "$scratch/i.err" | sed -n 2p)
total=$(echo "$second" | sed -E 's/^prompt ([0-9]+) tokens \(([0-9]+) prefilled\).*/\1/')
prefilled=$(echo "$second" | sed -E 's/^prompt ([0-9]+) tokens \(([0-9]+) prefilled\).*/\2/')
[ "$prefilled" -lt "$total" ] || fail "interactive second turn re-prefilled: $second"
# /reset starts over: the turn after it is prefilled whole; /exit ends before the last line.
printf 'hello\n/reset\nhello\n/exit\nnever\n' | "$cli" generate -m "$model" -i --temperature 0 --max-tokens 5 \
  > /dev/null 2> "$scratch/r.err"
[ "$(grep -c '^prompt 9 tokens (9 prefilled)' "$scratch/r.err")" = 2 ] || fail "interactive /reset: $(cat "$scratch/r.err")"
[ "$(grep -c '^prompt' "$scratch/r.err")" = 2 ] || fail "interactive /exit: $(cat "$scratch/r.err")"

# --stop: the text ends before the stop string, which is not printed. The stop string is
# the first two-letter ASCII run of a free run with the same seed (the run is deterministic).
"$cli" generate -m "$model" -p "Hello" --max-tokens 60 --seed 3 > "$scratch/full.txt" 2> /dev/null
stop=$(LC_ALL=C grep -ao '[A-Za-z0-9]\{2\}' "$scratch/full.txt" | head -n 1 || true)
[ -n "$stop" ] || fail "no ASCII pair in the free run to use as a stop string (pick another seed)"
"$cli" generate -m "$model" -p "Hello" --max-tokens 60 --seed 3 --stop "$stop" > "$scratch/cut.txt" 2> "$scratch/cut.err"
grep -q '(stop string)' "$scratch/cut.err" || fail "--stop did not stop: $(cat "$scratch/cut.err")"
! LC_ALL=C grep -qaF -- "$stop" "$scratch/cut.txt" || fail "the stop string was printed"
[ -s "$scratch/cut.txt" ] || [ "$(head -c 2 "$scratch/full.txt")" = "$stop" ] || fail "nothing before the stop string"
LC_ALL=C cmp -s "$scratch/cut.txt" <(head -c "$(stat -c %s "$scratch/cut.txt")" "$scratch/full.txt") \
  || fail "the text before the stop string differs from the free run"

# Errors: non-zero exit and a message that says what is wrong.
expect_error() {  # expect_error "message" command...
  local msg=$1
  shift
  if "$@" > /dev/null 2> "$scratch/err.txt"; then fail "accepted: $*"; fi
  grep -qF -- "$msg" "$scratch/err.txt" || fail "expected '$msg', got: $(cat "$scratch/err.txt")"
}
expect_error "not a folder" "$cli" generate -m "$scratch/none" -p x
mkdir -p "$scratch/no_weights"
cp "$model/config.json" "$model/tokenizer.json" "$scratch/no_weights/"
expect_error "has neither model.safetensors" "$cli" generate -m "$scratch/no_weights" -p x
cp -r "$model" "$scratch/no_tokenizer"
rm "$scratch/no_tokenizer/tokenizer.json"
expect_error "no tokenizer.json in the model folder" "$cli" generate -m "$scratch/no_tokenizer" -p x
cp -r "$model" "$scratch/truncated"
head -c 1000 "$model/model.safetensors" > "$scratch/truncated/model.safetensors"
expect_error "runs past the end of the file" "$cli" generate -m "$scratch/truncated" -p x
expect_error "the prompt is 6 tokens but the context holds 4 tokens" "$cli" generate -m "$model" -p Hello --ctx 4
expect_error "top-p must be in (0, 1]" "$cli" generate -m "$model" -p x --top-p 2
sed 's/"vocab_size": 272/"vocab_size": 200/' "$src/configs/tiny.json" > "$scratch/small.json"
expect_error "set vocab_size to at least 271" "$cli" init --config "$scratch/small.json" \
  --tokenizer "$src/data/tokenizers/byte/tokenizer.json" -o "$scratch/small"
echo "generate: ok"
