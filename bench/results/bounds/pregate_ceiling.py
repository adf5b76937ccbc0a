#!/usr/bin/python3
"""How accurate can a pre-gate be on the shipped model? Per-token lookahead recall of several gates.

For each layer L+1 (1..3) a gate sees what is known while layer L computes -- layer L's MoE input
(the post-attention-norm state both Pre-gated MoE and `--pregate` use) -- and names W experts of
layer L+1; recall is the share of the token's actual top-2 at layer L+1 among them. Gates:
  training-free    layer L+1's router applied to layer L's MoE input (`--pregate`)
  linear (ridge)   a linear gate + bias fitted to layer L+1's logits (what `emoe fit-pregate` fits)
  linear + prev    the same with the previous token's layer-(L+1) router probabilities as inputs
  MLP              one hidden layer of 256 SiLU units, trained with soft-target cross-entropy
  MLP + prev       the MLP with the previous token's layer-(L+1) probabilities as inputs
  late (t.-free)   layer L+1's router on layer L's *output* (after its experts), normed as layer
                   L+1 norms; it can only hide a copy behind layer L+1's attention
Fit on evaluation prompts 120..159 of every task (prompt + reference, as `emoe fit-pregate`),
scored on prompts 0..7 (never fitted on).

Run (torch reference of the model; see shared/notes/training.md for the packages):
    /usr/bin/python3 bench/results/bounds/pregate_ceiling.py
"""
import json, os, sys
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "weights", "scripts"))
import numpy as np
import torch
from mixtral_ref import load_model
from tok_ref import Tokenizer

TASKS = ["austen", "bible", "c", "dictionary", "python"]
WIDTHS = (2, 3, 4)


@torch.no_grad()
def capture(m, tok, model_dir, first, last):
    """Per sequence: each layer's MoE input [T, H] and output of the whole block [T, H]."""
    seqs = []
    moe_in, block_out = {}, {}
    hooks = []
    for L, layer in enumerate(m.layers):
        hooks.append(layer.block_sparse_moe.register_forward_pre_hook(
            lambda mod, inp, L=L: moe_in.__setitem__(L, inp[0][0].clone())))
        hooks.append(layer.register_forward_hook(
            lambda mod, inp, out, L=L: block_out.__setitem__(L, out[0][0].clone())))
    for t in TASKS:
        rows = [json.loads(line) for line in open(os.path.join(model_dir, "eval", f"{t}.jsonl"), encoding="utf-8")]
        for r in rows[first:last]:
            ids = tok.encode(r["prompt"] + r["reference"], add_special_tokens=True)
            m(torch.tensor([ids]))
            seqs.append(([moe_in[L] for L in range(len(m.layers))], [block_out[L] for L in range(len(m.layers))]))
    for h in hooks:
        h.remove()
    return seqs


def recall(pred, true, w):
    t = true.topk(2, -1)[1]
    p = pred.topk(w, -1)[1]
    return (t[:, :, None] == p[:, None, :]).any(-1).float().mean().item()


def previous(probs_per_seq):
    """The previous token's probabilities (zeros for a sequence's first token), concatenated."""
    return torch.cat([torch.cat([torch.zeros(1, p.shape[1]), p[:-1]]) for p in probs_per_seq])


def ridge(x, y, lam=0.01):
    a = torch.cat([x, torch.ones(len(x), 1)], 1).double()
    g = a.T @ a
    w = torch.linalg.solve(g + lam * g.diagonal().mean() * torch.eye(len(g), dtype=g.dtype), a.T @ y.double())
    return lambda z: (torch.cat([z, torch.ones(len(z), 1)], 1).double() @ w).float()


def mlp(x, y, hidden=256, epochs=12, seed=0):
    torch.manual_seed(seed)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, y.shape[1]))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    target = torch.softmax(y, -1)
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 256):
            b = perm[i:i + 256]
            loss = -(target[b] * torch.log_softmax(net((x[b] - mu) / sd), -1)).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    return lambda z: net((z - mu) / sd).detach()


def main():
    torch.set_num_threads(2)
    model_dir = os.path.join(ROOT, "weights", "tiny-mixtral")
    m = load_model(model_dir)
    tok = Tokenizer(os.path.join(model_dir, "tokenizer.json"))
    train, test = capture(m, tok, model_dir, 120, 160), capture(m, tok, model_dir, 0, 8)
    print(f"fit on {sum(len(s[0][0]) for s in train)} tokens, scored on {sum(len(s[0][0]) for s in test)}", flush=True)
    names = ["training-free", "linear (ridge)", "linear + prev", "MLP", "MLP + prev", "late (training-free)"]
    table = {n: [] for n in names}
    for L in range(len(m.layers) - 1):
        gate = m.layers[L + 1].block_sparse_moe.gate
        norm = m.layers[L + 1].post_attention_layernorm
        with torch.no_grad():
            per_seq_tr = [gate(s[0][L + 1]) for s in train]  # layer L+1's router logits, per sequence
            per_seq_te = [gate(s[0][L + 1]) for s in test]
            y_tr, y_te = torch.cat(per_seq_tr), torch.cat(per_seq_te)
            x_tr = torch.cat([s[0][L] for s in train])
            x_te = torch.cat([s[0][L] for s in test])
            prev_tr = previous([torch.softmax(v, -1) for v in per_seq_tr])
            prev_te = previous([torch.softmax(v, -1) for v in per_seq_te])
            late = gate(norm(torch.cat([s[1][L] for s in test])))
            free = gate(x_te)
        xp_tr, xp_te = torch.cat([x_tr, prev_tr], 1), torch.cat([x_te, prev_te], 1)
        preds = {
            "training-free": free,
            "linear (ridge)": ridge(x_tr, y_tr)(x_te),
            "linear + prev": ridge(xp_tr, y_tr)(xp_te),
            "MLP": mlp(x_tr, y_tr)(x_te),
            "MLP + prev": mlp(xp_tr, y_tr)(xp_te),
            "late (training-free)": late,
        }
        for n in names:
            table[n].append([recall(preds[n], y_te, w) for w in WIDTHS])
        print(f"layer {L + 1} done", flush=True)
    layers = len(m.layers) - 1
    head = " | ".join(f"layer {L + 1} W={w}" for L in range(layers) for w in (2,)) + " | " + " | ".join(f"all W={w}" for w in WIDTHS)
    print(f"\n| gate | {head} |")
    print("|---|" + "---|" * (layers + len(WIDTHS)))
    for n in names:
        r = np.array(table[n])
        cells = [f"{100 * r[L, 0]:.1f} %" for L in range(layers)] + [f"{100 * r[:, i].mean():.1f} %" for i in range(len(WIDTHS))]
        print(f"| {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
