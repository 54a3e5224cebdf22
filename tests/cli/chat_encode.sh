#!/usr/bin/env bash
# dsv4 chat-encode on the official prompt cases: byte-exact against the expected prompts;
# chat-parse reads back an assistant turn; a broken conversation fails with a message.
# usage: chat_encode.sh <dsv4-cli> <fixtures-dir> <scratch-dir>
set -euo pipefail
cli=$1
cases=$2/chat-encoding
scratch=$3
mkdir -p "$scratch"

for n in 1 2 3 4; do
  mode=thinking
  [ "$n" = 4 ] && mode=chat   # the README's table: case 4 is chat mode
  "$cli" chat-encode --mode "$mode" < "$cases/test_input_$n.json" > "$scratch/prompt_$n.txt"
  cmp "$cases/test_output_$n.txt" "$scratch/prompt_$n.txt"
done

# Case 1's first assistant turn calls get_weather (stated in the README).
printf 'Check.</think>\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="get_weather">\n<｜DSML｜parameter name="location" string="true">Beijing</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls><｜end▁of▁sentence｜>' \
  | "$cli" chat-parse --mode thinking > "$scratch/parsed.json"
grep -q '"name": "get_weather"' "$scratch/parsed.json"
grep -q '"location": "Beijing"' "$scratch/parsed.json"
grep -q '"finished": true' "$scratch/parsed.json"

# Broken input: non-zero exit, a message naming the message and field.
if echo '[{"role": "user"}]' | "$cli" chat-encode --mode chat > /dev/null 2> "$scratch/err.txt"; then
  echo "chat-encode accepted a message without content" >&2
  exit 1
fi
grep -q "message 0 (user): 'content' is missing" "$scratch/err.txt"
echo "chat-encode: ok"
