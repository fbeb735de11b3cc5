#!/usr/bin/env python3
"""Checks the reference itself: writes a random IN.h5 for a small two-layer model (a dense layer,
then an MoE layer with a shared expert, GQA, capacity 1.0 so that slots are dropped), runs
moe_ref.py on it as the C++ test does, and compares its autograd gradients with central finite
differences on a few entries of every kind of parameter.

Usage: /usr/bin/python3 tests/reference/selfcheck.py [WORKDIR]
"""
import json
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moe_ref  # noqa: E402

CONFIGS = {
    "softmax_capacity": dict(vocab_size=17, d_model=16, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=4,
                             rope_theta=10000.0, seq_len=6, norm_eps=1e-5, tie_embeddings=False, d_ff=12,
                             first_dense_layers=1, n_experts=4, top_k=2, expert_ffn_dim=8, n_shared_experts=1,
                             score_fn="softmax", norm_topk_prob=True, capacity_factor=1.0, aux_loss_coef=0.05,
                             z_loss_coef=0.01),
    "sigmoid_tied_bias": dict(vocab_size=17, d_model=16, n_layers=2, n_heads=4, n_kv_heads=1, head_dim=0,
                              rope_theta=500.0, seq_len=6, norm_eps=1e-5, tie_embeddings=True, d_ff=12,
                              first_dense_layers=0, n_experts=4, top_k=2, expert_ffn_dim=8, n_shared_experts=2,
                              score_fn="sigmoid", norm_topk_prob=False, capacity_factor=0.0, aux_loss_coef=0.05,
                              z_loss_coef=0.01),
    "mla_qknone_groups": dict(vocab_size=17, d_model=16, n_layers=2, n_heads=4, n_kv_heads=4, head_dim=0,
                              rope_theta=10000.0, seq_len=6, norm_eps=1e-5, tie_embeddings=False, d_ff=12,
                              first_dense_layers=1, n_experts=8, top_k=3, expert_ffn_dim=8, n_shared_experts=1,
                              score_fn="sigmoid", norm_topk_prob=True, capacity_factor=0.0, aux_loss_coef=0.05,
                              z_loss_coef=0.01, q_lora_rank=6, kv_lora_rank=5, qk_nope_head_dim=4,
                              qk_rope_head_dim=4, v_head_dim=3, n_expert_groups=4, topk_groups=2,
                              routed_scaling_factor=2.5),
    "qk_norm_full": dict(vocab_size=17, d_model=16, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=4,
                         rope_theta=10000.0, seq_len=6, norm_eps=1e-5, tie_embeddings=False, d_ff=12,
                         first_dense_layers=1, n_experts=4, top_k=2, expert_ffn_dim=8, n_shared_experts=0,
                         score_fn="softmax", norm_topk_prob=False, capacity_factor=0.0, aux_loss_coef=0.05,
                         z_loss_coef=0.01, qk_norm="full"),
    "gpt_oss_features": dict(vocab_size=17, d_model=16, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=4,
                             rope_theta=150000.0, seq_len=6, norm_eps=1e-5, tie_embeddings=False, d_ff=12,
                             first_dense_layers=0, n_experts=4, top_k=2, expert_ffn_dim=8, n_shared_experts=0,
                             score_fn="softmax", norm_topk_prob=True, capacity_factor=0.0, aux_loss_coef=0.05,
                             z_loss_coef=0.01, sliding_window=3, full_attention_every=2, attention_sinks=True,
                             attention_bias=True, rope_scaling="yarn", rope_factor=8.0, rope_original_max_position=4,
                             yarn_truncate=False, router_logit_bias=True, expert_bias=True, swiglu_limit=0.8,
                             swiglu_alpha=1.702),
}


def write_input(path, cfg_dict, seed):
    cfg = moe_ref.Config(dict(cfg_dict))
    rng = np.random.default_rng(seed)
    B, T = 2, cfg.seq_len
    with h5py.File(path, "w") as f:
        f.attrs["config"] = json.dumps(cfg_dict)
        f.create_dataset("input_ids", data=rng.integers(0, cfg.vocab_size, (B, T), dtype=np.int32))
        f.create_dataset("targets", data=rng.integers(0, cfg.vocab_size, (B, T), dtype=np.int32))
        for name, shape in moe_ref.param_shapes(cfg):
            noise = rng.standard_normal(shape)
            v = 1.0 + 0.1 * noise if name.endswith("norm.weight") else 0.3 * noise
            f.create_dataset(name, data=v)
        if cfg.score_fn == "sigmoid":
            for name, shape in moe_ref.buffer_shapes(cfg):
                f.create_dataset(name, data=0.05 * (np.arange(shape[0]) % 3))


def check(workdir, tag, cfg_dict):
    inp, out = os.path.join(workdir, tag + "_in.h5"), os.path.join(workdir, tag + "_out.h5")
    write_input(inp, cfg_dict, seed=7)
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "moe_ref.py")
    subprocess.run([sys.executable, script, inp, out], check=True)

    cfg, params, buffers, ids, tgt = moe_ref.load(inp)
    with h5py.File(out, "r") as f:
        ref = {k: f[k][...] for k in f.keys()}
    n_tokens = ids.numel()
    assert ref["logits"].shape == (n_tokens, cfg.vocab_size)
    assert abs(ref["loss"] - (ref["ce"] + ref["aux"] + ref["z"])) < 1e-12
    assert ref["aux"] > 0 and ref["z"] > 0
    dropped = 0
    for i in range(cfg.n_layers):
        if cfg.is_moe(i):
            idx, kept = ref[f"route.{i}.idx"], ref[f"route.{i}.kept"]
            assert idx.shape == kept.shape == (n_tokens, cfg.top_k) and idx.dtype == np.int32
            assert all(len(set(row)) == cfg.top_k for row in idx)
            dropped += int((kept == 0).sum())
    print(f"{tag}: loss {float(ref['loss']):.12f} ce {float(ref['ce']):.6f} aux {float(ref['aux']):.6f} "
          f"z {float(ref['z']):.6f}, dropped slots {dropped}")
    if cfg.capacity_factor > 0:
        assert dropped > 0, "the capacity case should drop slots, or it tests nothing"

    def loss_at():
        with torch.no_grad():
            return moe_ref.forward(cfg, params, buffers, ids, tgt)["loss"].item()

    rng = np.random.default_rng(1)
    eps, worst = 1e-5, 0.0
    for name, t in params.items():
        g = ref["grad." + name].reshape(-1)
        flat = t.detach().view(-1)  # shares storage with the parameter
        picks = list(rng.choice(flat.numel(), size=min(2, flat.numel()), replace=False))
        picks.append(int(np.abs(g).argmax()))
        for j in picks:
            old = flat[j].item()
            flat[j] = old + eps
            up = loss_at()
            flat[j] = old - eps
            down = loss_at()
            flat[j] = old
            fd = (up - down) / (2 * eps)
            # Relative, with an absolute floor at the finite difference's own rounding noise
            # (|loss| * 1e-16 / eps, about 1e-11 here) for near-zero entries.
            err = abs(fd - g[j]) / max(abs(fd), abs(g[j]), 1e-4)
            worst = max(worst, err)
            assert err < 1e-6, f"{tag}: {name}[{j}]: autograd {g[j]:.10g} vs finite difference {fd:.10g}"
    print(f"{tag}: {len(params)} parameters, finite differences agree, worst relative error {worst:.2e}")


def main():
    torch.set_default_dtype(torch.float64)
    workdir = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="sy_moe_ref_")
    for tag, cfg in CONFIGS.items():
        check(workdir, tag, cfg)
    print("moe_ref selfcheck passed")


if __name__ == "__main__":
    main()
