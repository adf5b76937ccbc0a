#!/usr/bin/python3
"""Evaluate the exported tiny-mixtral (config.json + model.safetensors) with the reference torch
implementation and the pure-Python tokenizer (tok_ref.py, identical to the npm library's ids):

  * loss (nats/token) per task on the validation and test splits (/work/corpus/<task>/*.bin,
    up to 200 evenly spaced non-overlapping 256-token windows), and on the committed
    eval/<task>.test.txt files (<s> + text, non-overlapping 256-token windows)
  * greedy continuations of the first N prompts of every eval/<task>.jsonl
  * checks that every prompt plus its max_tokens fits the 256-token context

  /usr/bin/python3 weights/scripts/evaluate.py --model weights/tiny-mixtral --corpus /work/corpus
Writes eval_results.json and eval_samples.md in the model directory.
"""
import os
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import argparse, json, math, sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mixtral_ref import load_model, greedy  # noqa: E402
from tok_ref import Tokenizer  # noqa: E402

DOMAINS = ["bible", "austen", "dictionary", "python", "c"]


@torch.no_grad()
def loss_on_windows(model, wins, bs=16):
    tot, n = 0.0, 0
    for i in range(0, len(wins), bs):
        b = torch.from_numpy(np.stack(wins[i:i + bs]))
        logits, _ = model(b[:, :-1])
        tot += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b[:, 1:].reshape(-1), reduction="sum").item()
        n += b[:, 1:].numel()
    return tot / n, n


def bin_windows(arr, T=256, maxw=200):
    n = (len(arr) - 1) // T
    idx = np.linspace(0, n - 1, min(n, maxw)).astype(int) if n > maxw else np.arange(n)
    return [arr[i * T:i * T + T + 1] for i in idx]


@torch.no_grad()
def text_loss(model, ids, T=256, bs=16):
    """Non-overlapping windows; each window after the first starts at the previous one's last
    target, so every token after the initial <s> is predicted exactly once."""
    ids = np.array(ids, dtype=np.int64)
    wins = [ids[s:s + T + 1] for s in range(0, len(ids) - 1, T)]
    tot, n = 0.0, 0
    for w in wins:
        b = torch.from_numpy(w[None])
        logits, _ = model(b[:, :-1])
        tot += F.cross_entropy(logits[0], b[0, 1:], reduction="sum").item()
        n += len(w) - 1
    return tot / n, n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="weights/tiny-mixtral")
    ap.add_argument("--corpus", default="/work/corpus")
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--sample-tokens", type=int, default=40)
    a = ap.parse_args()
    torch.set_num_threads(2)
    model = load_model(a.model)
    tok = Tokenizer(os.path.join(a.model, "tokenizer.json"))
    res = {"loss_nats_per_token": {}, "prompt_fit": {}}
    for d in DOMAINS:
        r = {}
        for split in ("valid", "test"):
            p = os.path.join(a.corpus, d, split + ".bin")
            if os.path.exists(p):
                arr = np.fromfile(p, dtype="<u2").astype(np.int64)
                r[split], r[split + "_tokens"] = loss_on_windows(model, bin_windows(arr))
        txt = open(os.path.join(a.model, "eval", f"{d}.test.txt"), encoding="utf-8").read()
        ids = tok.encode(txt, add_special_tokens=True)
        r["test_txt"], r["test_txt_tokens"] = text_loss(model, ids)
        r["test_txt_chars_per_token"] = len(txt) / (len(ids) - 1)
        r["test_txt_bits_per_char"] = r["test_txt"] * (len(ids) - 1) / len(txt) / math.log(2)
        res["loss_nats_per_token"][d] = r
        print(d, json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}), flush=True)
    for s in ("valid", "test", "test_txt"):
        vals = [res["loss_nats_per_token"][d].get(s) for d in DOMAINS]
        if all(v is not None for v in vals):
            res["loss_nats_per_token"]["mean_" + s] = sum(vals) / len(vals)

    md = ["# Greedy continuations (reference torch model, tokenizer ids identical to npm tokenizers)", ""]
    samples = []
    for d in DOMAINS:
        prompts = [json.loads(l) for l in open(os.path.join(a.model, "eval", f"{d}.jsonl"), encoding="utf-8")]
        lens = [len(tok.encode(p["prompt"], True)) for p in prompts]
        res["prompt_fit"][d] = {"prompts": len(prompts), "max_prompt_tokens": max(lens),
                                "median_prompt_tokens": sorted(lens)[len(lens) // 2],
                                "max_tokens": prompts[0]["max_tokens"],
                                "all_fit_256": all(n + p["max_tokens"] <= 256 for n, p in zip(lens, prompts))}
        for p in prompts[:a.samples]:
            ids = tok.encode(p["prompt"], True)
            out = greedy(model, ids, a.sample_tokens)
            text = tok.decode(out, skip_special_tokens=False)
            # decode of the continuation alone would strip a leading space: decode jointly
            full = tok.decode(ids + out, skip_special_tokens=True)
            cont = full[len(tok.decode(ids, skip_special_tokens=True)):]
            samples.append({"id": p["id"], "task": d, "prompt": p["prompt"], "prompt_ids": ids,
                            "greedy_ids": out, "greedy_text": cont})
            md += [f"## {p['id']} ({d})", "", "Prompt:", "", "```", p["prompt"], "```", "",
                   f"Greedy continuation ({len(out)} tokens):", "", "```", cont, "```", "",
                   "Reference (true continuation):", "", "```", p["reference"][:len(cont) + 40], "```", ""]
    res["samples"] = samples
    json.dump(res, open(os.path.join(a.model, "eval_results.json"), "w"), indent=1)
    open(os.path.join(a.model, "eval_samples.md"), "w").write("\n".join(md))
    print(json.dumps(res["prompt_fit"], indent=1))


if __name__ == "__main__":
    main()
