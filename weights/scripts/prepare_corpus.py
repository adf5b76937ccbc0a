#!/usr/bin/python3
"""Extract, clean and split the five-domain corpus for tiny-mixtral.

Sources (Debian 12 packages):
  bible       bible-kjv-text  (read with the `bible` program from bible-kjv)
  austen      r-cran-janeaustenr (character vectors read with Rscript)
  dictionary  dict-gcide      (/usr/share/dictd/gcide.dict.dz)
  python      Python 3.11 standard library sources (/usr/lib/python3.11/**/*.py)
  c           glibc-source    (/usr/src/glibc/glibc-2.36.tar.xz, *.c files)

Each domain is cut into documents (bible: chapter, austen: chapter, dictionary: run of
consecutive entries of ~2 KB, python/c: one source file), documents are shuffled with a
fixed seed and split 90/5/5 into train/valid/test.  Output:
  OUT/<domain>/{train,valid,test}.jsonl   one JSON string (a document) per line
  OUT/manifest.json                       counts and sizes

Usage: /usr/bin/python3 prepare_corpus.py [--out /work/corpus]
"""
import argparse, gzip, io, json, os, random, re, subprocess, sys, tarfile

SEED = 20261124
DOMAINS = ["bible", "austen", "dictionary", "python", "c"]


def bible_docs():
    out = subprocess.run(["bible", "-l0", "gen1:1-rev22:21"], check=True,
                         capture_output=True, text=True).stdout
    docs, cur = [], None
    for line in out.splitlines():
        if not line.strip():
            continue
        m = re.match(r"^\s+(\d+) (.*)$", line)
        if m and cur is not None:
            cur.append(f"{m.group(1)} {m.group(2).strip()}")
        else:  # chapter heading such as "Genesis 1"
            if cur:
                docs.append("\n".join(cur))
            cur = [line.strip()]
    if cur:
        docs.append("\n".join(cur))
    return docs


AUSTEN_BOOKS = ["sensesensibility", "prideprejudice", "mansfieldpark", "emma",
                "northangerabbey", "persuasion"]


def austen_docs():
    code = ("suppressMessages(library(janeaustenr));"
            "for (b in c(%s)) { x <- get(b); cat('@@@BOOK ', b, '\\n', sep='');"
            " writeLines(x) }" % ",".join(f"'{b}'" for b in AUSTEN_BOOKS))
    out = subprocess.run(["Rscript", "-e", code], check=True, capture_output=True,
                         text=True).stdout
    docs = []
    for book in out.split("@@@BOOK ")[1:]:
        lines = book.split("\n")[1:]
        # Re-flow: the R vectors hold one printed line per element, paragraphs are
        # separated by empty elements.  Join lines into paragraphs.
        paras, cur = [], []
        for ln in lines:
            if ln.strip() == "":
                if cur:
                    paras.append(" ".join(cur))
                    cur = []
            else:
                cur.append(ln.strip())
        if cur:
            paras.append(" ".join(cur))
        # chapters start with a paragraph "CHAPTER ..." / "Chapter ..."
        chap = []
        for p in paras:
            if re.match(r"^(CHAPTER|Chapter)\s+[0-9IVXLC]+\.?$", p) and chap:
                docs.append("\n\n".join(chap))
                chap = []
            chap.append(p)
        if chap:
            docs.append("\n\n".join(chap))
    # drop tiny front matter pieces
    return [d for d in docs if len(d) > 500]


def dictionary_docs():
    raw = gzip.open("/usr/share/dictd/gcide.dict.dz", "rb").read()
    entries = []
    for eb in re.split(rb"\n[ \t]*\n", raw):
        try:
            entries.append(eb.decode("utf-8"))
        except UnicodeDecodeError:  # a few entries are in Windows-1252
            entries.append(eb.decode("cp1252", errors="replace"))
    keep = []
    for e in entries:
        e = e.rstrip()
        if not e.strip() or e.lstrip().startswith("00-database") or "00databaseinfo" in e:
            continue
        # drop provenance lines such as "[1913 Webster]" / "[Webster 1913 Suppl.]" / "[PJC]"
        lines = [ln for ln in e.split("\n")
                 if not re.match(r"^\s*\[(1913 Webster|Webster 1913 Suppl\.|PJC|Century Dict\.|[^\]]{0,40}Webster[^\]]{0,20})\]\s*$", ln)]
        e = "\n".join(lines).strip("\n")
        if e.strip():
            keep.append(e)
    keep = keep[20:]  # skip the database front matter
    docs, cur, size = [], [], 0
    for e in keep:
        cur.append(e)
        size += len(e)
        if size >= 2000:
            docs.append("\n\n".join(cur))
            cur, size = [], 0
    if cur:
        docs.append("\n\n".join(cur))
    return docs


def python_docs():
    root = "/usr/lib/python3.11"
    docs = []
    for dp, dn, fn in os.walk(root):
        dn.sort()
        if "-packages" in dp or "__pycache__" in dp:
            continue
        for f in sorted(fn):
            if not f.endswith(".py"):
                continue
            p = os.path.join(dp, f)
            if "_sysconfigdata" in f or p.endswith("pydoc_data/topics.py"):
                continue
            try:
                t = open(p, encoding="utf-8").read()
            except UnicodeDecodeError:
                continue
            if 200 <= len(t) <= 300_000:
                docs.append(t.strip("\n") + "\n")
    return docs


LICENSE_RE = re.compile(r"^\s*/\*.*?\*/\s*", re.S)


def c_docs():
    docs = []
    with tarfile.open("/usr/src/glibc/glibc-2.36.tar.xz") as tf:
        for m in tf:
            if not m.isfile() or not m.name.endswith(".c"):
                continue
            if m.size < 300 or m.size > 60_000:
                continue
            if "/localedata/" in m.name or "/iconvdata/" in m.name or "/libm-test" in m.name:
                continue
            b = tf.extractfile(m).read()
            try:
                t = b.decode("utf-8")
            except UnicodeDecodeError:
                continue
            # strip the leading licence/copyright comment (identical boilerplate)
            mm = LICENSE_RE.match(t)
            if mm and ("Copyright" in mm.group(0) or "License" in mm.group(0)):
                t = t[mm.end():]
            t = t.strip("\n")
            if len(t) >= 300:
                docs.append(t + "\n")
    return docs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/work/corpus")
    ap.add_argument("--max-train-chars", type=int, default=16_000_000)
    a = ap.parse_args()
    fns = {"bible": bible_docs, "austen": austen_docs, "dictionary": dictionary_docs,
           "python": python_docs, "c": c_docs}
    manifest = {"seed": SEED, "domains": {}}
    for d in DOMAINS:
        docs = fns[d]()
        # normalise line endings / trailing whitespace on lines; drop NULs and the
        # metaspace symbol (it would not round-trip through the tokenizer)
        docs = [re.sub(r"[ \t]+\n", "\n", x.replace("\r\n", "\n").replace("\r", "\n")
                       .replace("\x00", "").replace("\u2581", "_")) for x in docs]
        rng = random.Random(f"{SEED}-{d}")
        idx = list(range(len(docs)))
        rng.shuffle(idx)
        n = len(idx)
        n_test = max(1, round(0.05 * n))
        n_val = max(1, round(0.05 * n))
        splits = {"test": idx[:n_test], "valid": idx[n_test:n_test + n_val],
                  "train": idx[n_test + n_val:]}
        # cap the training text (keeps tokenisation fast; more than training consumes)
        tr, tot = [], 0
        for i in splits["train"]:
            if tot >= a.max_train_chars:
                break
            tr.append(i)
            tot += len(docs[i])
        splits["train"] = tr
        os.makedirs(os.path.join(a.out, d), exist_ok=True)
        info = {"documents_total": n}
        for s, ids in splits.items():
            with open(os.path.join(a.out, d, f"{s}.jsonl"), "w", encoding="utf-8") as f:
                for i in ids:
                    f.write(json.dumps(docs[i], ensure_ascii=False) + "\n")
            info[s] = {"documents": len(ids), "chars": sum(len(docs[i]) for i in ids)}
        manifest["domains"][d] = info
        print(d, json.dumps(info), flush=True)
    json.dump(manifest, open(os.path.join(a.out, "manifest.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
