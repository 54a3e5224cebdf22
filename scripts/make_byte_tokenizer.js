#!/usr/bin/env node
// Writes data/tokenizers/byte/tokenizer.json: the byte-level tokenizer for tiny models.
// Ids: 0 <｜begin▁of▁sentence｜> (BOS), 1 <｜end▁of▁sentence｜> (EOS), 2 + b for byte b
// (the 256 ByteLevel characters, no merges), then from 258 the chat tokens below.
// Usage: node scripts/make_byte_tokenizer.js [OUT]   (documented in data/tokenizers/README.md)
'use strict';
const fs = require('fs');
const path = require('path');

// GPT-2's byte -> character map, as the ByteLevel pre-tokenizer uses it.
function byteLevelAlphabet() {
  const printable = (b) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const chars = [];
  let next = 256;
  for (let b = 0; b < 256; b++) chars.push(String.fromCodePoint(printable(b) ? b : next++));
  return chars;
}

// Special tokens are skipped by decode(skip_special); the chat markers are not, as in
// DeepSeek's own tokenizer.json (special: false, normalized: true).
const specials = ['<｜begin▁of▁sentence｜>', '<｜end▁of▁sentence｜>'];
const added = [
  ['<｜▁pad▁｜>', true],
  ['<｜User｜>', false],
  ['<｜Assistant｜>', false],
  ['<think>', false],
  ['</think>', false],
  ['<｜latest_reminder｜>', false],
  ['<｜action｜>', false],
  ['<｜query｜>', false],
  ['<｜authority｜>', false],
  ['<｜domain｜>', false],
  ['<｜title｜>', false],
  ['<｜read_url｜>', false],
  ['｜DSML｜', false],
];

const vocab = {};
specials.forEach((s, i) => { vocab[s] = i; });
byteLevelAlphabet().forEach((c, b) => { vocab[c] = specials.length + b; });
const firstAdded = Object.keys(vocab).length;

const token = (id, content, special) => ({
  id, content, single_word: false, lstrip: false, rstrip: false, normalized: !special, special,
});
const addedTokens = specials.map((s, i) => token(i, s, true))
  .concat(added.map(([content, special], i) => token(firstAdded + i, content, special)));

const tokenizer = {
  version: '1.0',
  truncation: null,
  padding: null,
  added_tokens: addedTokens,
  normalizer: null,
  pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
  post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
  decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
  model: {
    type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null,
    end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: false,
    vocab, merges: [],
  },
};

const out = process.argv[2] || path.join(__dirname, '..', 'data', 'tokenizers', 'byte', 'tokenizer.json');
fs.writeFileSync(out, JSON.stringify(tokenizer, null, 1) + '\n');
console.error(`make_byte_tokenizer.js: ${firstAdded + added.length} ids -> ${out}`);
