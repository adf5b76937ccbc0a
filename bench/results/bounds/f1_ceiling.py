#!/usr/bin/python3
"""How high can eMoE's predictor F1 go on the shipped model? A sampling-noise estimate.

eMoE's F1 scores the k experts a predictor names for a prompt and layer against the prompt's own
k most-used experts (prefill + decode), so the target moves with the sampling noise of a few
hundred assignments. This estimates the F1 that even a predictor knowing the prompt's routing
*distribution* exactly would get: resample the prompt's tokens (with replacement), take the
resample's k most-used experts, and score them against the observed k most-used (ties broken
toward the lower expert id, as the benchmark does). Variants:
  iid            every token resampled independently
  block          runs of 8 consecutive tokens resampled (routing of adjacent tokens is correlated)
  decode only    the prefill counts kept as observed (a predictor that reads the prefill knows them),
                 decode tokens resampled in blocks of 8
Resampling from the observed counts favours the observed top-k (their lead is inflated by the
same noise), so these are estimates from above, not proofs. Split-half: top-k of even tokens
against top-k of odd tokens.

Run (numpy; trace written by `emoe bench residency`):
    /usr/bin/python3 bench/results/bounds/f1_ceiling.py [bench/results/prediction/trace/trace.jsonl]
"""
import collections, json, os, sys
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TRACE = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "prediction", "trace", "trace.jsonl")
ROUNDS, BLOCK = 200, 8


def topk(counts, k):
    return set(np.lexsort((np.arange(len(counts)), -counts))[:k].tolist())


def main():
    rng = np.random.default_rng(0)
    rows = [json.loads(line) for line in open(TRACE, encoding="utf-8")]
    E, k, layers = rows[0]["num_experts"], rows[0]["top_k"], rows[0]["num_layers"]
    score = collections.defaultdict(lambda: collections.defaultdict(list))
    tokens = []
    for r in rows:
        tokens.append(sum(s["tokens"] for s in r["steps"]))
        prefill_len = r["steps"][0]["tokens"]
        for L in range(layers):
            assign = np.concatenate([np.array(s["experts"][L]).reshape(-1, k) for s in r["steps"]])
            n = len(assign)
            observed = topk(np.bincount(assign.ravel(), minlength=E), k)

            def f1(idx, fixed=None):
                c = np.bincount(assign[idx].ravel(), minlength=E)
                if fixed is not None:
                    c = c + fixed
                return len(topk(c, k) & observed) / k

            def blocks(lo, hi):
                starts = rng.integers(lo, max(lo + 1, hi - BLOCK + 1), (hi - lo + BLOCK - 1) // BLOCK)
                return np.concatenate([np.arange(s, min(s + BLOCK, hi)) for s in starts])[: hi - lo]

            prefill_counts = np.bincount(assign[:prefill_len].ravel(), minlength=E)
            v = score[r["task"]]
            v["iid"].append(np.mean([f1(rng.integers(0, n, n)) for _ in range(ROUNDS)]))
            v["block"].append(np.mean([f1(blocks(0, n)) for _ in range(ROUNDS)]))
            v["decode only"].append(np.mean([f1(blocks(prefill_len, n), prefill_counts) if n > prefill_len else 1.0
                                             for _ in range(ROUNDS)]))
            even = np.bincount(assign[0::2].ravel(), minlength=E)
            odd = np.bincount(assign[1::2].ravel(), minlength=E)
            v["split-half"].append(len(topk(even, k) & topk(odd, k)) / k)
    kinds = ["iid", "block", "decode only", "split-half"]
    print(f"trace: {TRACE} ({len(rows)} prompts, {np.mean(tokens):.0f} tokens per prompt on average, {layers} layers, top-{k} of {E})\n")
    print("| task | " + " | ".join(kinds) + " |")
    print("|---|" + "---|" * len(kinds))
    for t in sorted(score) + ["all"]:
        vals = [np.mean(sum((score[x][kd] for x in score), [])) if t == "all" else np.mean(score[t][kd]) for kd in kinds]
        print(f"| {t} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")


if __name__ == "__main__":
    main()
