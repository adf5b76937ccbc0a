#!/usr/bin/python3
"""Pure-Python encoder/decoder for tiny-mixtral's tokenizer.json, following the semantics of
Hugging Face `tokenizers` for this configuration (checked against the npm library's output in
tokenizer_goldens.json and on the eval test texts by `python3 tok_ref.py --check DIR`):

  1. added/special tokens (<unk>, <s>, </s>) are matched literally in the raw text first; the
     text between them is processed separately (so each segment gets its own "▁" prefix)
  2. normalizer: prepend "▁" (non-empty segments only), replace " " by "▁"
  3. BPE over the whole segment: start from characters (a character missing from the vocab
     becomes its UTF-8 bytes <0xXX>); repeatedly apply the lowest-rank merge, leftmost first
  4. add_bos_token: <s> (id 1) in front when add_special_tokens is true
  decode: tokens -> "▁" to " ", <0xXX> bytes re-assembled as UTF-8, joined, one leading space
  stripped (special tokens kept unless skip_special_tokens).
"""
import heapq, json, re, sys

SP = "\u2581"


class Tokenizer:
    def __init__(self, path):
        j = json.load(open(path, encoding="utf-8"))
        m = j["model"]
        self.vocab = m["vocab"]
        self.inv = {i: t for t, i in self.vocab.items()}
        for at in j["added_tokens"]:
            self.vocab[at["content"]] = at["id"]
            self.inv[at["id"]] = at["content"]
        self.special = {at["content"]: at["id"] for at in j["added_tokens"]}
        self.ranks = {}
        for r, mg in enumerate(m["merges"]):
            a, b = mg.split(" ") if isinstance(mg, str) else mg
            self.ranks[(self.vocab[a], self.vocab[b])] = (r, self.vocab[a + b])
        self.byte_ids = [self.vocab[f"<0x{b:02X}>"] for b in range(256)]
        self.split_re = re.compile("(" + "|".join(re.escape(t) for t in
                                                   sorted(self.special, key=len, reverse=True)) + ")")

    def _bpe(self, s):
        syms = []
        for ch in s:
            i = self.vocab.get(ch)
            if i is not None:
                syms.append(i)
            else:
                syms.extend(self.byte_ids[b] for b in ch.encode("utf-8"))
        n = len(syms)
        nxt = list(range(1, n + 1))
        prv = list(range(-1, n - 1))
        alive = [True] * n
        heap = []
        for p in range(n - 1):
            r = self.ranks.get((syms[p], syms[p + 1]))
            if r:
                heap.append((r[0], p, syms[p], syms[p + 1]))
        heapq.heapify(heap)
        while heap:
            rank, p, a, b = heapq.heappop(heap)
            q = nxt[p] if p < n and alive[p] else n
            if not alive[p] or q >= n or syms[p] != a or syms[q] != b:
                continue  # stale entry
            new = self.ranks[(a, b)][1]
            syms[p] = new
            alive[q] = False
            nxt[p] = nxt[q]
            if nxt[q] < n:
                prv[nxt[q]] = p
            if prv[p] >= 0:
                r = self.ranks.get((syms[prv[p]], new))
                if r:
                    heapq.heappush(heap, (r[0], prv[p], syms[prv[p]], new))
            if nxt[p] < n:
                r = self.ranks.get((new, syms[nxt[p]]))
                if r:
                    heapq.heappush(heap, (r[0], p, new, syms[nxt[p]]))
        return [syms[i] for i in range(n) if alive[i]]

    def encode(self, text, add_special_tokens=False):
        ids = [1] if add_special_tokens else []
        for part in self.split_re.split(text):
            if not part:
                continue
            if part in self.special:
                ids.append(self.special[part])
            else:
                ids.extend(self._bpe(SP + part.replace(" ", SP)))
        return ids

    def decode(self, ids, skip_special_tokens=False):
        out, buf = [], b""
        for i in ids:
            t = self.inv[i]
            if skip_special_tokens and t in self.special:
                continue
            if re.fullmatch(r"<0x[0-9A-F]{2}>", t):
                buf += bytes([int(t[3:5], 16)])
                continue
            if buf:
                out.append(buf.decode("utf-8", errors="replace"))
                buf = b""
            out.append(t.replace(SP, " "))
        if buf:
            out.append(buf.decode("utf-8", errors="replace"))
        s = "".join(out)
        return s[1:] if s.startswith(" ") else s


if __name__ == "__main__":
    # --check DIR: compare with the goldens written by the npm library
    d = sys.argv[2] if len(sys.argv) > 2 else "weights/tiny-mixtral"
    tok = Tokenizer(d + "/tokenizer.json")
    g = json.load(open(d + "/tokenizer_goldens.json", encoding="utf-8"))
    bad = 0
    for c in g["cases"]:
        ok = tok.encode(c["text"]) == c["ids"] and tok.encode(c["text"], True) == c["ids_with_special"]
        if not ok:
            bad += 1
            print("MISMATCH", json.dumps(c["text"]), tok.encode(c["text"]), c["ids"])
    print(f"{len(g['cases']) - bad}/{len(g['cases'])} golden cases match")
    sys.exit(1 if bad else 0)
