#!/usr/bin/python3
"""Train tiny-mixtral (Mixtral architecture, 4 layers, 16 experts, top-2) on the five-domain
corpus tokenised by encode_corpus.js, then evaluate and export in Hugging Face format.

  OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 weights/scripts/train.py --minutes 65 \
      --corpus /work/corpus --out weights/tiny-mixtral

The learning-rate schedule (linear warm-up, cosine decay to 10%) is driven by the fraction of
the wall-clock budget used (or by --steps when given, for an exactly reproducible run).
"""
import os
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import argparse, json, math, random, sys, time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mixtral_ref import Mixtral, write_safetensors  # noqa: E402

DOMAINS = ["bible", "austen", "dictionary", "python", "c"]

CONFIG = {
    "architectures": ["MixtralForCausalLM"],
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 128,
    "initializer_range": 0.02,
    "intermediate_size": 256,
    "max_position_embeddings": 256,
    "model_type": "mixtral",
    "num_attention_heads": 4,
    "num_experts_per_tok": 2,
    "num_hidden_layers": 4,
    "num_key_value_heads": 2,
    "num_local_experts": 16,
    "output_router_logits": False,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0,
    "router_aux_loss_coef": 0.02,
    "router_jitter_noise": 0.0,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
    "transformers_version": "4.40.0",
    "use_cache": True,
    "vocab_size": 4096,
}


def load_bin(path):
    return np.fromfile(path, dtype="<u2").astype(np.int64)


def eval_windows(arr, T, max_windows):
    n = (len(arr) - 1) // T
    idx = np.linspace(0, n - 1, min(n, max_windows)).astype(int) if n > max_windows else np.arange(n)
    return [arr[i * T:i * T + T + 1] for i in idx]


@torch.no_grad()
def evaluate(model, val, T, max_windows, bs=16):
    model.eval()
    res = {}
    for d in DOMAINS:
        wins = eval_windows(val[d], T, max_windows)
        tot, n = 0.0, 0
        for i in range(0, len(wins), bs):
            b = torch.from_numpy(np.stack(wins[i:i + bs]))
            logits, _ = model(b[:, :-1])
            l = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                  b[:, 1:].reshape(-1), reduction="sum")
            tot += l.item()
            n += b[:, 1:].numel()
        res[d] = tot / n
    res["mean"] = sum(res[d] for d in DOMAINS) / len(DOMAINS)
    model.train()
    return res


def export(model, out):
    os.makedirs(out, exist_ok=True)
    write_safetensors(os.path.join(out, "model.safetensors"), model.hf_state())
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
        f.write("\n")
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 1, "eos_token_id": 2, "do_sample": False,
                   "max_new_tokens": 64, "transformers_version": "4.40.0"}, f, indent=2)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default="/work/corpus")
    ap.add_argument("--out", default="weights/tiny-mixtral")
    ap.add_argument("--minutes", type=float, default=65.0)
    ap.add_argument("--steps", type=int, default=0, help="fixed step count (overrides time schedule)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--aux", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--eval-every-min", type=float, default=6.0)
    ap.add_argument("--ckpt", default="/work/corpus/ckpt.pt")
    ap.add_argument("--log", default=None)
    a = ap.parse_args()

    torch.set_num_threads(2)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    log_path = a.log or os.path.join(a.out, "train_log.txt")
    os.makedirs(a.out, exist_ok=True)
    logf = open(log_path, "w")

    def log(s):
        line = time.strftime("%H:%M:%S ", time.gmtime()) + s
        print(line, flush=True)
        logf.write(line + "\n")
        logf.flush()

    train = {d: load_bin(os.path.join(a.corpus, d, "train.bin")) for d in DOMAINS}
    val = {d: load_bin(os.path.join(a.corpus, d, "valid.bin")) for d in DOMAINS}
    c = dict(CONFIG)
    c["router_aux_loss_coef"] = a.aux
    CONFIG["router_aux_loss_coef"] = a.aux
    model = Mixtral(c)
    model.init_weights(std=0.02, seed=a.seed)
    n_params = sum(p.numel() for p in model.parameters())
    E, k = c["num_local_experts"], c["num_experts_per_tok"]
    per_expert = 3 * c["hidden_size"] * c["intermediate_size"]
    n_active = n_params - c["num_hidden_layers"] * (E - k) * per_expert
    log(f"args {vars(a)}")
    log(f"torch {torch.__version__}, threads {torch.get_num_threads()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    log(f"params total {n_params:,}, active per token {n_active:,} (embedding+lm_head {2 * c['vocab_size'] * c['hidden_size']:,})")
    log("train tokens per domain " + ", ".join(f"{d} {len(train[d]):,}" for d in DOMAINS))

    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (decay if p.dim() >= 2 and "embed_tokens" not in n else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)

    T, B = a.ctx, a.batch
    budget = a.minutes * 60.0
    t0 = time.time()
    last_eval = t0
    step, tokens = 0, 0
    dom_tokens = {d: 0 for d in DOMAINS}
    run_loss, run_aux, run_n = 0.0, 0.0, 0
    t_log, tok_log = time.time(), 0
    best_val = float("inf")

    def progress():
        if a.steps:
            return step / a.steps
        return (time.time() - t0) / budget

    while True:
        p = progress()
        if p >= 1.0:
            break
        if step < a.warmup:
            lr = a.lr * (step + 1) / a.warmup
        else:
            lr = a.lr * (a.min_lr_frac + (1 - a.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))
        for g in opt.param_groups:
            g["lr"] = lr
        rows = []
        for i in range(B):
            d = DOMAINS[(step * B + i) % len(DOMAINS)]  # domains mixed evenly
            arr = train[d]
            s = int(rng.integers(0, len(arr) - T - 1))
            rows.append(arr[s:s + T + 1])
            dom_tokens[d] += T
        b = torch.from_numpy(np.stack(rows))
        logits, aux = model(b[:, :-1])
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), b[:, 1:].reshape(-1))
        loss = ce + a.aux * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens += B * T
        tok_log += B * T
        run_loss += ce.item(); run_aux += aux.item(); run_n += 1
        if step % a.log_every == 0:
            now = time.time()
            log(f"step {step} elapsed {now - t0:7.1f}s tokens {tokens:,} tok/s {tok_log / (now - t_log):6.0f} "
                f"lr {lr:.2e} loss {run_loss / run_n:.4f} aux {run_aux / run_n:.4f}")
            run_loss, run_aux, run_n = 0.0, 0.0, 0
            t_log, tok_log = now, 0
        if time.time() - last_eval > a.eval_every_min * 60:
            te = time.time()
            r = evaluate(model, val, T, 48)
            if r["mean"] < best_val:
                best_val = r["mean"]
                torch.save({"model": model.state_dict(), "step": step, "tokens": tokens, "val": r},
                           a.ckpt.replace(".pt", "_best.pt"))
            log("val(48 windows/domain) " + " ".join(f"{d} {r[d]:.4f}" for d in DOMAINS) + f" mean {r['mean']:.4f}"
                f" [eval {time.time() - te:.1f}s]")
            torch.save({"model": model.state_dict(), "step": step, "tokens": tokens}, a.ckpt)
            last_eval = time.time()
            t_log += time.time() - te  # do not count eval time in tok/s

    train_time = time.time() - t0
    log(f"training done: {step} steps, {tokens:,} tokens, {train_time:.1f}s wall, "
        f"{tokens / train_time:.0f} tok/s overall (including periodic evals)")
    log("tokens per domain " + ", ".join(f"{d} {dom_tokens[d]:,}" for d in DOMAINS))
    torch.save({"model": model.state_dict(), "step": step, "tokens": tokens}, a.ckpt)
    export(model, a.out)
    log(f"exported to {a.out}")
    te = time.time()
    r48 = evaluate(model, val, T, 48)
    log("final val(48 windows/domain) " + " ".join(f"{d} {r48[d]:.4f}" for d in DOMAINS) + f" mean {r48['mean']:.4f}"
        f" (best periodic mean {best_val:.4f})")
    r = evaluate(model, val, T, 200)
    log("FINAL val (up to 200 windows x 256 tokens per domain) " + " ".join(f"{d} {r[d]:.4f}" for d in DOMAINS)
        + f" mean {r['mean']:.4f} [eval {time.time() - te:.1f}s]")
    json.dump({"steps": step, "tokens": tokens, "train_wall_s": round(train_time, 1),
               "tokens_per_s": round(tokens / train_time, 1), "tokens_per_domain": dom_tokens,
               "val_loss_nats_per_token": r, "params_total": n_params, "params_active": n_active,
               "args": vars(a)},
              open(os.path.join(a.out, "train_summary.json"), "w"), indent=1)
    log("done")


if __name__ == "__main__":
    main()
