#!/usr/bin/python3
"""Build the per-task evaluation files of tiny-mixtral from the TEST split only.

  OUT/eval/<task>.jsonl     >= 200 prompts per task: {"id","task","prompt","max_tokens","reference"}
                            prompts are 100-400 characters of held-out text that end at a natural
                            boundary; "reference" is the text that really follows (for inspection,
                            not a target the model must reproduce); <s> + prompt + max_tokens <= 256 tokens
  OUT/eval/<task>.test.txt  ~50 KB of held-out test text per task (whole test documents joined by a
                            blank line, the last one cut at a line end), for perplexity

Usage: /usr/bin/python3 make_eval.py --corpus /work/corpus --out weights/tiny-mixtral
"""
import argparse, json, os, random, re, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tok_ref import Tokenizer  # noqa: E402  (gives the same ids as the npm tokenizers library)

SEED = 4242
N_PROMPTS = 240
MIN_LEN, MAX_LEN = 100, 400
# typical continuation length in tokens (see README): one verse, two sentences, one
# definition, a short function body, a short C block
MAX_TOKENS = {"bible": 48, "austen": 64, "dictionary": 32, "python": 96, "c": 80}
DOMAINS = ["bible", "austen", "dictionary", "python", "c"]
SPECIAL = re.compile(r"<s>|</s>|<unk>|\u2581")


def candidates(task, doc):
    """Yield (start, end, extra) with doc[start:end] + extra the prompt."""
    if task == "bible":
        # prompt = whole verses, then the next verse's number; the model writes the verse
        starts = [0] + [m.end() for m in re.finditer(r"\n", doc)]
        for i, e in enumerate(starts[1:], 1):
            m = re.match(r"(\d+) ", doc[e:])
            if not m:
                continue
            for b in reversed(starts[:i]):
                if e - b + len(m.group(1)) > MAX_LEN:
                    break
                if MIN_LEN <= e - b + len(m.group(1)) <= MAX_LEN:
                    yield b, e + len(m.group(1)), ""
    elif task == "austen":
        # prompt = whole sentences (may span paragraphs), ending at a sentence end
        ends = [m.end() for m in re.finditer(r"[.!?][\"']?(?=\s+[\"'A-Z])", doc)]
        starts = [0] + [m.end() for m in re.finditer(r"[.!?][\"']?\s+(?=[\"'A-Z])", doc)]
        for e in ends:
            for b in reversed([x for x in starts if x < e]):
                if e - b > MAX_LEN:
                    break
                if MIN_LEN <= e - b <= MAX_LEN:
                    yield b, e, ""
    elif task == "dictionary":
        # prompt = whole entries, then the first line (headword, pronunciation, part of
        # speech, etymology start) of the next entry; the model continues the definition
        estarts = [0] + [m.end() for m in re.finditer(r"\n\n", doc)]
        for i, s in enumerate(estarts[1:], 1):
            nl = doc.find("\n", s)
            if nl < 0:
                continue
            for b in reversed(estarts[:i]):
                if nl - b > MAX_LEN:
                    break
                if MIN_LEN <= nl - b <= MAX_LEN:
                    yield b, nl, ""
            if MIN_LEN <= nl - s <= MAX_LEN:
                yield s, nl, ""
    else:
        # code: whole lines, ending at the end of a line that opens a block or ends a
        # statement (without the newline: the model writes newline + indentation)
        lstarts = [0] + [m.end() for m in re.finditer(r"\n", doc)]
        opener = re.compile(r"[:{;)]\s*$" if task == "c" else r"[:)]\s*$")
        for i in range(1, len(lstarts)):
            e = lstarts[i] - 1  # position of the newline ending line i-1
            line = doc[lstarts[i - 1]:e]
            if not line.strip() or not opener.search(line):
                continue
            for b in reversed(lstarts[:i]):
                if e - b > MAX_LEN:
                    break
                if MIN_LEN <= e - b <= MAX_LEN and doc[b:e].strip() and not doc[b].isspace():
                    yield b, e, ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default="/work/corpus")
    ap.add_argument("--out", required=True)
    ap.add_argument("--test-chars", type=int, default=50_000)
    a = ap.parse_args()
    os.makedirs(os.path.join(a.out, "eval"), exist_ok=True)
    tok = Tokenizer(os.path.join(a.out, "tokenizer.json"))
    for task in DOMAINS:
        docs = [json.loads(l) for l in open(os.path.join(a.corpus, task, "test.jsonl"), encoding="utf-8")]
        # ---- test text for perplexity
        parts, tot = [], 0
        for d in docs:
            if SPECIAL.search(d):
                continue
            if tot + len(d) > a.test_chars:
                cut = d[: a.test_chars - tot]
                cut = cut[: cut.rfind("\n") + 1] if "\n" in cut else cut
                if cut.strip():
                    parts.append(cut.rstrip("\n"))
                break
            parts.append(d.rstrip("\n"))
            tot += len(d) + 2
        with open(os.path.join(a.out, "eval", f"{task}.test.txt"), "w", encoding="utf-8") as f:
            f.write("\n\n".join(parts) + "\n")
        # ---- prompts: one random candidate per (document, end position), non-overlapping
        rng = random.Random(f"{SEED}-{task}")
        cands = []
        for di, d in enumerate(docs):
            if SPECIAL.search(d):
                continue
            by_end = {}
            for b, e, extra in candidates(task, d):
                by_end.setdefault(e, []).append(b)
            for e in sorted(by_end):
                b = rng.choice(by_end[e])
                cands.append((di, b, e))
        rng.shuffle(cands)
        chosen, used = [], {}
        for di, b, e in cands:
            # <s> + prompt + max_tokens must fit the 256-token context
            if len(tok.encode(docs[di][b:e], True)) + MAX_TOKENS[task] > 256:
                continue
            # no overlap between the prompts (and references) taken from one document
            span = (b, e + 64)
            if any(not (span[1] <= s0 or span[0] >= s1) for s0, s1 in used.get(di, [])):
                continue
            used.setdefault(di, []).append(span)
            chosen.append((di, b, e))
            if len(chosen) == N_PROMPTS:
                break
        chosen.sort()
        with open(os.path.join(a.out, "eval", f"{task}.jsonl"), "w", encoding="utf-8") as f:
            for n, (di, b, e) in enumerate(chosen):
                ref = docs[di][e:e + 4 * MAX_TOKENS[task]]
                f.write(json.dumps({"id": f"{task}-{n:03d}", "task": task, "prompt": docs[di][b:e],
                                    "max_tokens": MAX_TOKENS[task], "reference": ref},
                                   ensure_ascii=False) + "\n")
        lens = sorted(e - b for _, b, e in chosen)
        print(f"{task}: {len(chosen)} prompts from {len(set(c[0] for c in chosen))} test documents, "
              f"prompt chars min {lens[0]} median {lens[len(lens) // 2]} max {lens[-1]}; "
              f"test text {sum(len(p) for p in parts)} chars")


if __name__ == "__main__":
    main()
