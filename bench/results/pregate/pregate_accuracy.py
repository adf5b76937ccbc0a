#!/usr/bin/env python3
"""Pre-gate lookahead accuracy, hit rate and bytes copied over the first evaluation prompts.

Runs `emoe generate` on the first PER prompts of each task (their max_tokens, greedy) with
--stats and sums the per-layer counters. Extra arguments go to every `generate` call, e.g.
  python3 bench/results/pregate/pregate_accuracy.py --pregate --pregate-width 4 --pregate-weights bench/results/pregate/pregate.safetensors
Environment: EMOE (the emoe executable; default the Release build), PER (prompts per task, 2),
BUDGET (--expert-memory, 50%).
"""
import json, os, subprocess, sys, tempfile

root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
exe = os.environ.get("EMOE", os.path.join(root, "src", "eMoE.Cli", "bin", "Release", "net10.0", "eMoE.Cli"))
per = int(os.environ.get("PER", "2"))
budget = os.environ.get("BUDGET", "50%")
covered, actual = {}, {}
hits = requests = copied = 0
stats = os.path.join(tempfile.mkdtemp(), "stats.json")
for task in ["bible", "austen", "dictionary", "python", "c"]:
    with open(os.path.join(root, "weights", "tiny-mixtral", "eval", f"{task}.jsonl")) as f:
        prompts = [json.loads(line) for line in f.read().splitlines()[:per]]
    for p in prompts:
        subprocess.run([exe, "generate", "--prompt", p["prompt"], "--max-tokens", str(p["max_tokens"]), "--expert-memory", budget,
                        "--stats", stats] + sys.argv[1:], capture_output=True, check=True)
        with open(stats) as f:
            s = json.load(f)
        hits += s["overall"]["hits"]
        requests += s["overall"]["requests"]
        copied += s["overall"]["bytes_copied"]
        for i, layer in enumerate(s["layers"]):
            covered[i] = covered.get(i, 0) + layer["lookahead_covered"]
            actual[i] = actual.get(i, 0) + layer["lookahead_actual"]
layers = " ".join(f"layer {i}: {covered[i] / actual[i]:.1%}" for i in actual if actual[i])
accuracy = f"all: {sum(covered.values()) / sum(actual.values()):.1%}" if sum(actual.values()) else "no pre-gate"
print(f"{layers} {accuracy} | hit rate {hits / requests:.1%}, copied {copied / 2**20:.0f} MiB")
