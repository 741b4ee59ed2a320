// gen.mjs trains tiny BPE tokenizers in the tokenizer.json styles the hf
// counter supports and writes, next to each, reference counts for a fixed set
// of texts produced by Hugging Face tokenizers itself (the Rust library,
// through its npm binding `tokenizers`). Every count is cross-checked with
// @lenml/tokenizers (the transformers.js port); the script fails if the two
// disagree.
//
//   cd /tmp && npm install tokenizers@0.23.2 @lenml/tokenizers@3.7.2
//   cd policy/tokens/testdata/gen
//   NODE_PATH=/tmp/node_modules node gen.mjs <training text files...>
//
// The committed files were trained on chat.go, doc.go, estimate.go, hf.go and
// memo.go of this package as of commit d10a0d8, in that order. The training
// text only shapes the vocabulary; the references are computed with it.
//
// Outputs (in the current directory's parent, testdata/):
//   tiny-bytelevel.json      Llama 3 style: Split regex + ByteLevel, 500 merges, ignore_merges
//   tiny-bytelevel.ref.json  [{text, count}]
//   tiny-spm.json            Llama 2 style: Prepend + Replace normalizer, byte_fallback, 400 merges
//   tiny-spm.ref.json
//   tiny-metaspace.json      same vocabulary with a Metaspace pre-tokenizer (prepend_scheme first)
//   tiny-metaspace.ref.json
import fs from "fs";
import { createRequire } from "module";
const require = createRequire(process.env.NODE_PATH + "/");
const { TokenizerLoader } = require("@lenml/tokenizers");
const { Tokenizer } = require("tokenizers");

const corpus = process.argv.slice(2).map(f => fs.readFileSync(f, "utf8")).join("\n") +
  "\nGrüße aus Köln, naïve café. Привет мир. 你好世界。 Hello, world! It's what we've done; they'll see.\n";

// GPT-2 bytes_to_unicode.
const byteToChar = [];
{
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
    byteToChar[b] = String.fromCodePoint(printable ? b : 256 + n++);
  }
}
const enc = new TextEncoder();
const mapBytes = s => Array.from(enc.encode(s), b => byteToChar[b]).join("");

// Llama 3's split regex; JS has no (?i:...) so the contractions are spelled out.
const llama3Split = /'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+/gu;

// train runs naive BPE over word frequencies: each word is an array of
// symbols; the most frequent pair (ties: smallest "a b" string) merges.
function train(words, nMerges, inVocab) {
  const merges = [];
  const ws = [...words.entries()].map(([w, f]) => [Array.from(w), f]);
  for (let m = 0; m < nMerges; m++) {
    const counts = new Map();
    for (const [syms, f] of ws)
      for (let i = 0; i + 1 < syms.length; i++) {
        const k = syms[i] + " " + syms[i + 1];
        counts.set(k, (counts.get(k) || 0) + f);
      }
    let best = null, bestN = 0;
    for (const [k, n] of counts) {
      const [a, b] = k.split(" ");
      if (inVocab(a + b)) continue;
      if (n > bestN || (n === bestN && k < best)) { best = k; bestN = n; }
    }
    if (!best || bestN < 2) break;
    const [a, b] = best.split(" ");
    merges.push(best);
    for (const w of ws) {
      const s = w[0], out = [];
      for (let i = 0; i < s.length; i++) {
        if (i + 1 < s.length && s[i] === a && s[i + 1] === b) { out.push(a + b); i++; } else out.push(s[i]);
      }
      w[0] = out;
    }
    inVocab.add(a + b);
  }
  return merges;
}
function vocabSet(v) { const s = new Set(Object.keys(v)); const f = x => s.has(x); f.add = x => s.add(x); return f; }

// Byte-level tokenizer.
function byteLevel() {
  const words = new Map();
  for (const w of corpus.match(llama3Split)) { const m = mapBytes(w); words.set(m, (words.get(m) || 0) + 1); }
  const vocab = {};
  byteToChar.forEach((c, i) => { vocab[c] = i; });
  const merges = train(words, 500, vocabSet(vocab));
  for (const m of merges) vocab[m.replace(" ", "")] = Object.keys(vocab).length;
  const n = Object.keys(vocab).length;
  return {
    version: "1.0",
    added_tokens: [
      { id: n, content: "<|begin_of_text|>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
      { id: n + 1, content: "<|eot_id|>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
    ],
    normalizer: null,
    pre_tokenizer: { type: "Sequence", pretokenizers: [
      { type: "Split", pattern: { Regex: "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+" }, behavior: "Isolated", invert: false },
      { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false }] },
    post_processor: null,
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: true, vocab, merges: merges.map(m => m.split(" ")) },
  };
}

// Sentencepiece-style tokenizer: characters seen at least 3 times, bytes as
// fallback for the rest.
function spm() {
  const text = corpus.replaceAll(" ", "\u2581");
  const chars = new Map();
  for (const c of text) chars.set(c, (chars.get(c) || 0) + 1);
  const vocab = { "<unk>": 0, "<s>": 1, "</s>": 2 };
  for (let b = 0; b < 256; b++) vocab["<0x" + b.toString(16).toUpperCase().padStart(2, "0") + ">"] = 3 + b;
  for (const [c, n] of [...chars.entries()].sort()) if (n >= 3 && !(c in vocab)) vocab[c] = Object.keys(vocab).length;
  const words = new Map();
  for (const w of ("\u2581" + text).split(/(?=\u2581)/u)) {
    if (Array.from(w).some(c => !(c in vocab))) continue;
    words.set(w, (words.get(w) || 0) + 1);
  }
  const merges = train(words, 400, vocabSet(vocab));
  for (const m of merges) vocab[m.replace(" ", "")] = Object.keys(vocab).length;
  return {
    version: "1.0",
    added_tokens: [
      { id: 0, content: "<unk>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
      { id: 1, content: "<s>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
      { id: 2, content: "</s>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
    ],
    normalizer: { type: "Sequence", normalizers: [
      { type: "Prepend", prepend: "\u2581" }, { type: "Replace", pattern: { String: " " }, content: "\u2581" }] },
    pre_tokenizer: null,
    post_processor: null,
    decoder: null,
    model: { type: "BPE", dropout: null, unk_token: "<unk>", continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: true, byte_fallback: true, vocab, merges },
  };
}

// Fixed test texts plus seeded random mixtures.
function texts() {
  const out = [
    "hello world", "Hello, world! How are you today?", "The quick brown fox jumps over the lazy dog.",
    "Grüße aus Köln — naïve café, señor.", "你好，世界。今日は良い天気です。안녕하세요", "I love 🍕 and 🎉🎉 🤖👍🏽 👨‍👩‍👧",
    "func main() {\n\tfmt.Println(\"hi\")\n\tfor i := 0; i < 10; i++ {\n\t\tx += i * 2\n\t}\n}\n",
    "1234567890 3.14159 2026-11-26 $1,000,000", "  leading and    multiple   spaces\n\n\nnewlines\r\n\ttabs  ",
    "I'm sure they'll say it's what we've done, DON'T YOU'LL", "Привет мир مرحبا بالعالم नमस्ते",
    "<|begin_of_text|>user said<|eot_id|><s> hi </s>", "a<s>b", " ", "\n", "x", "   ", "▁already▁metaspace",
  ];
  let seed = 42;
  const rnd = () => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed / 0x80000000; };
  const pick = a => a[Math.floor(rnd() * a.length)];
  const pools = ["abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", " \t\n\r  ",
    ".,;:!?'\"()[]{}<>-_/\\|@#$%^&*+=~`", "éèêëàâäôöûüçñßøåæœ", "абвгдежзийклмнопрстуфхцчшщыьэюя",
    "你好世界中文测试的一是不了人我在有他这", "😀🍕🎉🤖👍🏽❤️", "αβγδεζηθικλμνξοπρστυφχψω"];
  const words = ["the ", "and ", "  ", "\n\n", "'s ", "123", "ing ", "func ", "return ", "token", "<s>", "<|eot_id|>"];
  for (let i = 0; i < 150; i++) {
    const n = pick([5, 20, 80, 300]);
    const ps = Array.from({ length: pick([1, 2, 3]) }, () => Array.from(pick(pools)));
    let s = "";
    for (let j = 0; j < n; j++) s += rnd() < 0.8 ? pick(pick(ps)) : pick(words);
    out.push(s);
  }
  for (let i = 0; i < 30; i++) { const start = Math.floor(rnd() * (corpus.length - 400)); out.push(corpus.slice(start, start + pick([30, 120, 400]))); }
  return out;
}

async function write(name, tj) {
  const path = `../${name}.json`;
  fs.writeFileSync(path, JSON.stringify(tj));
  const rust = Tokenizer.fromFile(path);
  const js = TokenizerLoader.fromPreTrained({ tokenizerJSON: tj, tokenizerConfig: {} });
  const ref = [];
  for (const text of texts()) {
    const count = (await rust.encode(text, null, { addSpecialTokens: false })).getIds().length;
    const jsCount = js.encode(text, { add_special_tokens: false }).length;
    if (count !== jsCount) throw new Error(`${name}: ${JSON.stringify(text)}: tokenizers ${count}, @lenml/tokenizers ${jsCount}`);
    ref.push({ text, count });
  }
  fs.writeFileSync(`../${name}.ref.json`, JSON.stringify(ref, null, 0).replaceAll("},{", "},\n{") + "\n");
}

await write("tiny-bytelevel", byteLevel());
const s = spm();
await write("tiny-spm", s);
await write("tiny-metaspace", { ...s, normalizer: null,
  pre_tokenizer: { type: "Metaspace", replacement: "\u2581", add_prefix_space: true, prepend_scheme: "first", split: false } });
