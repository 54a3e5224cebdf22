#!/usr/bin/env node
// The long-range retrieval task (docs/experiments.md). Each document is one line:
//   <PAIRS pairs key value ,>|<filler><PAIRS questions ? key = value>
// keys: PAIRS distinct letters of A..P; values: 16 symbols 0..9 Q..V, drawn independently;
// filler: the alphabet from a random letter on, cyclically (learnable: a window model
// predicts it), so the values are the only hard tokens. The questions ask every key once,
// in a random order, after the filler. With BOS and EOS (dsv4 tokenize) and the byte
// tokenizer a document is filler + 7·PAIRS + 3 tokens. Training documents have fillers of
// MIN_FILLER..FILLER characters (short ones teach the lookup sooner), evaluation documents
// of FILLER (197 by default: 256 tokens, the first question 200+ tokens after the pairs).
// A model that cannot see back that far answers at chance: 1/16.
// Usage: node retrieval_data.js TRAIN.txt N_TRAIN EVAL_DIR N_EVAL [FILLER=197] [SEED=1] [MIN_FILLER=FILLER] [PAIRS=8]
//   EVAL_DIR gets prompt-NNNN.txt (a document cut after its first question's '=') and
//   answers.txt (the value that follows).
'use strict';
const fs = require('fs');
const path = require('path');

const [train, nTrain, evalDir, nEval, fillerArg, seedArg, minArg, pairsArg] = process.argv.slice(2);
if (!train || !nTrain || !evalDir || !nEval) {
  console.error('usage: node retrieval_data.js TRAIN.txt N_TRAIN EVAL_DIR N_EVAL [FILLER] [SEED]');
  process.exit(2);
}
const filler = Number(fillerArg || 197), minFiller = Number(minArg || filler);
let state = Number(seedArg || 1) >>> 0;
function rand() {  // mulberry32
  state = (state + 0x6d2b79f5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const below = (n) => Math.floor(rand() * n);
function shuffled(a) {
  a = a.slice();
  for (let i = a.length - 1; i > 0; --i) {
    const j = below(i + 1);
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}
const KEYS = 'ABCDEFGHIJKLMNOP'.split(''), VALUES = '0123456789QRSTUV', ALPHA = 'abcdefghijklmnopqrstuvwxyz';
const PAIRS = Number(pairsArg || 8);
function doc(fill) {
  const keys = shuffled(KEYS).slice(0, PAIRS);
  const value = {};
  for (const k of keys) value[k] = VALUES[below(VALUES.length)];
  let text = keys.map((k) => k + value[k] + ',').join('') + '|';
  const start = below(26);
  for (let i = 0; i < fill; ++i) text += ALPHA[(start + i) % 26];
  const asked = shuffled(keys);
  const cut = text.length + 3;  // after the first question's '='
  for (const k of asked) text += '?' + k + '=' + value[k];
  return {text, prompt: text.slice(0, cut), answer: value[asked[0]]};
}
const lines = [];
for (let i = 0; i < Number(nTrain); ++i) lines.push(doc(minFiller + below(filler - minFiller + 1)).text);
fs.writeFileSync(train, lines.join('\n\n') + '\n');
fs.mkdirSync(evalDir, {recursive: true});
const answers = [];
for (let i = 0; i < Number(nEval); ++i) {
  const d = doc(filler);
  fs.writeFileSync(path.join(evalDir, `prompt-${String(i).padStart(4, '0')}.txt`), d.prompt);
  answers.push(d.answer);
}
fs.writeFileSync(path.join(evalDir, 'answers.txt'), answers.join('\n') + '\n');
console.error(`retrieval_data.js: ${nTrain} training documents -> ${train}, ${nEval} prompts -> ${evalDir}`);
