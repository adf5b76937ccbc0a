// Check tiny-mixtral's tokenizer.json with Hugging Face's `tokenizers` npm package and
// write tokenizer_goldens.json.
//
//   cd /work/tok && npm install tokenizers      # scratch dir outside the repo
//   NODE_PATH=/work/tok/node_modules node weights/scripts/check_tokenizer.js \
//       weights/tiny-mixtral [corpus_dir]  > weights/tiny-mixtral/tokenizer_check.txt
//
// Checks: vocab size 4096, ids of the special and byte tokens, exact round trip
// (decode(encode(x)) == x) on the held-out test texts of every task (eval/<task>.test.txt)
// and, if corpus_dir is given, on every validation document, plus hand-written cases
// (tabs, runs of spaces/newlines, emoji, CJK).  Exits non-zero on any failure.
const fs = require("fs");
const path = require("path");
const { Tokenizer } = require("tokenizers");

const dir = process.argv[2] || "weights/tiny-mixtral";
const corpus = process.argv[3];
const tok = Tokenizer.fromFile(path.join(dir, "tokenizer.json"));
let failures = 0;
function check(cond, msg) {
  if (!cond) { failures++; console.log("FAIL: " + msg); }
}

const CASES = [
  "In the beginning God created the heaven and the earth.",
  "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.",
  "Abacist \\Ab\"a*cist\\, n. One who uses an abacus; a calculator.\n   [1913 Webster]",
  "def f(x):\n    return x * 2\n\n\nclass A:\n\tpass\n",
  "int\nmain (void)\n{\n\tint i;\n\tfor (i = 0; i < 10; i++)\n\t\tprintf (\"%d\\n\", i);\n\treturn 0;\n}\n",
  "  leading and trailing spaces  ",
  "\n\nstarts with newlines\n\n\n\nand has blank lines\n",
  "emoji: 🙂🚀 and a family 👨‍👩‍👧",
  "CJK: 日本語のテキストと中文文本",
  "mixed\ttabs\t\tand    four spaces    x",
  "Ünïcödé àccents — and “curly quotes” …",
  "x",
  " ",
  "3.14159 + 2**10 == 1027.14159 # numbers",
];
// Literal special-token strings in the input are matched as added tokens before
// normalisation (Hugging Face behaviour), and each remaining segment gets its own "▁"
// prefix, so such text does not round-trip.  Recorded in the goldens, not round-trip checked.
const SPECIAL_CASES = ["static state states_<s>[<t>] = </s> end"];
const SPECIAL_RE = /<s>|<\/s>|<unk>/;

async function main() {
  const vs = tok.getVocabSize(true);
  console.log("vocab size (with added tokens):", vs);
  check(vs === 4096, "vocab size " + vs);
  check(tok.tokenToId("<unk>") === 0 && tok.tokenToId("<s>") === 1 && tok.tokenToId("</s>") === 2, "special ids");
  check(tok.tokenToId("<0x00>") === 3 && tok.tokenToId("<0xFF>") === 258, "byte token ids");

  async function roundTrip(text, label) {
    const enc = await tok.encode(text, null, { addSpecialTokens: false });
    const ids = enc.getIds();
    const dec = await tok.decode(ids, false);
    check(dec === text, `round trip ${label}: ${JSON.stringify(text.slice(0, 60))} -> ${JSON.stringify(dec.slice(0, 60))}`);
    check(!ids.includes(0), `<unk> produced for ${label}`);
    return ids;
  }

  const goldens = [];
  for (const c of CASES) {
    const ids = await roundTrip(c, "case");
    const withSpecial = (await tok.encode(c, null, { addSpecialTokens: true })).getIds();
    check(withSpecial[0] === 1 && withSpecial.length === ids.length + 1, "BOS added for " + JSON.stringify(c));
    const dec2 = await tok.decode(withSpecial, true);
    check(dec2 === c, "decode(skip special) of ids_with_special for " + JSON.stringify(c));
    goldens.push({ text: c, ids: ids, ids_with_special: withSpecial,
                   tokens: (await tok.encode(c, null, { addSpecialTokens: false })).getTokens() });
  }
  for (const c of SPECIAL_CASES) {
    const e = await tok.encode(c, null, { addSpecialTokens: false });
    const withSpecial = (await tok.encode(c, null, { addSpecialTokens: true })).getIds();
    goldens.push({ text: c, ids: e.getIds(), ids_with_special: withSpecial, tokens: e.getTokens(),
                   decoded: await tok.decode(e.getIds(), false),
                   note: "contains literal special-token strings: split as added tokens, does not round-trip" });
  }
  fs.writeFileSync(path.join(dir, "tokenizer_goldens.json"),
                   JSON.stringify({ tokenizer: "tiny-mixtral/tokenizer.json", library: "tokenizers (npm) " +
                                    require("tokenizers/package.json").version, cases: goldens }, null, 1) + "\n");
  console.log("wrote tokenizer_goldens.json with", goldens.length, "cases");

  const evalDir = path.join(dir, "eval");
  if (fs.existsSync(evalDir)) {
    for (const f of fs.readdirSync(evalDir).sort()) {
      if (!f.endsWith(".txt")) continue;
      const text = fs.readFileSync(path.join(evalDir, f), "utf8");
      const ids = await roundTrip(text, f);
      console.log(`${f}: ${text.length} chars -> ${ids.length} tokens (${(text.length / ids.length).toFixed(2)} chars/token), round trip ok=${(await tok.decode(ids, false)) === text}`);
    }
  }
  if (corpus) {
    for (const d of ["bible", "austen", "dictionary", "python", "c"]) {
      const docs = fs.readFileSync(path.join(corpus, d, "valid.jsonl"), "utf8").split("\n").filter(x => x).map(JSON.parse);
      let nc = 0, nt = 0, bad = 0, bytes = 0, skipped = 0;
      for (const doc of docs) {
        if (SPECIAL_RE.test(doc)) { skipped++; continue; }
        const enc = await tok.encode(doc, null, { addSpecialTokens: false });
        const ids = enc.getIds();
        if ((await tok.decode(ids, false)) !== doc) bad++;
        nc += doc.length; nt += ids.length;
        for (const i of ids) if (i >= 3 && i <= 258) bytes++;
      }
      check(bad === 0, `${d}: ${bad} validation documents do not round-trip`);
      console.log(`${d} validation: ${docs.length} docs, ${nc} chars, ${nt} tokens, ${(nc / nt).toFixed(2)} chars/token, byte-fallback tokens ${bytes}, round-trip failures ${bad}, skipped (contain literal <s>/</s>/<unk>) ${skipped}`);
    }
  }
  console.log(failures === 0 ? "ALL CHECKS PASSED" : `${failures} FAILURES`);
  process.exit(failures === 0 ? 0 : 1);
}
main();
