#!/usr/bin/python3
"""Summarises a bench/peer/run.sh run: reads RAW/NAME.ENGINE.ROUND.{json,err,load} (each engine's JSON, /usr/bin/time -v
output and /proc/loadavg before and after) and RAW/commands.txt, and writes OUT/results.json and OUT/results.md:
per model and engine, prefill and decode tok/s (median over rounds, min-max), peak RSS, checkpoint bytes, the ratios
eMoE / llama.cpp, and whether the targets are met. Called by run.sh; standard library only.
"""
import argparse
import glob
import json
import os
import re
import statistics
import subprocess
import time

ENGINES = [("llama.cpp", "llama.cpp"), ("emoe", "eMoE")]
MODELS = {
    "tiny-mixtral": "shipped weights/tiny-mixtral (Mixtral, 4 layers, hidden 128, 16 experts top-2, F32)",
    "mixtral-shaped": "Mixtral-shaped random BF16 (8 layers, hidden 1024, 8 experts of 3584 top-2, 16/4 heads)",
}
GGUF_TYPE = {"tiny-mixtral": "F32", "mixtral-shaped": "BF16"}
DECODE_TARGET, PREFILL_TARGET = 0.8, 0.3
MIB = 1 << 20


def sh(*args, cwd=None):
    try:
        return subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def time_v(path):
    text = open(path).read()
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    seconds = None
    if wall:
        parts = [float(p) for p in wall.group(1).split(":")]
        seconds = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    return (int(rss.group(1)) * 1024 if rss else None), seconds


def spread(values):
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2), "max": round(max(values), 2),
            "rounds": [round(v, 2) for v in values]}


def dir_bytes(d):
    return sum(os.path.getsize(f) for f in glob.glob(os.path.join(d, "*.safetensors")))


def machine(raw):
    cpu = ""
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = next((int(l.split()[1]) * 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal")), None)
    loads = []
    for f in glob.glob(os.path.join(raw, "*.load")):
        for line in open(f):
            loads.append(float(line.split()[0]))
    return {"cpu": cpu, "cpus": os.cpu_count(), "memory_bytes": mem,
            "load_average_1min": {"min": min(loads), "max": max(loads)} if loads else None,
            "dotnet": sh("dotnet", "--version"), "kernel": sh("uname", "-r")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--wall-seconds", type=int, required=True)
    ap.add_argument("--gguf", action="append", default=[])
    ap.add_argument("--checkpoint", action="append", default=[])
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--quick", type=int, default=0)
    a = ap.parse_args()
    ggufs = dict(x.split("=", 1) for x in a.gguf)
    checkpoints = dict(x.split("=", 1) for x in a.checkpoint)

    # The commit the runs measured, as run.sh recorded it before the first run.
    meta = json.load(open(os.path.join(a.raw, "run.json")))
    commit, dirty = meta["commit"], meta["dirty"]
    subject = sh("git", "log", "-1", "--format=%s", commit, cwd=a.repo)
    ended = max(os.path.getmtime(f) for f in glob.glob(os.path.join(a.raw, "*.load")))
    nlc = os.path.join(os.path.dirname(a.raw), "node", "node_modules", "node-llama-cpp", "package.json")
    nlc_version = json.load(open(nlc)).get("version") if os.path.exists(nlc) else None

    models, settings = {}, None
    for name in MODELS:
        engines = {}
        for key, label in ENGINES:
            runs = []
            for r in range(1, a.rounds + 1):
                base = os.path.join(a.raw, f"{name}.{key}.{r}")
                if not os.path.exists(base + ".json"):
                    continue
                out = json.loads(open(base + ".json").read().strip().splitlines()[-1])
                rss, wall = time_v(base + ".err")
                out["time_v_max_rss_bytes"], out["time_v_wall_seconds"] = rss, wall
                runs.append(out)
            if not runs:
                continue
            settings = settings or {k: runs[0][k] for k in ("n_prompt", "n_gen", "threads", "reps")}
            rss = [x["time_v_max_rss_bytes"] for x in runs]
            engines[label] = {
                "prefill_tok_s": spread([x["prefill_tok_s"] for x in runs]),
                "decode_tok_s": spread([x["decode_tok_s"] for x in runs]),
                "peak_rss_bytes": {"max": max(rss), "median": int(statistics.median(rss)), "rounds": rss},
                "first_generated": runs[0].get("first_generated"),
                "runs": runs,
            }
        if len(engines) < 2:
            continue
        ll, em = engines["llama.cpp"], engines["eMoE"]
        ckpt = dir_bytes(checkpoints[name])
        rss_limit = int(ckpt * 1.1 + 400 * MIB)
        pf = em["prefill_tok_s"]["median"] / ll["prefill_tok_s"]["median"]
        dc = em["decode_tok_s"]["median"] / ll["decode_tok_s"]["median"]
        paired = {k: [e / l for e, l in zip(em[k]["rounds"], ll[k]["rounds"])] for k in ("prefill_tok_s", "decode_tok_s")}
        models[name] = {
            "description": MODELS[name],
            "checkpoint": checkpoints[name], "checkpoint_bytes": ckpt,
            "gguf": ggufs.get(name), "gguf_type": GGUF_TYPE[name],
            "gguf_bytes": os.path.getsize(ggufs[name]) if name in ggufs and os.path.exists(ggufs[name]) else None,
            "engines": engines,
            "ratios": {"prefill": round(pf, 3), "decode": round(dc, 3),
                       "prefill_per_round": [round(x, 3) for x in paired["prefill_tok_s"]],
                       "decode_per_round": [round(x, 3) for x in paired["decode_tok_s"]]},
            "same_first_generated": ll["first_generated"] == em["first_generated"],
            "targets": {
                "decode_at_least_0.8x": dc >= DECODE_TARGET,
                "prefill_at_least_0.3x": pf >= PREFILL_TARGET,
                "rss_limit_bytes": rss_limit,
                "rss_within_limit": em["peak_rss_bytes"]["max"] <= rss_limit,
            },
        }

    commands = []
    for line in open(os.path.join(a.raw, "commands.txt")):
        line = line.strip()
        if line and line not in commands:
            commands.append(line)
    result = {
        "commit": commit, "commit_subject": subject, "dirty": dirty, "quick": bool(a.quick),
        "started_utc": meta["started_utc"], "ended_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ended)),
        "wall_seconds": a.wall_seconds,
        "settings": dict(settings or {}, rounds=a.rounds), "node_llama_cpp": nlc_version,
        "machine": machine(a.raw), "commands": commands, "models": models,
    }
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(markdown(result))


def mib(b):
    return f"{b / MIB:,.0f} MiB"


def markdown(r):
    s = r["settings"]
    m = r["machine"]
    load = m["load_average_1min"]
    out = []
    w = out.append
    w("# eMoE vs llama.cpp: same weights, same threads (host path)\n")
    w(f"Snapshot of commit `{r['commit'][:12]}`{' (with uncommitted changes)' if r['dirty'] else ''} ({r['commit_subject']}), "
      f"measured {r['started_utc']} to {r['ended_utc'][11:]}{' — QUICK smoke run, not a measurement' if r['quick'] else ''}. "
      f"The host path is still being optimised: these numbers are a snapshot of that commit.\n")
    w(f"Settings: prompt {s.get('n_prompt')} tokens, {s.get('n_gen')} decode steps, {s.get('threads')} threads, "
      f"{s.get('reps')} timed reps after a warm-up in each invocation (each reports its median), "
      f"{s.get('rounds')} rounds per model run alternately (llama.cpp, eMoE, llama.cpp, eMoE, ...). "
      "Table: median over rounds of each invocation's median, [min-max over rounds]. Peak RSS: `/usr/bin/time -v` "
      "\"Maximum resident set size\", the largest over rounds (the whole process: load, warm-up and runs). "
      f"Total wall time of the run: {r['wall_seconds'] // 60} min {r['wall_seconds'] % 60} s.\n")
    w(f"Machine: {m['cpus']} vCPUs ({m['cpu']}), {m['memory_bytes'] / (1 << 30):.1f} GiB, Linux {m['kernel']}, .NET SDK {m['dotnet']}, "
      f"llama.cpp from node-llama-cpp {r['node_llama_cpp']} (prebuilt CPU libllama, persistent ggml thread pool). "
      + (f"1-minute load average during the run: {load['min']:.1f}-{load['max']:.1f} "
         f"(the machine was shared: absolute numbers are noisy; compare the engines within a round).\n" if load else "\n"))
    if load and load["min"] > 2 * (m["cpus"] or 1):
        w(f"**The machine was oversubscribed throughout** (load {load['min']:.0f}-{load['max']:.0f} on {m['cpus']} vCPUs): engines whose "
          "threads meet at spin-wait barriers after every operation (llama.cpp's ggml pool) lose far more than their share "
          "when one thread is descheduled, so these ratios say little about an idle machine; see bench/README.md.\n")
    w("| model | engine | weights | prefill tok/s | decode tok/s | peak RSS | checkpoint |")
    w("|---|---|---|---:|---:|---:|---:|")
    for name, mo in r["models"].items():
        for label, e in mo["engines"].items():
            p, d = e["prefill_tok_s"], e["decode_tok_s"]
            weights = f"GGUF {mo['gguf_type']}" if label == "llama.cpp" else f"safetensors {mo['gguf_type']}"
            w(f"| {name} | {label} | {weights} | {p['median']:,.1f} [{p['min']:,.1f}-{p['max']:,.1f}] | "
              f"{d['median']:,.1f} [{d['min']:,.1f}-{d['max']:,.1f}] | {mib(e['peak_rss_bytes']['max'])} | {mib(mo['checkpoint_bytes'])} |")
    w("")
    w("| model | prefill eMoE / llama.cpp | decode eMoE / llama.cpp | per-round prefill | per-round decode | "
      "prefill >= 0.3x | decode >= 0.8x | eMoE peak RSS <= 1.1 x checkpoint + 400 MiB | same first 8 generated ids |")
    w("|---|---:|---:|---|---|---|---|---|---|")
    yn = lambda b: "yes" if b else "**no**"
    for name, mo in r["models"].items():
        ra, t = mo["ratios"], mo["targets"]
        em_rss = mo["engines"]["eMoE"]["peak_rss_bytes"]["max"]
        w(f"| {name} | {ra['prefill']:.2f}x | {ra['decode']:.2f}x | {', '.join(f'{x:.2f}' for x in ra['prefill_per_round'])} | "
          f"{', '.join(f'{x:.2f}' for x in ra['decode_per_round'])} | {yn(t['prefill_at_least_0.3x'])} | {yn(t['decode_at_least_0.8x'])} | "
          f"{yn(t['rss_within_limit'])} ({mib(em_rss)} vs {mib(t['rss_limit_bytes'])}) | {'yes' if mo['same_first_generated'] else 'no'} |")
    w("")
    w("Models: " + "; ".join(f"**{n}**: {mo['description']}, {mo['checkpoint_bytes']:,} bytes of safetensors"
                             f" (GGUF {mo['gguf_type']} {mo['gguf_bytes'] or 0:,} bytes)" for n, mo in r["models"].items()) + ".\n")
    w("What each side measures (the same thing): prefill = one forward call over the prompt's ids (the same fixed "
      "pseudo-random ids on both: llama_speed.py's LCG over the vocabulary), tok/s = prompt tokens / time to the first "
      "token; decode = that many single-token steps, each on the greedy choice of the step before, end of sequence "
      "ignored, tok/s = steps / time. Differences: llama.cpp keeps its KV cache in F16 with flash attention auto "
      "(its defaults), eMoE in F32; llama.cpp reads the GGUF copy, eMoE the safetensors in place.\n")
    w("Commands (in this order, each round; `/usr/bin/time -v` around each):\n")
    w("```")
    out.extend(r["commands"])
    w("```")
    w("")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
