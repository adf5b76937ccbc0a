#!/usr/bin/python3
"""Train a 4096-entry byte-fallback BPE tokenizer in the style of Mistral/Mixtral's
tokenizer.json (Llama-style: normalizer Prepend("▁") + Replace(" ", "▁"), no
pre-tokenizer, BPE with byte_fallback, ids 0..2 = <unk> <s> </s>, 3..258 = <0x00>..<0xFF>).

Training data: a balanced sample (--chars-per-domain) of the training split of each domain.
For counting, the normalised text is cut into pieces (a run of "▁" followed by non-▁
non-newline characters, a run of "▁", or a run of newlines) so that learnt merges stay
inside words like SentencePiece's; encoding is done by the tokenizers library on the whole
string with merge ranks, exactly as for Mistral's tokenizer.json.

Usage: /usr/bin/python3 train_tokenizer.py --corpus /work/corpus --out ../tiny-mixtral
"""
import argparse, collections, json, os, random, re

VOCAB_SIZE = 4096
DOMAINS = ["bible", "austen", "dictionary", "python", "c"]
SP = "\u2581"
PIECE_RE = re.compile(SP + r"*[^" + SP + r"\n]+|" + SP + r"+|\n+")


def load_sample(corpus, n_chars, seed):
    texts = []
    for d in DOMAINS:
        docs = [json.loads(l) for l in open(os.path.join(corpus, d, "train.jsonl"), encoding="utf-8")]
        rng = random.Random(f"{seed}-{d}")
        rng.shuffle(docs)
        tot = 0
        for x in docs:
            if tot >= n_chars:
                break
            x = x[: n_chars - tot + 2000]
            texts.append(x)
            tot += len(x)
    return texts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default="/work/corpus")
    ap.add_argument("--out", required=True)
    ap.add_argument("--chars-per-domain", type=int, default=1_500_000)
    ap.add_argument("--min-char-count", type=int, default=30)
    ap.add_argument("--model-max-length", type=int, default=256)
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()

    texts = load_sample(a.corpus, a.chars_per_domain, a.seed)
    words = collections.Counter()
    chars = collections.Counter()
    for t in texts:
        s = SP + t.replace(" ", SP)  # the tokenizer's normalizer
        for p in PIECE_RE.findall(s):
            words[p] += 1
        chars.update(s)

    specials = ["<unk>", "<s>", "</s>"]
    vocab = {t: i for i, t in enumerate(specials)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    # alphabet: characters seen often enough (rarer ones go through byte fallback)
    alphabet = sorted([c for c, n in chars.items() if n >= a.min_char_count],
                      key=lambda c: (-chars[c], c))
    for c in alphabet:
        if c not in vocab:
            vocab[c] = len(vocab)
    n_merges = VOCAB_SIZE - len(vocab)
    print(f"alphabet {len(alphabet)} chars, {len(words)} distinct pieces, {n_merges} merges")

    # BPE training: words as symbol lists, incremental pair counts
    wlist = [[c if c in vocab else None for c in w] for w in words]
    wcount = [words[w] for w in words]
    # pieces containing characters outside the alphabet: split at those characters
    seqs, cnts = [], []
    for syms, n in zip(wlist, wcount):
        cur = []
        for s in syms:
            if s is None:
                if len(cur) > 1:
                    seqs.append(cur); cnts.append(n)
                cur = []
            else:
                cur.append(s)
        if len(cur) > 1:
            seqs.append(cur); cnts.append(n)
    pair_cnt = collections.Counter()
    where = collections.defaultdict(set)
    for i, (w, n) in enumerate(zip(seqs, cnts)):
        for x, y in zip(w, w[1:]):
            pair_cnt[(x, y)] += n
            where[(x, y)].add(i)
    merges = []
    while len(merges) < n_merges:
        if not pair_cnt:
            break
        best = max(pair_cnt.items(), key=lambda kv: (kv[1], kv[0]))[0]
        new = best[0] + best[1]
        if new in vocab:  # cannot happen for real text; guard anyway
            del pair_cnt[best]
            continue
        merges.append(best)
        vocab[new] = len(vocab)
        for i in list(where[best]):
            w, n = seqs[i], cnts[i]
            # remove old pairs
            for x, y in zip(w, w[1:]):
                pair_cnt[(x, y)] -= n
                if pair_cnt[(x, y)] <= 0:
                    del pair_cnt[(x, y)]
            out, j = [], 0
            while j < len(w):
                if j + 1 < len(w) and w[j] == best[0] and w[j + 1] == best[1]:
                    out.append(new); j += 2
                else:
                    out.append(w[j]); j += 1
            seqs[i] = out
            for x, y in zip(out, out[1:]):
                pair_cnt[(x, y)] += n
                where[(x, y)].add(i)
        where.pop(best, None)
        if len(merges) % 500 == 0:
            print(f"{len(merges)} merges, last {best!r}", flush=True)
    assert len(vocab) == VOCAB_SIZE, len(vocab)

    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True} for i, t in enumerate(specials)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": SP},
            {"type": "Replace", "pattern": {"String": " "}, "content": SP}]},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SP}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": [f"{x} {y}" for x, y in merges]},
    }
    for x, y in merges:
        assert " " not in x and " " not in y
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False, indent=2)
    cfg = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": None,
        "clean_up_tokenization_spaces": False,
        "legacy": True,
        "model_max_length": a.model_max_length,
        "spaces_between_special_tokens": False,
        "tokenizer_class": "LlamaTokenizer",
        "use_default_system_prompt": False,
        "added_tokens_decoder": {str(i): {"content": t, "lstrip": False, "normalized": False,
                                          "rstrip": False, "single_word": False, "special": True}
                                 for i, t in enumerate(specials)},
    }
    with open(os.path.join(a.out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, ensure_ascii=False, indent=2)
    print("wrote tokenizer with", len(vocab), "tokens,", len(merges), "merges")


if __name__ == "__main__":
    main()
