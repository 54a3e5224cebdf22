#!/usr/bin/env node
// The Hugging Face tokenizers oracle (node_modules/tokenizers) for dsv4's tokenizer tests.
//   node hf_tokenize.js encode TOKENIZER.json FILE...    one line of ids per file
//   node hf_tokenize.js decode TOKENIZER.json IDS_FILE   the text of the ids (one sequence)
//   node hf_tokenize.js bench TOKENIZER.json FILE [SECONDS]
//        encode FILE for about SECONDS after one warm-up, two ways: the whole text as one
//        string, and its lines as one batch; prints MB/s of wall and of CPU time.
//        Only the encode calls are timed. Run it with RAYON_NUM_THREADS=1 and
//        TOKENIZERS_PARALLELISM=false for one thread.
// Files are read as UTF-8; bytes that are not valid UTF-8 become U+FFFD (a JavaScript
// string cannot carry them), which is why invalid input is compared only after that same
// lossy decoding. (The node binding cannot switch off special-token matching, so only
// the default, special tokens matched, is compared.)
'use strict';
const fs = require('fs');

let tokenizers;
try {
  tokenizers = require('tokenizers');
} catch (e) {
  console.error(`hf_tokenize.js: cannot load node_modules/tokenizers (${e.message}): run scripts/setup.sh`);
  process.exit(1);
}

async function main() {
  const [mode, tokenizerPath, ...files] = process.argv.slice(2);
  if (!mode || !tokenizerPath) {
    console.error('usage: node hf_tokenize.js encode|decode|bench TOKENIZER.json FILE...');
    process.exit(2);
  }
  const tokenizer = tokenizers.Tokenizer.fromFile(tokenizerPath);

  if (mode === 'encode') {
    const lines = [];
    for (const file of files) {
      const encoding = await tokenizer.encode(fs.readFileSync(file, 'utf8'));
      lines.push(encoding.getIds().join(' '));
    }
    process.stdout.write(lines.join('\n') + '\n');
  } else if (mode === 'decode') {
    const text = fs.readFileSync(files[0], 'utf8').trim();
    const ids = text ? text.split(/\s+/).map(Number) : [];
    process.stdout.write(await tokenizer.decode(ids, false));
  } else if (mode === 'bench') {
    const text = fs.readFileSync(files[0], 'utf8');
    const lines = text.split('\n').filter((l) => l);
    const seconds = Number(files[1] || 10);
    const bytes = Buffer.byteLength(text, 'utf8');
    const lineBytes = lines.reduce((n, l) => n + Buffer.byteLength(l, 'utf8'), 0);
    // MB per second of wall time and of CPU time (the whole process's, which is the encode
    // thread's when it runs alone: a machine shared with other work slows the wall clock).
    const time = async (encodeOnce, size) => {
      await encodeOnce();  // warm-up: fills the word cache, as ours does
      let wall = 0;
      let cpu = 0;
      let runs = 0;
      while (wall < (seconds / 2) * 1e9 || runs < 2) {
        const start = process.hrtime.bigint();
        const cpuStart = process.cpuUsage();
        await encodeOnce();
        const used = process.cpuUsage(cpuStart);
        wall += Number(process.hrtime.bigint() - start);
        cpu += (used.user + used.system) * 1e3;
        runs += 1;
      }
      return [(size * runs) / (wall / 1e9) / 1e6, (size * runs) / (cpu / 1e9) / 1e6];
    };
    const ids = (await tokenizer.encode(text)).getIds().length;
    const [whole, wholeCpu] = await time(() => tokenizer.encode(text), bytes);
    const [batch, batchCpu] = await time(() => tokenizer.encodeBatch(lines), lineBytes);
    console.log(`whole_mbps ${whole.toFixed(3)} lines_mbps ${batch.toFixed(3)} ` +
                `whole_cpu_mbps ${wholeCpu.toFixed(3)} lines_cpu_mbps ${batchCpu.toFixed(3)} ids ${ids} bytes ${bytes}`);
  } else {
    console.error(`hf_tokenize.js: unknown mode '${mode}'`);
    process.exit(2);
  }
}

main().catch((e) => {
  console.error(`hf_tokenize.js: ${e.stack || e}`);
  process.exit(1);
});
