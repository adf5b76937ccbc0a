#!/usr/bin/python3
"""Routing statistics of the trained tiny-mixtral on the validation split.

  /usr/bin/python3 weights/scripts/routing_stats.py --model weights/tiny-mixtral --corpus /work/corpus

Definitions (all on the validation split; /work/corpus/<task>/valid.bin from encode_corpus.js):
  * token windows: up to --windows non-overlapping 256-token windows per task (evenly spaced),
    each run as one sequence, exactly as the validation loss is computed.
  * expert share: every token makes k=2 assignments (its top-2 experts), so a layer has
    2*N assignment slots for N tokens; an expert's share = its assignments / (2*N).  Shares of a
    layer sum to 1; perfectly uniform routing gives 1/16 = 6.25%.  Reported overall (all tasks
    pooled) and per task.
  * mutual information I(task; expert) per layer, in bits, over assignment slots: joint
    p(t, e) = assignments of task-t tokens to expert e / all assignments (each token counts
    twice, once per chosen expert).  Upper bound log2(5) = 2.32 bits.
  * prompt similarity: --chunks 64-token chunks per task cut from the validation stream, each run
    as its own sequence with <s> in front (like a prompt); a chunk's usage distribution per
    layer = its 2*64 assignments over the 16 experts.  Similarity = 1 - total variation distance
    (TV = half the L1 distance).  "same task": chunk i vs chunk i+1 of the same task; "other task":
    chunk i of task t vs chunk i of the next task in the list.  Also: nearest-centroid task
    identification from the concatenated per-layer usage (leave-one-out centroids).
Outputs routing_stats.json and routing_stats.md in the model directory.
"""
import os
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import argparse, json, math, sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mixtral_ref import load_model  # noqa: E402

DOMAINS = ["bible", "austen", "dictionary", "python", "c"]


def windows(arr, T, maxw):
    n = (len(arr) - 1) // T
    idx = np.linspace(0, n - 1, min(n, maxw)).astype(int) if n > maxw else np.arange(n)
    return np.stack([arr[i * T:i * T + T] for i in idx])


@torch.no_grad()
def route(model, batch, bs=16):
    """batch: int64 [B, T]; returns top-k expert ids [L, B, T, k]."""
    outs = []
    for i in range(0, len(batch), bs):
        _, _, router = model(torch.from_numpy(batch[i:i + bs]), return_router=True)
        outs.append(np.stack([t.numpy() for _, t in router]))  # [L, b, T, k]
    return np.concatenate(outs, axis=1)


def mutual_information(counts):
    """counts [D, E] of assignments -> MI in bits."""
    p = counts / counts.sum()
    pd = p.sum(1, keepdims=True)
    pe = p.sum(0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log2(p[nz] / (pd @ pe)[nz])).sum())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="weights/tiny-mixtral")
    ap.add_argument("--corpus", default="/work/corpus")
    ap.add_argument("--windows", type=int, default=200)
    ap.add_argument("--chunks", type=int, default=200)
    ap.add_argument("--chunk-len", type=int, default=64)
    a = ap.parse_args()
    torch.set_num_threads(2)
    model = load_model(a.model)
    c = model.c
    L, E, k = c["num_hidden_layers"], c["num_local_experts"], c["num_experts_per_tok"]
    val = {d: np.fromfile(os.path.join(a.corpus, d, "valid.bin"), dtype="<u2").astype(np.int64) for d in DOMAINS}

    # ---- token-level shares and MI
    counts = np.zeros((L, len(DOMAINS), E))
    ntok = {}
    for di, d in enumerate(DOMAINS):
        w = windows(val[d], 256, a.windows)
        top = route(model, w)                        # [L, B, T, k]
        ntok[d] = int(w.size)
        for l in range(L):
            counts[l, di] = np.bincount(top[l].reshape(-1), minlength=E)
    share_overall = counts.sum(1) / counts.sum((1, 2))[:, None]          # [L, E]
    share_task = counts / counts.sum(2, keepdims=True)                     # [L, D, E]
    mi = [mutual_information(counts[l]) for l in range(L)]

    # ---- prompt-level similarity
    T = a.chunk_len
    usage = {}
    for d in DOMAINS:
        arr = val[d]
        n = min(a.chunks, (len(arr) - 1) // T)
        idx = np.linspace(0, (len(arr) - 1) // T - 1, n).astype(int)
        ch = np.stack([arr[i * T:(i + 1) * T] for i in idx])
        ch = np.concatenate([np.ones((len(ch), 1), dtype=np.int64), ch], 1)  # <s> + 64 tokens
        top = route(model, ch, bs=64)[:, :, 1:, :]                          # drop the <s> position
        u = np.zeros((len(ch), L, E))
        for l in range(L):
            for j in range(len(ch)):
                u[j, l] = np.bincount(top[l, j].reshape(-1), minlength=E) / (T * k)
        usage[d] = u
    nmin = min(len(usage[d]) for d in DOMAINS)
    sim_same = np.zeros(L)
    sim_other = np.zeros(L)
    cnt_same = cnt_other = 0
    for di, d in enumerate(DOMAINS):
        u = usage[d][:nmin]
        o = usage[DOMAINS[(di + 1) % len(DOMAINS)]][:nmin]
        sim_same += (1 - 0.5 * np.abs(u[:-1] - u[1:]).sum(-1)).sum(0)
        cnt_same += nmin - 1
        sim_other += (1 - 0.5 * np.abs(u - o).sum(-1)).sum(0)
        cnt_other += nmin
    sim_same /= cnt_same
    sim_other /= cnt_other
    per_task_sim = {}
    for di, d in enumerate(DOMAINS):
        u = usage[d][:nmin]
        o = usage[DOMAINS[(di + 1) % len(DOMAINS)]][:nmin]
        per_task_sim[d] = {"same": float((1 - 0.5 * np.abs(u[:-1] - u[1:]).sum(-1)).mean()),
                           "other": float((1 - 0.5 * np.abs(u - o).sum(-1)).mean())}
    # nearest-centroid identification (leave-one-out), distance = summed TV over layers
    X = np.concatenate([usage[d][:nmin] for d in DOMAINS])          # [D*n, L, E]
    y = np.repeat(np.arange(len(DOMAINS)), nmin)
    sums = np.stack([usage[d][:nmin].sum(0) for d in DOMAINS])       # [D, L, E]
    correct = 0
    for i in range(len(X)):
        cents = sums / nmin
        cents = cents.copy()
        cents[y[i]] = (sums[y[i]] - X[i]) / (nmin - 1)
        dist = 0.5 * np.abs(cents - X[i][None]).sum(-1).sum(-1)
        correct += int(dist.argmin() == y[i])
    ident_acc = correct / len(X)

    min_share = float(share_overall.min())
    res = {
        "definitions": __doc__,
        "validation_tokens_per_task": ntok,
        "expert_share_overall": share_overall.round(5).tolist(),
        "expert_share_per_task": {d: share_task[:, di].round(5).tolist() for di, d in enumerate(DOMAINS)},
        "min_expert_share_overall": min_share,
        "min_expert_share_overall_at": [int(x) for x in np.unravel_index(share_overall.argmin(), share_overall.shape)],
        "max_expert_share_overall": float(share_overall.max()),
        "mutual_information_bits": mi,
        "prompt_similarity_same_task": sim_same.round(4).tolist(),
        "prompt_similarity_other_task": sim_other.round(4).tolist(),
        "prompt_similarity_per_task_mean_over_layers": per_task_sim,
        "chunks_per_task": nmin,
        "chunk_len": T,
        "task_identification_accuracy_nearest_centroid": ident_acc,
        "bars": {"every_expert_share_ge_2pct": min_share >= 0.02,
                 "mi_gt_0.1_bits_in_at_least_half_of_layers": sum(m > 0.1 for m in mi) >= L / 2},
    }
    json.dump(res, open(os.path.join(a.model, "routing_stats.json"), "w"), indent=1)

    md = ["# tiny-mixtral routing statistics (validation split)", "",
          f"Tokens: {', '.join(f'{d} {ntok[d]:,}' for d in DOMAINS)} (256-token windows). "
          "An expert's share = its top-2 assignments / (2 x tokens); uniform = 6.25%.", "",
          "## Mutual information I(task; expert) and prompt similarity", "",
          "| layer | MI (bits) | min share | max share | sim. same task | sim. other task |",
          "|---|---|---|---|---|---|"]
    for l in range(L):
        md.append(f"| {l} | {mi[l]:.3f} | {100 * share_overall[l].min():.2f}% | {100 * share_overall[l].max():.2f}% | "
                  f"{sim_same[l]:.3f} | {sim_other[l]:.3f} |")
    md += ["", f"Similarity = 1 - total variation distance between two {T}-token prompts' expert-usage "
           f"distributions ({nmin} prompts per task, each run alone after <s>). Nearest-centroid task "
           f"identification from a prompt's usage histograms (all layers): {100 * ident_acc:.1f}% "
           f"(chance 20%).", "",
           "Per task, mean over layers: " + ", ".join(
               f"{d} same {per_task_sim[d]['same']:.3f} / other {per_task_sim[d]['other']:.3f}" for d in DOMAINS), "",
           f"Bars: every expert of every layer >= 2% of assignment slots: "
           f"{'PASS' if res['bars']['every_expert_share_ge_2pct'] else 'FAIL'} (min {100 * min_share:.2f}%); "
           f"MI > 0.1 bits in at least half the layers: "
           f"{'PASS' if res['bars']['mi_gt_0.1_bits_in_at_least_half_of_layers'] else 'FAIL'}.", ""]
    for l in range(L):
        md += [f"## Layer {l}: expert share per task (%)", "",
               "| expert | all | " + " | ".join(DOMAINS) + " |",
               "|---" * (len(DOMAINS) + 2) + "|"]
        for e in range(E):
            md.append(f"| {e} | {100 * share_overall[l, e]:.1f} | " +
                      " | ".join(f"{100 * share_task[l, di, e]:.1f}" for di in range(len(DOMAINS))) + " |")
        md.append("")
    open(os.path.join(a.model, "routing_stats.md"), "w").write("\n".join(md))
    print("\n".join(md[:12 + L]))


if __name__ == "__main__":
    main()
