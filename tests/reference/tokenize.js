// Tokenize texts with Hugging Face's `tokenizers` (npm package, the Rust
// library's Node binding) for tests/reference/make_goldens.py.
//
// Setup once, outside the repository:
//     mkdir -p /work/refjs && cd /work/refjs && npm init -y && npm install tokenizers
// Run (make_goldens.py does this for you):
//     echo '[{"text":"And God said","add_special_tokens":true}]' | \
//       NODE_PATH=/work/refjs/node_modules node tests/reference/tokenize.js weights/tiny-mixtral/tokenizer.json
// stdin: JSON list of {text, add_special_tokens}; stdout: JSON list of {ids, tokens}.
const { Tokenizer } = require("tokenizers");
const fs = require("fs");

(async () => {
  const tok = Tokenizer.fromFile(process.argv[2]);
  const reqs = JSON.parse(fs.readFileSync(0, "utf8"));
  const out = [];
  for (const r of reqs) {
    const e = await tok.encode(r.text, null, { addSpecialTokens: !!r.add_special_tokens });
    out.push({ ids: Array.from(e.getIds()), tokens: e.getTokens() });
  }
  process.stdout.write(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
