#!/usr/bin/env python3
"""Write the small random-weight test checkpoints under tests/fixtures/models/.

Usage (from the repository root; Debian's torch, i.e. /usr/bin/python3):

    OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 tests/reference/make_fixtures.py

Deterministic (fixed torch seeds), so re-running rewrites identical files.
Afterwards regenerate the goldens: tests/reference/make_goldens.py.

Fixtures (tensor names / shapes exactly as Hugging Face, [out, in]):
  mixtral-f32/    mixtral,   F32,  single model.safetensors, untied lm_head
  qwen3moe-bf16/  qwen3_moe, BF16, 2 shards + model.safetensors.index.json,
                  head_dim 32 != hidden/heads, tied embeddings (no lm_head)
  olmoe-f16/      olmoe,     F16,  single model.safetensors, untied lm_head

Initialisation: projections ~ N(0, (0.8/sqrt(fan_in))^2) so that every
sub-layer contributes O(1) to the residual stream (with HF's 0.02 the layers
would barely move the logits and bugs in them would hardly show); norm weights
1 + 0.1*N(0,1); embeddings / lm_head scaled so that the logits have a standard
deviation of roughly 3 (greedy continuations then don't hinge on near-ties).
"""
import json
import os
import struct

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "models")
TRANSFORMERS_VERSION = "4.51.3"

ST_DTYPE = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
ST_SIZE = {"F32": 4, "F16": 2, "BF16": 2}
TORCH_DTYPE_NAME = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def to_bytes(t, dt):
    t = t.detach().to(ST_DTYPE[dt]).contiguous()
    if dt == "BF16":
        # round-to-nearest-even done by torch; raw bits via an int16 view
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    if dt == "F16":
        return t.numpy().astype("<f2").tobytes()
    return t.numpy().astype("<f4").tobytes()


def write_safetensors(path, tensors, dt):
    """tensors: list of (name, float32 tensor) in file order."""
    header = {"__metadata__": {"format": "pt"}}
    blobs = []
    off = 0
    for name, t in tensors:
        b = to_bytes(t, dt)
        assert len(b) == t.numel() * ST_SIZE[dt]
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)
    return off


def write_model(name, config, tensors, dt, shards=1):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    for fn in os.listdir(d):
        if fn.endswith(".safetensors") or fn.endswith(".json"):
            os.remove(os.path.join(d, fn))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    gen = {"_from_model_config": True, "bos_token_id": config.get("bos_token_id"),
           "eos_token_id": config.get("eos_token_id"), "transformers_version": TRANSFORMERS_VERSION}
    with open(os.path.join(d, "generation_config.json"), "w") as f:
        json.dump(gen, f, indent=2)
        f.write("\n")
    if shards == 1:
        write_safetensors(os.path.join(d, "model.safetensors"), tensors, dt)
        return
    # split in state-dict order at equal byte budgets (like HF's max_shard_size)
    total = sum(t.numel() * ST_SIZE[dt] for _, t in tensors)
    budget = total / shards
    groups, cur, acc = [], [], 0
    for nm, t in tensors:
        sz = t.numel() * ST_SIZE[dt]
        if cur and acc + sz > budget and len(groups) < shards - 1:
            groups.append(cur)
            cur, acc = [], 0
        cur.append((nm, t))
        acc += sz
    groups.append(cur)
    assert len(groups) == shards
    weight_map = {}
    for i, g in enumerate(groups):
        fn = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        write_safetensors(os.path.join(d, fn), g, dt)
        for nm, _ in g:
            weight_map[nm] = fn
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
        f.write("\n")


class Init:
    def __init__(self, seed):
        self.g = torch.Generator().manual_seed(seed)

    def lin(self, out_f, in_f, gain=0.8):
        return torch.randn(out_f, in_f, generator=self.g) * (gain / in_f ** 0.5)

    def norm(self, n):
        return 1.0 + 0.1 * torch.randn(n, generator=self.g)

    def emb(self, v, h, std):
        return torch.randn(v, h, generator=self.g) * std


# --------------------------------------------------------------------------


def mixtral():
    V, H, I, L, NH, NKV, E, K = 512, 64, 96, 2, 4, 2, 8, 2
    HD = H // NH
    cfg = {
        "architectures": ["MixtralForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "head_dim": HD,
        "hidden_act": "silu",
        "hidden_size": H,
        "initializer_range": 0.02,
        "intermediate_size": I,
        "max_position_embeddings": 128,
        "model_type": "mixtral",
        "num_attention_heads": NH,
        "num_experts_per_tok": K,
        "num_hidden_layers": L,
        "num_key_value_heads": NKV,
        "num_local_experts": E,
        "output_router_logits": False,
        "rms_norm_eps": 1e-05,
        "rope_theta": 10000.0,
        "router_aux_loss_coef": 0.02,
        "router_jitter_noise": 0.0,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
        "vocab_size": V,
    }
    r = Init(1234)
    t = [("model.embed_tokens.weight", r.emb(V, H, 1.0))]
    for l in range(L):
        p = f"model.layers.{l}."
        t += [
            (p + "self_attn.q_proj.weight", r.lin(NH * HD, H)),
            (p + "self_attn.k_proj.weight", r.lin(NKV * HD, H)),
            (p + "self_attn.v_proj.weight", r.lin(NKV * HD, H)),
            (p + "self_attn.o_proj.weight", r.lin(H, NH * HD)),
            (p + "block_sparse_moe.gate.weight", r.lin(E, H, 1.5)),
        ]
        for e in range(E):
            q = p + f"block_sparse_moe.experts.{e}."
            t += [(q + "w1.weight", r.lin(I, H)), (q + "w2.weight", r.lin(H, I)), (q + "w3.weight", r.lin(I, H))]
        t += [(p + "input_layernorm.weight", r.norm(H)), (p + "post_attention_layernorm.weight", r.norm(H))]
    t += [("model.norm.weight", r.norm(H)), ("lm_head.weight", r.emb(V, H, 0.4))]
    write_model("mixtral-f32", cfg, t, "F32")


def qwen3moe():
    V, H, HD, NH, NKV, MI, DI, L, E, K = 512, 64, 32, 4, 2, 48, 128, 2, 8, 2
    cfg = {
        "architectures": ["Qwen3MoeForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "decoder_sparse_step": 1,
        "eos_token_id": 2,
        "head_dim": HD,
        "hidden_act": "silu",
        "hidden_size": H,
        "initializer_range": 0.02,
        "intermediate_size": DI,
        "max_position_embeddings": 128,
        "max_window_layers": L,
        "mlp_only_layers": [],
        "model_type": "qwen3_moe",
        "moe_intermediate_size": MI,
        "norm_topk_prob": True,
        "num_attention_heads": NH,
        "num_experts": E,
        "num_experts_per_tok": K,
        "num_hidden_layers": L,
        "num_key_value_heads": NKV,
        "output_router_logits": False,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "router_aux_loss_coef": 0.001,
        "sliding_window": None,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": V,
    }
    # tied embeddings: a token's own embedding dominates its logit unless the
    # layers write much more than the (small) embedding into the residual, so
    # the output projections get a larger gain (else greedy repeats one token)
    OUT_GAIN = 8.0
    r = Init(2345)
    t = [("model.embed_tokens.weight", r.emb(V, H, 0.4))]
    for l in range(L):
        p = f"model.layers.{l}."
        t += [
            (p + "self_attn.q_proj.weight", r.lin(NH * HD, H)),
            (p + "self_attn.k_proj.weight", r.lin(NKV * HD, H)),
            (p + "self_attn.v_proj.weight", r.lin(NKV * HD, H)),
            (p + "self_attn.o_proj.weight", r.lin(H, NH * HD, OUT_GAIN)),
            (p + "self_attn.q_norm.weight", r.norm(HD)),
            (p + "self_attn.k_norm.weight", r.norm(HD)),
            (p + "mlp.gate.weight", r.lin(E, H, 1.5)),
        ]
        for e in range(E):
            q = p + f"mlp.experts.{e}."
            t += [(q + "gate_proj.weight", r.lin(MI, H)), (q + "up_proj.weight", r.lin(MI, H)),
                  (q + "down_proj.weight", r.lin(H, MI, OUT_GAIN))]
        t += [(p + "input_layernorm.weight", r.norm(H)), (p + "post_attention_layernorm.weight", r.norm(H))]
    t += [("model.norm.weight", r.norm(H))]
    write_model("qwen3moe-bf16", cfg, t, "BF16", shards=2)


def olmoe():
    V, H, I, L, NH, NKV, E, K = 512, 64, 48, 2, 4, 4, 8, 2
    HD = H // NH
    cfg = {
        "architectures": ["OlmoeForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "clip_qkv": None,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": H,
        "initializer_range": 0.02,
        "intermediate_size": I,
        "max_position_embeddings": 128,
        "model_type": "olmoe",
        "norm_topk_prob": False,
        "num_attention_heads": NH,
        "num_experts": E,
        "num_experts_per_tok": K,
        "num_hidden_layers": L,
        "num_key_value_heads": NKV,
        "output_router_logits": False,
        "pad_token_id": None,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "router_aux_loss_coef": 0.01,
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
        "vocab_size": V,
    }
    r = Init(3456)
    t = [("model.embed_tokens.weight", r.emb(V, H, 1.0))]
    for l in range(L):
        p = f"model.layers.{l}."
        t += [
            (p + "self_attn.q_proj.weight", r.lin(NH * HD, H)),
            (p + "self_attn.k_proj.weight", r.lin(NKV * HD, H)),
            (p + "self_attn.v_proj.weight", r.lin(NKV * HD, H)),
            (p + "self_attn.o_proj.weight", r.lin(H, NH * HD)),
            (p + "self_attn.q_norm.weight", r.norm(NH * HD)),
            (p + "self_attn.k_norm.weight", r.norm(NKV * HD)),
            (p + "mlp.gate.weight", r.lin(E, H, 1.5)),
        ]
        for e in range(E):
            q = p + f"mlp.experts.{e}."
            t += [(q + "gate_proj.weight", r.lin(I, H)), (q + "up_proj.weight", r.lin(I, H)),
                  (q + "down_proj.weight", r.lin(H, I))]
        t += [(p + "input_layernorm.weight", r.norm(H)), (p + "post_attention_layernorm.weight", r.norm(H))]
    t += [("model.norm.weight", r.norm(H)), ("lm_head.weight", r.emb(V, H, 0.4))]
    write_model("olmoe-f16", cfg, t, "F16")


if __name__ == "__main__":
    mixtral()
    qwen3moe()
    olmoe()
    for n in sorted(os.listdir(OUT)):
        d = os.path.join(OUT, n)
        size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        print(f"{n}: {size} bytes ({', '.join(sorted(os.listdir(d)))})")
