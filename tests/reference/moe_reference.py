#!/usr/bin/env python3
"""Independent float32 reference for Hugging Face Mixture-of-Experts checkpoints.

Written from the semantics of the Hugging Face `transformers` modeling code
(MixtralForCausalLM, Qwen3MoeForCausalLM, OlmoeForCausalLM), NOT from the eMoE
C# engine.  It is used to produce the golden files in tests/golden/.

Requirements: Debian's python3-torch (1.13) and python3-numpy, i.e. run it with
/usr/bin/python3 (not the pyenv python3 that may be first on PATH).  No
`transformers` and no `safetensors` package is needed: safetensors files are
parsed here with numpy.

Usage (from the repository root):

    # logits of the last position + greedy continuation for some ids
    OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 tests/reference/moe_reference.py \
        tests/fixtures/models/mixtral-f32 --ids 1 5 9 42 --greedy 16

    # perplexity of a list of ids with windows of 64 tokens
    OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 tests/reference/moe_reference.py \
        tests/fixtures/models/mixtral-f32 --ids 1 5 9 42 7 8 --ppl-context 64

    # self-checks (window counting, cache-free greedy consistency, finiteness,
    # causality, agreement with a float64 token-by-token KV-cache formulation)
    OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 tests/reference/moe_reference.py \
        tests/fixtures/models/mixtral-f32 --self-test

As a library: `m = load_model(dir)`, `m.logits(ids)` -> float32 tensor
[len(ids), vocab]; `greedy(m, ids, n)`, `perplexity(m, ids, context)`.

Conventions (all computation in float32, weights widened from F16/BF16 to F32):
  * RMSNorm:  w * (x * rsqrt(mean(x^2) + eps))
  * RoPE:     rotate_half, non-interleaved (pairs i, i + d/2),
              inv_freq = 1 / theta^(arange(0, d, 2) / d), positions 0..n-1
  * attention: GQA (kv heads repeated), causal, softmax scale 1/sqrt(head_dim)
  * router:   softmax (float32) over all experts -> top-k -> renormalise the
              top-k weights to sum 1 (Mixtral: always; Qwen3-MoE / OLMoE: only
              if config.norm_topk_prob)
  * expert:   down(silu(gate x) * up x)   (Mixtral: w2(silu(w1 x) * w3 x))
  * qwen3_moe: q_norm / k_norm = RMSNorm over head_dim, per head, before RoPE
  * olmoe:    q_norm / k_norm = RMSNorm over the whole projected q / k vector
              (before splitting into heads), before RoPE; clip_qkv if set
  * perplexity: ids cut into consecutive windows of `context` tokens (last may
              be shorter); in each window every token after the first is
              scored given the earlier tokens of that window; log-softmax and
              NLL accumulated in float64; ppl = exp(mean NLL).
"""
import argparse
import json
import math
import os
import struct
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

# --------------------------------------------------------------------------
# safetensors (parsed by hand)
# --------------------------------------------------------------------------

_NP_DTYPES = {
    "F32": np.float32,
    "F16": np.float16,
    "F64": np.float64,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def read_safetensors(path):
    """Return ({name: float32 numpy array}, {name: dtype string})."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    base = 8 + n
    tensors, dtypes = {}, {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = info["dtype"]
        shape = info["shape"]
        begin, end = info["data_offsets"]
        raw = data[base + begin: base + end]
        if dt == "BF16":
            u16 = np.frombuffer(raw, dtype="<u2")
            arr = (u16.astype(np.uint32) << 16).view(np.float32)
        elif dt in _NP_DTYPES:
            arr = np.frombuffer(raw, dtype=np.dtype(_NP_DTYPES[dt]).newbyteorder("<"))
        else:
            raise ValueError(f"{path}: unsupported dtype {dt} for {name}")
        count = int(np.prod(shape)) if shape else 1
        if arr.size != count:
            raise ValueError(f"{path}: {name} has {arr.size} elements, shape {shape}")
        tensors[name] = arr.reshape(shape).astype(np.float32)
        dtypes[name] = dt
    return tensors, dtypes


def load_checkpoint(model_dir):
    """All tensors of a HF model directory (single file or sharded)."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    single = os.path.join(model_dir, "model.safetensors")
    tensors, dtypes = {}, {}
    if os.path.exists(index):
        with open(index) as f:
            wm = json.load(f)["weight_map"]
        for shard in sorted(set(wm.values())):
            t, d = read_safetensors(os.path.join(model_dir, shard))
            tensors.update(t)
            dtypes.update(d)
        missing = set(wm) - set(tensors)
        if missing:
            raise ValueError(f"index names tensors absent from shards: {sorted(missing)[:5]}")
    elif os.path.exists(single):
        tensors, dtypes = read_safetensors(single)
    else:
        raise FileNotFoundError(f"no model.safetensors(.index.json) in {model_dir}")
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}, dtypes


# --------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------


def rms_norm(x, w, eps):
    x = x.float()
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


def rope_cos_sin(n, head_dim, theta, rotary_dim=None):
    d = rotary_dim or head_dim
    inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    t = torch.arange(n, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)  # [n, d/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [n, d]
    return emb.cos(), emb.sin()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def apply_rope(x, cos, sin):
    # x: [heads, n, head_dim]; cos/sin: [n, head_dim]
    return x * cos + rotate_half(x) * sin


def silu(x):
    return x * torch.sigmoid(x)


ACTS = {"silu": silu, "swish": silu}


class MoEModel:
    def __init__(self, model_dir):
        self.dir = model_dir
        with open(os.path.join(model_dir, "config.json")) as f:
            self.cfg = json.load(f)
        self.w, self.dtypes = load_checkpoint(model_dir)
        c = self.cfg
        self.arch = c["model_type"]
        if self.arch not in ("mixtral", "qwen3_moe", "olmoe"):
            raise ValueError(f"unsupported model_type {self.arch}")
        self.hidden = c["hidden_size"]
        self.n_layers = c["num_hidden_layers"]
        self.n_heads = c["num_attention_heads"]
        self.n_kv = c.get("num_key_value_heads") or self.n_heads
        hd = c.get("head_dim")
        self.head_dim = hd if hd else self.hidden // self.n_heads
        self.eps = c.get("rms_norm_eps", 1e-6 if self.arch == "qwen3_moe" else 1e-5)
        self.theta = c.get("rope_theta", 10000.0)
        rs = c.get("rope_scaling")
        if rs not in (None, {}) and (rs.get("rope_type", rs.get("type")) not in (None, "default")):
            raise ValueError(f"rope_scaling {rs} not supported by the reference")
        self.vocab = c["vocab_size"]
        if self.arch == "mixtral":
            self.n_experts = c["num_local_experts"]
        else:
            self.n_experts = c["num_experts"]
        self.top_k = c["num_experts_per_tok"]
        if self.arch == "mixtral":
            self.norm_topk = True
        else:
            self.norm_topk = bool(c.get("norm_topk_prob", False))
        self.act = ACTS[c.get("hidden_act", "silu")]
        self.clip_qkv = c.get("clip_qkv") if self.arch == "olmoe" else None
        # sliding window (Mixtral / Qwen3-MoE with use_sliding_window)
        sw = None
        if self.arch == "mixtral":
            sw = c.get("sliding_window")
        elif self.arch == "qwen3_moe" and c.get("use_sliding_window", False):
            sw = c.get("sliding_window")
        self.sliding_window = sw
        if "model.embed_tokens.weight" not in self.w:
            raise ValueError("missing model.embed_tokens.weight")
        if "lm_head.weight" in self.w:
            self.lm_head = self.w["lm_head.weight"]
        elif c.get("tie_word_embeddings", False):
            self.lm_head = self.w["model.embed_tokens.weight"]
        else:
            raise ValueError("no lm_head.weight and tie_word_embeddings is false")
        self.weight_dtype = sorted(set(self.dtypes.values()))

    # -- helpers -----------------------------------------------------------
    def _lin(self, name, x):
        y = x @ self.w[name + ".weight"].t()
        b = self.w.get(name + ".bias")
        if b is not None:
            y = y + b
        return y

    def _is_sparse(self, layer):
        if self.arch != "qwen3_moe":
            return True
        c = self.cfg
        mlp_only = c.get("mlp_only_layers") or []
        step = c.get("decoder_sparse_step", 1)
        return (layer not in mlp_only) and self.n_experts > 0 and (layer + 1) % step == 0

    def _attention(self, L, x, cos, sin, stats):
        p = f"model.layers.{L}.self_attn."
        n = x.shape[0]
        q = self._lin(p + "q_proj", x)
        k = self._lin(p + "k_proj", x)
        v = self._lin(p + "v_proj", x)
        if self.arch == "olmoe":
            q = rms_norm(q, self.w[p + "q_norm.weight"], self.eps)
            k = rms_norm(k, self.w[p + "k_norm.weight"], self.eps)
            if self.clip_qkv is not None:
                q = q.clamp(-self.clip_qkv, self.clip_qkv)
                k = k.clamp(-self.clip_qkv, self.clip_qkv)
                v = v.clamp(-self.clip_qkv, self.clip_qkv)
        q = q.view(n, self.n_heads, self.head_dim)
        k = k.view(n, self.n_kv, self.head_dim)
        v = v.view(n, self.n_kv, self.head_dim)
        if self.arch == "qwen3_moe":
            q = rms_norm(q, self.w[p + "q_norm.weight"], self.eps)
            k = rms_norm(k, self.w[p + "k_norm.weight"], self.eps)
        q = q.transpose(0, 1)  # [H, n, d]
        k = k.transpose(0, 1)
        v = v.transpose(0, 1)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        rep = self.n_heads // self.n_kv
        k = k.repeat_interleave(rep, dim=0)  # head h uses kv head h // rep
        v = v.repeat_interleave(rep, dim=0)
        scores = (q @ k.transpose(1, 2)) * (self.head_dim ** -0.5)  # [H, n, n]
        i = torch.arange(n).view(-1, 1)
        j = torch.arange(n).view(1, -1)
        allowed = j <= i
        if self.sliding_window is not None:
            allowed = allowed & ((i - j) < self.sliding_window)
        scores = scores.masked_fill(~allowed, float("-inf"))
        probs = torch.softmax(scores.float(), dim=-1)
        out = (probs @ v).transpose(0, 1).reshape(n, self.n_heads * self.head_dim)
        return self._lin(p + "o_proj", out)

    def _expert(self, prefix, x):
        if self.arch == "mixtral":
            return self._lin(prefix + "w2", self.act(self._lin(prefix + "w1", x)) * self._lin(prefix + "w3", x))
        return self._lin(prefix + "down_proj", self.act(self._lin(prefix + "gate_proj", x)) * self._lin(prefix + "up_proj", x))

    def _moe(self, L, x, stats):
        if self.arch == "mixtral":
            p = f"model.layers.{L}.block_sparse_moe."
        else:
            p = f"model.layers.{L}.mlp."
        router_logits = self._lin(p + "gate", x)  # [n, E]
        probs = torch.softmax(router_logits.float(), dim=-1)
        topw, topi = torch.topk(probs, self.top_k, dim=-1)
        if stats is not None:
            # gap between the k-th and (k+1)-th router probability: small gaps
            # mean expert selection could flip under float rounding.
            srt = torch.sort(probs, dim=-1, descending=True).values
            if self.top_k < self.n_experts:
                gap = (srt[:, self.top_k - 1] - srt[:, self.top_k]).min().item()
                stats["router_min_gap"] = min(stats.get("router_min_gap", math.inf), gap)
        if self.norm_topk:
            topw = topw / topw.sum(dim=-1, keepdim=True)
        out = torch.zeros_like(x)
        for e in range(self.n_experts):
            rows, slot = torch.nonzero(topi == e, as_tuple=True)
            if rows.numel() == 0:
                continue
            y = self._expert(p + f"experts.{e}.", x[rows])
            out.index_add_(0, rows, y * topw[rows, slot].unsqueeze(-1))
        return out

    def _dense_mlp(self, L, x):
        return self._expert(f"model.layers.{L}.mlp.", x)

    # -- forward -----------------------------------------------------------
    def logits(self, ids, stats=None):
        """float32 logits [len(ids), vocab] for a token id sequence (positions 0..n-1)."""
        ids = torch.as_tensor(list(ids), dtype=torch.long)
        n = ids.shape[0]
        with torch.no_grad():
            h = self.w["model.embed_tokens.weight"][ids].float()
            cos, sin = rope_cos_sin(n, self.head_dim, self.theta)
            for L in range(self.n_layers):
                p = f"model.layers.{L}."
                r = h
                x = rms_norm(h, self.w[p + "input_layernorm.weight"], self.eps)
                h = r + self._attention(L, x, cos, sin, stats)
                r = h
                x = rms_norm(h, self.w[p + "post_attention_layernorm.weight"], self.eps)
                if self._is_sparse(L):
                    h = r + self._moe(L, x, stats)
                else:
                    h = r + self._dense_mlp(L, x)
            h = rms_norm(h, self.w["model.norm.weight"], self.eps)
            return (h @ self.lm_head.t()).float()


def load_model(model_dir):
    return MoEModel(model_dir)


# --------------------------------------------------------------------------
# greedy + perplexity
# --------------------------------------------------------------------------


def top2_margin(row):
    v = torch.topk(row.double(), 2).values
    return (v[0] - v[1]).item()


def greedy(model, ids, n_new, stats=None):
    """Greedy (argmax) continuation, no EOS stopping, recomputing the whole
    sequence every step (no KV cache).  Returns (new_ids, per-step margins)."""
    seq = list(ids)
    out, margins = [], []
    for _ in range(n_new):
        lg = model.logits(seq, stats)[-1]
        nxt = int(torch.argmax(lg).item())
        margins.append(top2_margin(lg))
        out.append(nxt)
        seq.append(nxt)
    return out, margins


def perplexity_windows(n_ids, context):
    return [(s, min(s + context, n_ids)) for s in range(0, n_ids, context)]


def perplexity(model, ids, context):
    """Returns dict(tokens, nll, perplexity) with the windowing convention above."""
    ids = list(ids)
    total = 0.0
    count = 0
    for s, e in perplexity_windows(len(ids), context):
        win = ids[s:e]
        if len(win) < 2:
            continue
        lg = model.logits(win).double()  # [w, V]
        logp = torch.log_softmax(lg, dim=-1)
        tgt = torch.tensor(win[1:], dtype=torch.long)
        nll = -logp[:-1].gather(1, tgt.view(-1, 1)).squeeze(1)
        total += float(nll.sum().item())
        count += len(win) - 1
    mean = total / count if count else float("nan")
    return {"tokens": count, "nll": mean, "perplexity": math.exp(mean) if count else float("nan")}


# --------------------------------------------------------------------------
# second formulation, for the self-test only: numpy float64, one token at a
# time with a KV cache, loops over heads / experts written out separately
# --------------------------------------------------------------------------


def incremental_logits(model, ids):
    m = model
    W = {k: v.numpy().astype(np.float64) for k, v in m.w.items()}
    lm = m.lm_head.numpy().astype(np.float64)
    d = m.head_dim
    half = d // 2
    inv = np.array([1.0 / (m.theta ** (2 * i / d)) for i in range(half)])

    def rms(x, w):
        return w * x / np.sqrt(np.mean(x * x) + m.eps)

    def rope(v, pos):  # v: [d]
        a, b = v[:half], v[half:]
        c, s = np.cos(pos * inv), np.sin(pos * inv)
        return np.concatenate([a * c - b * s, b * c + a * s])

    def lin(name, x):
        y = W[name + ".weight"] @ x
        if name + ".bias" in W:
            y = y + W[name + ".bias"]
        return y

    def expert(p, x):
        if m.arch == "mixtral":
            g, u, dn = "w1", "w3", "w2"
        else:
            g, u, dn = "gate_proj", "up_proj", "down_proj"
        a = lin(p + g, x)
        return lin(p + dn, a / (1 + np.exp(-a)) * lin(p + u, x))

    K = [[] for _ in range(m.n_layers)]
    V = [[] for _ in range(m.n_layers)]
    out = []
    for pos, t in enumerate(ids):
        h = W["model.embed_tokens.weight"][t].copy()
        for L in range(m.n_layers):
            p = f"model.layers.{L}."
            x = rms(h, W[p + "input_layernorm.weight"])
            q, k, v = lin(p + "self_attn.q_proj", x), lin(p + "self_attn.k_proj", x), lin(p + "self_attn.v_proj", x)
            if m.arch == "olmoe":
                q, k = rms(q, W[p + "self_attn.q_norm.weight"]), rms(k, W[p + "self_attn.k_norm.weight"])
                if m.clip_qkv is not None:
                    q, k, v = (np.clip(z, -m.clip_qkv, m.clip_qkv) for z in (q, k, v))
            qh = [q[i * d:(i + 1) * d] for i in range(m.n_heads)]
            kh = [k[i * d:(i + 1) * d] for i in range(m.n_kv)]
            vh = [v[i * d:(i + 1) * d] for i in range(m.n_kv)]
            if m.arch == "qwen3_moe":
                qh = [rms(z, W[p + "self_attn.q_norm.weight"]) for z in qh]
                kh = [rms(z, W[p + "self_attn.k_norm.weight"]) for z in kh]
            qh = [rope(z, pos) for z in qh]
            kh = [rope(z, pos) for z in kh]
            K[L].append(kh)
            V[L].append(vh)
            heads = []
            group = m.n_heads // m.n_kv
            for i in range(m.n_heads):
                j = i // group
                lo = 0 if m.sliding_window is None else max(0, pos - m.sliding_window + 1)
                sc = np.array([qh[i] @ K[L][s][j] for s in range(lo, pos + 1)]) / math.sqrt(d)
                w = np.exp(sc - sc.max())
                w /= w.sum()
                heads.append(sum(w[s - lo] * V[L][s][j] for s in range(lo, pos + 1)))
            h = h + lin(p + "self_attn.o_proj", np.concatenate(heads))
            x = rms(h, W[p + "post_attention_layernorm.weight"])
            if m._is_sparse(L):
                mp = p + ("block_sparse_moe." if m.arch == "mixtral" else "mlp.")
                r = lin(mp + "gate", x)
                pr = np.exp(r - r.max())
                pr /= pr.sum()
                sel = sorted(range(m.n_experts), key=lambda e: -pr[e])[:m.top_k]
                tot = sum(pr[e] for e in sel) if m.norm_topk else 1.0
                y = sum(pr[e] / tot * expert(mp + f"experts.{e}.", x) for e in sel)
            else:
                y = expert(p + "mlp.", x)
            h = h + y
        out.append(lm @ rms(h, W["model.norm.weight"]))
    return np.stack(out)


# --------------------------------------------------------------------------
# self-test
# --------------------------------------------------------------------------


def self_test(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    V = model.vocab
    ok = True
    # 1. windows counted right: (n-1) per full window, (r-1) for a tail of r>=1
    for n, c in [(400, 64), (128, 64), (129, 64), (63, 64), (1, 64), (130, 64)]:
        w = perplexity_windows(n, c)
        expect = (n // c) * (c - 1) + max(n % c - 1, 0)
        got = sum(max(e - s - 1, 0) for s, e in w)
        assert got == expect and w[-1][1] == n, (n, c, got, expect)
    # 2. logits finite; causal: prefix logits don't depend on later tokens
    ids = [1] + torch.randint(3, V, (19,), generator=g).tolist()
    full = model.logits(ids)
    assert torch.isfinite(full).all(), "non-finite logits"
    pre = model.logits(ids[:7])
    d = (full[:7] - pre).abs().max().item()
    print(f"causality: max |logits(prefix) - logits(full)[:prefix]| = {d:.3e}")
    ok &= d < 1e-4
    # 3. greedy consistency: every generated token is the argmax of a fresh
    #    full-sequence forward pass over prompt + previously generated tokens
    new, margins = greedy(model, ids[:5], 8)
    seq = ids[:5] + new
    lg = model.logits(seq)
    re = [int(torch.argmax(lg[4 + i]).item()) for i in range(8)]
    print(f"greedy {new} recheck {re} min margin {min(margins):.4f}")
    ok &= re == new
    # 4. perplexity: one window == direct computation
    pp = perplexity(model, ids, 64)
    lp = torch.log_softmax(full.double(), -1)
    direct = -sum(lp[i, ids[i + 1]].item() for i in range(len(ids) - 1)) / (len(ids) - 1)
    print(f"ppl tokens {pp['tokens']} nll {pp['nll']:.6f} direct {direct:.6f}")
    ok &= pp["tokens"] == len(ids) - 1 and abs(pp["nll"] - direct) < 1e-9
    # 5. second formulation (float64, token by token with a KV cache)
    inc = incremental_logits(model, ids)
    d = float(np.abs(inc - full.double().numpy()).max())
    print(f"float64 KV-cache formulation: max |diff| = {d:.3e}")
    ok &= d < 1e-3
    print(f"logit std {full.std().item():.3f}")
    print("SELF-TEST", "OK" if ok else "FAILED")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--ids", type=int, nargs="*", default=None)
    ap.add_argument("--greedy", type=int, default=0)
    ap.add_argument("--ppl-context", type=int, default=0)
    ap.add_argument("--self-test", action="store_true")
    a = ap.parse_args()
    m = load_model(a.model_dir)
    print(f"{m.arch}: layers {m.n_layers} hidden {m.hidden} heads {m.n_heads}/{m.n_kv} head_dim {m.head_dim} "
          f"experts {m.n_experts} top{m.top_k} norm_topk {m.norm_topk} dtypes {m.weight_dtype}")
    if a.self_test:
        sys.exit(0 if self_test(m) else 1)
    if a.ids:
        lg = m.logits(a.ids)
        print("last logits[:8]:", [float(x) for x in lg[-1, :8]])
        print("argmax per position:", lg.argmax(-1).tolist())
        if a.greedy:
            new, mg = greedy(m, a.ids, a.greedy)
            print("greedy:", new, "min margin", min(mg))
        if a.ppl_context:
            print("perplexity:", perplexity(m, a.ids, a.ppl_context))


if __name__ == "__main__":
    main()
