// Tokenise the corpus splits with tiny-mixtral's tokenizer.json (npm `tokenizers`).
// Each document becomes <s> ids... </s>; a split is written as little-endian uint16 ids.
//   NODE_PATH=/work/tok/node_modules node weights/scripts/encode_corpus.js \
//       weights/tiny-mixtral/tokenizer.json /work/corpus
const fs = require("fs");
const path = require("path");
const { Tokenizer } = require("tokenizers");
const tok = Tokenizer.fromFile(process.argv[2]);
const corpus = process.argv[3];

async function main() {
  for (const d of ["bible", "austen", "dictionary", "python", "c"]) {
    for (const s of ["train", "valid", "test"]) {
      const docs = fs.readFileSync(path.join(corpus, d, s + ".jsonl"), "utf8").split("\n").filter(x => x).map(JSON.parse);
      const out = [];
      const B = 256;
      for (let i = 0; i < docs.length; i += B) {
        const encs = await tok.encodeBatch(docs.slice(i, i + B), { addSpecialTokens: false });
        for (const e of encs) { out.push(1); for (const id of e.getIds()) out.push(id); out.push(2); }
      }
      const arr = Uint16Array.from(out);
      fs.writeFileSync(path.join(corpus, d, s + ".bin"), Buffer.from(arr.buffer));
      console.log(d, s, docs.length, "docs", arr.length, "tokens");
    }
  }
}
main();
