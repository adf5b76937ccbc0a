#!/usr/bin/python3
"""Upper bound on eMoE's no-stall reroute mode at a given expert budget, on the shipped model.

For each 256-token window the engine's quality benchmark scores (the first 1,024 tokens of each
task's held-out test text, no BOS, as `emoe perplexity --context 256` cuts them), an *oracle* keeps
resident, per layer, the experts that this very window uses most -- knowledge no predictor has --
and every other assignment is rerouted exactly as ExpertCache.Reroute does: to the token's
highest-ranked resident expert it does not already use, weights rescaled to the same total. (For
top-2 that is: route each token to its top-2 *resident* experts by router probability.) The slots
(round-down of budget x layers x experts) are shared across layers; every split with at least
top-k per layer is tried and each task gets its best one. The oracle picks a layer's set from the
routing that layer actually sees (after rerouting upstream). No resident-set predictor can do
better than this oracle on these windows, so if its perplexity change exceeds a target, the target
is out of reach for eMoE's mode on this model.

Run (torch reference of the model; see ../../../../shared/notes/training.md for the packages):
    /usr/bin/python3 bench/results/bounds/reroute_oracle.py [--budget 0.6] [--tokens 1024] [--first-layer-all]
"""
import argparse, itertools, math, os, sys
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "weights", "scripts"))
import torch
import torch.nn.functional as F
from mixtral_ref import load_model
from tok_ref import Tokenizer

TASKS = ["austen", "bible", "c", "dictionary", "python"]


@torch.no_grad()
def window_nll(m, ids, quota):
    """Summed NLL of ids[1:] given the prefix, and rerouted assignments; quota None = all resident."""
    rerouted = 0
    hooks = []

    def oracle(L):
        def pick(mod, args):
            nonlocal rerouted
            xn = args[0]
            used = torch.softmax(mod.gate(xn), -1).topk(mod.k, -1)[1].flatten()
            resident = torch.zeros(mod.E, dtype=torch.bool)
            resident[torch.bincount(used, minlength=mod.E).argsort(descending=True, stable=True)[:quota[L]]] = True
            rerouted += int((~resident[used]).sum())
            return (xn, resident)
        return pick

    if quota is not None:
        hooks = [layer.block_sparse_moe.register_forward_pre_hook(oracle(L)) for L, layer in enumerate(m.layers)]
    try:
        logits = m(torch.tensor([ids]))[0][0]
    finally:
        for h in hooks:
            h.remove()
    logp = F.log_softmax(logits[:-1], -1)
    return -float(logp.gather(1, torch.tensor(ids[1:])[:, None]).sum()), rerouted


def splits(slots, layers, experts, k, first_all):
    for q in itertools.product(range(k, experts + 1), repeat=layers - 1):
        last = slots - sum(q)
        if k <= last <= experts and (not first_all or q[0] == experts):
            yield list(q) + [last]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=0.6)
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--first-layer-all", action="store_true",
                    help="only splits that keep every layer-0 expert (the best split at 60%% always does)")
    a = ap.parse_args()
    torch.set_num_threads(2)
    model_dir = os.path.join(ROOT, "weights", "tiny-mixtral")
    m = load_model(model_dir)
    tok = Tokenizer(os.path.join(model_dir, "tokenizer.json"))
    c = m.c
    layers, experts, k = c["num_hidden_layers"], c["num_local_experts"], c["num_experts_per_tok"]
    slots = int(a.budget * layers * experts)
    allocs = list(splits(slots, layers, experts, k, a.first_layer_all))
    print(f"budget {a.budget:.0%}: {slots} of {layers * experts} expert slots, {len(allocs)} splits across layers", flush=True)
    print("| task | all-resident ppl | oracle ppl | change | best split | rerouted assignments |")
    print("|---|---|---|---|---|---|")
    for t in TASKS:
        ids = tok.encode(open(os.path.join(model_dir, "eval", f"{t}.test.txt"), encoding="utf-8").read())[:a.tokens]
        wins = [ids[i:i + a.context] for i in range(0, len(ids), a.context) if len(ids[i:i + a.context]) > 1]
        scored = sum(len(w) - 1 for w in wins)
        base = sum(window_nll(m, w, None)[0] for w in wins)
        best = None
        for q in allocs:
            r = [window_nll(m, w, q) for w in wins]
            nll = sum(x[0] for x in r)
            if best is None or nll < best[0]:
                best = (nll, q, sum(x[1] for x in r))
        change = 100 * (math.exp((best[0] - base) / scored) - 1)
        print(f"| {t} | {math.exp(base / scored):.2f} | {math.exp(best[0] / scored):.2f} | {change:+.1f} % | "
              f"{best[1]} | {100 * best[2] / (k * layers * scored):.1f} % |", flush=True)


if __name__ == "__main__":
    main()
