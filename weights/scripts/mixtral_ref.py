#!/usr/bin/python3
"""Reference Mixtral implementation in plain PyTorch (works with Debian 12's torch 1.13),
with the semantics of Hugging Face's MixtralForCausalLM (eager attention):

  RMSNorm      x * rsqrt(mean(x^2) + eps) * weight, computed in float32
  RoPE         non-interleaved rotate_half form, inv_freq = 1 / theta^(2i/d), positions 0..T-1
  attention    causal, grouped-query (k/v heads repeated), softmax(q k^T / sqrt(d)) v
  MoE          router softmax over all experts (float32), top-k, top-k weights renormalised to
               sum 1; expert(x) = w2(silu(w1 x) * w3 x); output = sum_k weight_k * expert_k(x)
  head         final RMSNorm then lm_head (untied)

Usable as a library:
    from mixtral_ref import load_model, logits_for_ids
    model = load_model("weights/tiny-mixtral")          # config.json + model.safetensors
    logits = logits_for_ids(model, [1, 415, 2042])        # numpy float32 [T, vocab]
and for safetensors I/O: read_safetensors(path) -> {name: np.ndarray}, write_safetensors(path, tensors).
"""
import json, math, os, struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------- safetensors
_DT = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def write_safetensors(path, tensors, metadata=None):
    """tensors: dict name -> np.ndarray (written in insertion order, little-endian)."""
    header, off, blobs = {}, 0, []
    meta = {"format": "pt"}
    if metadata:
        meta.update(metadata)
    header["__metadata__"] = meta
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        if arr.dtype == np.float32:
            dt = "F32"
        elif arr.dtype == np.float16:
            dt = "F16"
        else:
            raise ValueError(f"unsupported dtype {arr.dtype} for {name}")
        b = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n).decode("utf-8"))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        dt = np.dtype(_DT[info["dtype"]]).newbyteorder("<")
        out[name] = np.frombuffer(data[a:b], dtype=dt).reshape(info["shape"]).astype(_DT[info["dtype"]])
    return out


# ----------------------------------------------------------------------------- model
class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        dt = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dt)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope_cos_sin(T, dim, theta, device=None):
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    t = torch.arange(T, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.nh, self.nkv = c["num_attention_heads"], c["num_key_value_heads"]
        self.hd = c.get("head_dim") or c["hidden_size"] // self.nh
        H = c["hidden_size"]
        self.q_proj = nn.Linear(H, self.nh * self.hd, bias=False)
        self.k_proj = nn.Linear(H, self.nkv * self.hd, bias=False)
        self.v_proj = nn.Linear(H, self.nkv * self.hd, bias=False)
        self.o_proj = nn.Linear(self.nh * self.hd, H, bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.nh // self.nkv
        if rep > 1:
            k = k.repeat_interleave(rep, dim=1)  # HF repeat_kv: head h uses kv head h // rep
            v = v.repeat_interleave(rep, dim=1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
        att = att + mask
        att = torch.softmax(att.float(), dim=-1).to(q.dtype)
        y = (att @ v).transpose(1, 2).reshape(B, T, self.nh * self.hd)
        return self.o_proj(y)


class SparseMoE(nn.Module):
    """Experts are stored stacked: w13[e] = cat(w1_e, w3_e) [2I, H]; w2[e] [H, I]."""

    def __init__(self, c):
        super().__init__()
        H, I, E = c["hidden_size"], c["intermediate_size"], c["num_local_experts"]
        self.E, self.k, self.I = E, c["num_experts_per_tok"], I
        self.gate = nn.Linear(H, E, bias=False)
        self.w13 = nn.Parameter(torch.empty(E, 2 * I, H))
        self.w2 = nn.Parameter(torch.empty(E, H, I))

    def forward(self, x, resident=None):
        """resident: optional bool [E]; tokens then take their top-k among these experts only (the
        engine's reroute rule for absent experts), and the returned probs are the masked ones."""
        shp = x.shape
        x = x.reshape(-1, shp[-1])
        N = x.shape[0]
        logits = self.gate(x)
        probs = torch.softmax(logits.float(), dim=-1)
        if resident is not None:
            probs = probs.masked_fill(~resident, -1.0)
        topw, topi = probs.topk(self.k, dim=-1)
        topw = (topw / topw.sum(-1, keepdim=True)).to(x.dtype)
        flat = topi.reshape(-1)
        order = torch.sort(flat, stable=True)[1]
        tok = order // self.k
        counts = torch.bincount(flat, minlength=self.E).tolist()
        xs = x.index_select(0, tok)
        ws = topw.reshape(-1).index_select(0, order)
        outs = []
        start = 0
        for e, n in enumerate(counts):
            if n == 0:
                continue
            s = xs[start:start + n]
            h = s @ self.w13[e].t()
            a = F.silu(h[:, :self.I]) * h[:, self.I:]
            outs.append(a @ self.w2[e].t())
            start += n
        y = torch.cat(outs, 0) * ws[:, None]
        out = torch.zeros_like(x).index_add_(0, tok, y)
        return out.reshape(shp), probs, topi


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.block_sparse_moe = SparseMoE(c)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        m, probs, topi = self.block_sparse_moe(self.post_attention_layernorm(x))
        return x + m, probs, topi


def load_balancing_loss(probs, topi, E, k):
    """Switch/HF-style loss for ONE layer: E * sum_{slot k, expert i} f_{k,i} * P_i, where
    f_{k,i} is the fraction of tokens whose k-th choice is expert i and P_i the mean router
    probability (equals HF load_balancing_loss_func applied to a single layer; ~k when balanced)."""
    mask = F.one_hot(topi, E).float()          # [N, k, E]
    f = mask.mean(0)                           # [k, E]
    P = probs.mean(0)                          # [E]
    return E * (f * P[None]).sum()


class Mixtral(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList([Block(c) for _ in range(c["num_hidden_layers"])])
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)
        self.hd = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
        self._rope = {}

    def init_weights(self, std=0.02, seed=0):
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for n, p in self.named_parameters():
                if p.dim() >= 2:
                    p.copy_(torch.randn(p.shape, generator=g) * std)
                else:
                    p.fill_(1.0)

    def forward(self, ids, return_router=False):
        B, T = ids.shape
        if T not in self._rope:
            cos, sin = rope_cos_sin(T, self.hd, self.c["rope_theta"])
            mask = torch.full((T, T), float("-inf")).triu(1)
            self._rope[T] = (cos, sin, mask)
        cos, sin, mask = self._rope[T]
        x = self.embed_tokens(ids)
        aux, router = [], []
        E, k = self.c["num_local_experts"], self.c["num_experts_per_tok"]
        for layer in self.layers:
            x, probs, topi = layer(x, cos, sin, mask)
            aux.append(load_balancing_loss(probs, topi, E, k))
            if return_router:
                router.append((probs.view(B, T, -1), topi.view(B, T, -1)))
        logits = self.lm_head(self.norm(x))
        aux = torch.stack(aux).mean()  # per-layer loss averaged over layers
        if return_router:
            return logits, aux, router
        return logits, aux

    # ---- Hugging Face tensor names
    def hf_state(self):
        c = self.c
        I = c["intermediate_size"]
        t = {"model.embed_tokens.weight": self.embed_tokens.weight}
        for L, layer in enumerate(self.layers):
            p = f"model.layers.{L}."
            t[p + "input_layernorm.weight"] = layer.input_layernorm.weight
            for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
                t[p + f"self_attn.{n}.weight"] = getattr(layer.self_attn, n).weight
            t[p + "post_attention_layernorm.weight"] = layer.post_attention_layernorm.weight
            moe = layer.block_sparse_moe
            t[p + "block_sparse_moe.gate.weight"] = moe.gate.weight
            for e in range(c["num_local_experts"]):
                q = p + f"block_sparse_moe.experts.{e}."
                t[q + "w1.weight"] = moe.w13[e, :I]
                t[q + "w2.weight"] = moe.w2[e]
                t[q + "w3.weight"] = moe.w13[e, I:]
        t["model.norm.weight"] = self.norm.weight
        t["lm_head.weight"] = self.lm_head.weight
        return {k: v.detach().float().contiguous().numpy().copy() for k, v in t.items()}

    def load_hf_state(self, t):
        c = self.c
        I = c["intermediate_size"]
        g = lambda n: torch.from_numpy(np.ascontiguousarray(t[n], dtype=np.float32))
        with torch.no_grad():
            self.embed_tokens.weight.copy_(g("model.embed_tokens.weight"))
            for L, layer in enumerate(self.layers):
                p = f"model.layers.{L}."
                layer.input_layernorm.weight.copy_(g(p + "input_layernorm.weight"))
                for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
                    getattr(layer.self_attn, n).weight.copy_(g(p + f"self_attn.{n}.weight"))
                layer.post_attention_layernorm.weight.copy_(g(p + "post_attention_layernorm.weight"))
                moe = layer.block_sparse_moe
                moe.gate.weight.copy_(g(p + "block_sparse_moe.gate.weight"))
                for e in range(c["num_local_experts"]):
                    q = p + f"block_sparse_moe.experts.{e}."
                    moe.w13[e, :I].copy_(g(q + "w1.weight"))
                    moe.w13[e, I:].copy_(g(q + "w3.weight"))
                    moe.w2[e].copy_(g(q + "w2.weight"))
            self.norm.weight.copy_(g("model.norm.weight"))
            self.lm_head.weight.copy_(g("lm_head.weight"))


def load_model(model_dir):
    c = json.load(open(os.path.join(model_dir, "config.json")))
    m = Mixtral(c)
    m.load_hf_state(read_safetensors(os.path.join(model_dir, "model.safetensors")))
    m.eval()
    return m


@torch.no_grad()
def logits_for_ids(model, ids):
    """ids: list of token ids (include BOS yourself). Returns np.float32 [len(ids), vocab]."""
    x = torch.tensor([list(ids)], dtype=torch.long)
    return model(x)[0][0].float().numpy()


@torch.no_grad()
def greedy(model, ids, n_new, eos_id=2):
    ids = list(ids)
    out = []
    for _ in range(n_new):
        nxt = int(logits_for_ids(model, ids)[-1].argmax())
        out.append(nxt)
        ids.append(nxt)
        if nxt == eos_id:
            break
    return out
