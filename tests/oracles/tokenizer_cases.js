#!/usr/bin/env node
// Writes the tokenizer parity test's inputs into OUT_DIR:
//   cases/NN.txt      edge-case texts (valid UTF-8), one per file, exact bytes
//   invalid/NN.bin    byte strings that are not valid UTF-8 (dsv4 only: round trip)
//   invalid/NN.txt    the same after lossy UTF-8 decoding (U+FFFD), compared with HF
//   variants/*.json   tokenizer.json files derived from BASE that reach the code paths
//                     DeepSeek's own does not (ByteLevel's regex and prefix space, Split
//                     behaviors, lstrip / rstrip / single_word added tokens)
// Usage: node tokenizer_cases.js OUT_DIR BASE_TOKENIZER.json
'use strict';
const fs = require('fs');
const path = require('path');

const [outDir, basePath] = process.argv.slice(2);
if (!outDir || !basePath) {
  console.error('usage: node tokenizer_cases.js OUT_DIR BASE_TOKENIZER.json');
  process.exit(2);
}

const cases = [
  '',
  ' ',
  '     ',
  '\t',
  '\t\t x  \t y\t',
  'a\r\nb\r\n\r\nc',
  '\n\n\n',
  '\r',
  ' \n ',
  'hello   ',
  '   leading and trailing   ',
  'line one\nline two\n\n  indented\n',
  '1234567890',
  '12345678901234567890123',
  '3.14159 2,718 1e10 007 -42 +7 1/2 ½ ² ³ ١٢٣ ০১২',
  '9'.repeat(10000),
  '你好，世界！这是一个测试。',
  'こんにちは、カタカナ・ひらがな混じり。漢字も。ｶﾀｶﾅ',
  '안녕하세요 세계',
  'ＡＢＣ１２３！',
  '第3章12节：价格为45元',
  '😀👍🏽👨‍👩‍👧‍👦🇯🇵 🤖 ❤️',
  '𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𠜎𠜱𠝹 𝄞',
  'e\u0301 a\u0308 n\u0303 Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇',
  '\u0301\u0301start with marks',
  'مرحبا بالعالم 123 שלום עולם',
  '\u200fRTL mark\u200e LTR mark \u202eoverride\u202c',
  'Hello<｜begin▁of▁sentence｜>world<｜end▁of▁sentence｜>',
  '<｜begin▁of▁sentence｜>You are helpful.<｜User｜>Hi<｜Assistant｜><think>hmm</think>Hello!<｜end▁of▁sentence｜>',
  'partial <｜begin▁of▁sentence and <｜User｜><｜User｜> and < ｜User｜>',
  ' <｜User｜> x <｜Assistant｜> ',
  'a<think>b</think>c <｜DSML｜invoke name="f">',
  '<｜fim▁begin｜>def f():<｜fim▁hole｜><｜fim▁end｜>',
  '\u00a0\u2003\u3000x\u180ey\u200bz\u2028w\u0085v\u000b\u000cu',
  '  \u180ex \u180ey a\u180e\u180e  \u2003\u180e',
  '!!!???...---', '\'\'""``', "don't I'll we've they'RE Mr.O'Neil's 's",
  'Привет мир Ελληνικά ไทย हिन्दी ქართული',
  'def f(x):\n\treturn x**2  # comment\n',
  '{"key": [1, 2.5, null], "k2": "v\\n"}',
  '\ufffd\ufffd replacement',
  '\u0000\u0001\u001f\u007f',
  'a'.repeat(5000),
  ' '.repeat(100000),
  'word '.repeat(2000),
  ' <mask> x a<mask>b <r>   z x[W]y [W] [W]. _[W] <mask><mask>   <mask>\t<r>\n',
  'http://example.com/path?q=1&r=2#frag user@mail.org',
  '#$%&*+=@^_`|~ ©®™ € £ ¥ § ¶',
];

// Bytes that are not UTF-8: lone continuation bytes, truncated sequences, overlong forms,
// surrogates, bytes above U+10FFFF, and invalid bytes next to valid text and special tokens.
const invalid = [
  Buffer.from([0x80]),
  Buffer.from([0xff, 0xfe, 0x41]),
  Buffer.from('abc\xe4\xbd', 'latin1'),
  Buffer.concat([Buffer.from('你'), Buffer.from([0xe4, 0xbd]), Buffer.from('好 x')]),
  Buffer.from([0xc0, 0xaf, 0xe0, 0x80, 0xaf]),
  Buffer.from([0xed, 0xa0, 0x80, 0x20, 0xf4, 0x90, 0x80, 0x80]),
  Buffer.concat([Buffer.from('<｜User｜>'), Buffer.from([0xf0, 0x9f, 0x98]), Buffer.from('<｜Assistant｜> 12')]),
  Buffer.concat([Buffer.from('  \t'), Buffer.from([0xa0, 0xa0]), Buffer.from(' 123456')]),
];

function writeAll(dir, files) {
  fs.mkdirSync(dir, { recursive: true });
  for (const [name, data] of files) fs.writeFileSync(path.join(dir, name), data);
}

const pad = (i) => String(i).padStart(2, '0');
writeAll(path.join(outDir, 'cases'), cases.map((c, i) => [`${pad(i)}.txt`, c]));
writeAll(path.join(outDir, 'invalid'), invalid.flatMap((b, i) => [
  [`${pad(i)}.bin`, b],
  [`${pad(i)}.txt`, b.toString('utf8')],
]));

// Variants of the base tokenizer (same vocabulary and merges).
const base = JSON.parse(fs.readFileSync(basePath, 'utf8'));
const nextId = [...Object.values(base.model.vocab), ...base.added_tokens.map((t) => t.id)]
  .reduce((a, b) => Math.max(a, b), 0) + 1;
const addedToken = (i, content, flags) => Object.assign(
  { id: nextId + i, content, single_word: false, lstrip: false, rstrip: false, normalized: true, special: false }, flags);

const gpt2 = structuredClone(base);
gpt2.pre_tokenizer = { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true };
gpt2.added_tokens.push(
  addedToken(0, '<mask>', { lstrip: true, special: true, normalized: false }),
  addedToken(1, '<r>', { rstrip: true }),
  addedToken(2, '[W]', { single_word: true }));

const behaviors = structuredClone(base);
behaviors.pre_tokenizer = {
  type: 'Sequence',
  pretokenizers: [
    { type: 'Split', pattern: { Regex: '[0-9]+' }, behavior: 'MergedWithNext', invert: false },
    { type: 'Split', pattern: { String: ',' }, behavior: 'Removed', invert: false },
    { type: 'Split', pattern: { Regex: '\\s+' }, behavior: 'MergedWithPrevious', invert: false },
    { type: 'Split', pattern: { Regex: '[aeiou]' }, behavior: 'Contiguous', invert: true },
    { type: 'Split', pattern: { Regex: '^\\p{Lu}|\\h+$' }, behavior: 'Isolated', invert: false },
    { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
  ],
};
writeAll(path.join(outDir, 'variants'), [
  ['gpt2.json', JSON.stringify(gpt2)],
  ['behaviors.json', JSON.stringify(behaviors)],
]);
console.error(`tokenizer_cases.js: ${cases.length} cases, ${invalid.length} invalid, 2 variants -> ${outDir}`);
