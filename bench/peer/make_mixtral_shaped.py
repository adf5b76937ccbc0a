#!/usr/bin/python3
"""Writes a random-weight BF16 Mixtral-format Hugging Face directory for the side-by-side speed benchmark:
8 layers, hidden 1024, 8 experts of intermediate 3584 (top-2), 16 heads, 4 KV heads (head_dim 64), vocab 4096
(the shipped model's tokenizer), rope_theta 1e6, max_position_embeddings 4096: about 733 M parameters, 1.47 GB.

Usage:
  make_mixtral_shaped.py OUT_DIR [--seed S] [--layers N]

OUT_DIR gets config.json, generation_config.json, model.safetensors (one file, written here with numpy: no torch,
no safetensors package), tokenizer.json and tokenizer_config.json (copied from weights/tiny-mixtral).
Weights are N(0, 0.02) (norm weights 1), drawn tensor by tensor from numpy's PCG64 seeded with (seed, tensor
index), rounded to BF16 (round to nearest even): the same seed writes the same bytes. Never write it inside
the repository (it is 1.4 GB); e.g. /tmp/mixtral-shaped. --layers is for smoke tests only.
"""
import json
import os
import shutil
import struct
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKENIZER_DIR = os.path.join(REPO, "weights", "tiny-mixtral")

V, H, I, NH, NKV, E, K = 4096, 1024, 3584, 16, 4, 8, 2
HD = H // NH
STD = 0.02


def config(layers):
    return {
        "architectures": ["MixtralForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "head_dim": HD,
        "hidden_act": "silu",
        "hidden_size": H,
        "initializer_range": STD,
        "intermediate_size": I,
        "max_position_embeddings": 4096,
        "model_type": "mixtral",
        "num_attention_heads": NH,
        "num_experts_per_tok": K,
        "num_hidden_layers": layers,
        "num_key_value_heads": NKV,
        "num_local_experts": E,
        "output_router_logits": False,
        "rms_norm_eps": 1e-05,
        "rope_theta": 1000000.0,
        "router_aux_loss_coef": 0.02,
        "router_jitter_noise": 0.0,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.51.3",
        "use_cache": True,
        "vocab_size": V,
    }


def tensors(layers):
    """(name, shape, is_norm) in file order."""
    out = [("model.embed_tokens.weight", (V, H), False)]
    for l in range(layers):
        p = f"model.layers.{l}."
        out += [
            (p + "input_layernorm.weight", (H,), True),
            (p + "self_attn.q_proj.weight", (NH * HD, H), False),
            (p + "self_attn.k_proj.weight", (NKV * HD, H), False),
            (p + "self_attn.v_proj.weight", (NKV * HD, H), False),
            (p + "self_attn.o_proj.weight", (H, NH * HD), False),
            (p + "post_attention_layernorm.weight", (H,), True),
            (p + "block_sparse_moe.gate.weight", (E, H), False),
        ]
        for e in range(E):
            q = p + f"block_sparse_moe.experts.{e}."
            out += [(q + "w1.weight", (I, H), False), (q + "w2.weight", (H, I), False), (q + "w3.weight", (I, H), False)]
    out += [("model.norm.weight", (H,), True), ("lm_head.weight", (V, H), False)]
    return out


def bf16_bytes(x):
    """float32 array -> little-endian BF16 bytes, round to nearest even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    r = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype("<u2")
    return r.tobytes()


def main():
    args = sys.argv[1:]
    seed, layers, out = 0, 8, None
    i = 0
    while i < len(args):
        if args[i] in ("--seed", "--layers") and i + 1 < len(args):
            if args[i] == "--seed":
                seed = int(args[i + 1])
            else:
                layers = int(args[i + 1])
            i += 2
        elif args[i] in ("-h", "--help"):
            print(__doc__)
            return 0
        elif out is None and not args[i].startswith("--"):
            out = args[i]
            i += 1
        else:
            sys.stderr.write(f"make_mixtral_shaped: unexpected argument {args[i]!r}\n{__doc__}")
            return 2
    if out is None or layers < 1:
        sys.stderr.write(__doc__)
        return 2
    out = os.path.abspath(out)
    if out == REPO or out.startswith(REPO + os.sep):
        sys.stderr.write(f"make_mixtral_shaped: {out} is inside the repository; write the checkpoint elsewhere (e.g. /tmp/mixtral-shaped)\n")
        return 2
    os.makedirs(out, exist_ok=True)

    spec = tensors(layers)
    header = {"__metadata__": {"format": "pt", "generator": f"bench/peer/make_mixtral_shaped.py --seed {seed}"}}
    offset = 0
    for name, shape, _ in spec:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((8 - len(hj) % 8) % 8)

    tmp = os.path.join(out, "model.safetensors.partial")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for index, (name, shape, is_norm) in enumerate(spec):
            if is_norm:
                x = np.ones(shape, dtype=np.float32)
            else:
                rng = np.random.Generator(np.random.PCG64([seed, index]))
                x = rng.standard_normal(shape, dtype=np.float32)
                x *= np.float32(STD)
            f.write(bf16_bytes(x))
    os.replace(tmp, os.path.join(out, "model.safetensors"))

    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config(layers), f, indent=2)
        f.write("\n")
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 1, "eos_token_id": 2, "do_sample": False, "transformers_version": "4.51.3"}, f, indent=2)
        f.write("\n")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(TOKENIZER_DIR, name), os.path.join(out, name))

    params = sum(int(np.prod(s)) for _, s, _ in spec)
    print(json.dumps({"dir": out, "seed": seed, "layers": layers, "parameters": params,
                      "safetensors_bytes": os.path.getsize(os.path.join(out, "model.safetensors"))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
