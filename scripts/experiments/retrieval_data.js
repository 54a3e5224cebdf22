#!/usr/bin/env node
// The long-range retrieval task (docs/experiments.md): each document is one line,
//   <filler a>K<key>V<value>;<filler b>?K<key>=<value>
// with key one of 16 letters A..P, value one of 16 symbols 0..9 Q..V, filler random
// lowercase letters and spaces, a of 0..31 characters and a + b = FILLER, so the pair sits
// anywhere in the first 37 characters and the question comes at least FILLER − 29 characters
// after the value. With BOS and EOS (dsv4 tokenize) and the byte tokenizer a document is
// FILLER + 12 tokens (256 by default).
// Usage: node retrieval_data.js TRAIN.txt N_TRAIN EVAL_DIR N_EVAL [FILLER=244] [SEED=1]
//   EVAL_DIR gets prompt-NNNN.txt (the document without its last character) and answers.txt.
'use strict';
const fs = require('fs');
const path = require('path');

const [train, nTrain, evalDir, nEval, fillerArg, seedArg] = process.argv.slice(2);
if (!train || !nTrain || !evalDir || !nEval) {
  console.error('usage: node retrieval_data.js TRAIN.txt N_TRAIN EVAL_DIR N_EVAL [FILLER] [SEED]');
  process.exit(2);
}
const filler = Number(fillerArg || 244);
let state = Number(seedArg || 1) >>> 0;
function rand() {  // mulberry32
  state = (state + 0x6d2b79f5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (s) => s[Math.floor(rand() * s.length)];
const KEYS = 'ABCDEFGHIJKLMNOP', VALUES = '0123456789QRSTUV', FILL = 'abcdefghijklmnopqrstuvwxyz ';
function doc() {
  const k = pick(KEYS), v = pick(VALUES);
  const a = Math.floor(rand() * 32);
  let f = '';
  for (let i = 0; i < filler; ++i) f += pick(FILL);
  return {text: `${f.slice(0, a)}K${k}V${v};${f.slice(a)}?K${k}=${v}`, value: v};
}
const lines = [];
for (let i = 0; i < Number(nTrain); ++i) lines.push(doc().text);
fs.writeFileSync(train, lines.join('\n\n') + '\n');
fs.mkdirSync(evalDir, {recursive: true});
const answers = [];
for (let i = 0; i < Number(nEval); ++i) {
  const d = doc();
  fs.writeFileSync(path.join(evalDir, `prompt-${String(i).padStart(4, '0')}.txt`), d.text.slice(0, -1));
  answers.push(d.value);
}
fs.writeFileSync(path.join(evalDir, 'answers.txt'), answers.join('\n') + '\n');
console.error(`retrieval_data.js: ${nTrain} training documents -> ${train}, ${nEval} prompts -> ${evalDir}`);
