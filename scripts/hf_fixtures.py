#!/usr/bin/env python3
"""Parity fixtures: tiny random models made by Hugging Face transformers' own classes.

For each family a float32 model with every feature of the family switched on, its directory as
save_pretrained writes it (model.safetensors + config.json), and expected.safetensors with the
input ids [B, T] (int32) and the logits [B, T, V] (float32) of the model in eval mode. The logits
are the float64 forward of the float32 weights (the model cast with .double(): every matmul,
residual and expert sum in float64; Hugging Face still computes its RMSNorm, its attention softmax,
its RoPE tables and some routers in float32 inside that forward), cast to float32.

tests/test_hf_parity.cpp imports every family and compares the engine's logits. For mixtral,
qwen3_moe and olmoe this script writes the recipe.toml that describes the same architecture to
Switchyard; deepseek_v3's and gpt_oss's recipe.toml are kept by hand beside their fixtures (MLA,
group-limited sigmoid routing with a correction bias, yarn RoPE; attention sinks, sliding
windows, biases, the clamped SwiGLU), and this script leaves them alone.

Routing is made robust: a seed is accepted only when, for every token of every MoE layer, the
k-th selection score exceeds the (k+1)-th by more than MARGIN (and, for group-limited routing,
the topk_group-th group score exceeds the next), and every expert receives a token; otherwise the
next seed is drawn. Then every parameter (every expert's matrices one by one) is zeroed in turn
to confirm that the logits move by far more than the test's tolerance.

Run by scripts/hf-fixtures.sh inside .venv-hf; writes tests/fixtures/hf/<family>/ and
tests/fixtures/hf/README.md.
"""

import argparse
import copy
import json
import os
import platform
import sys

import torch
import transformers
from safetensors.torch import save_file

BATCH, SEQ = 2, 16
MARGIN = 1e-3  # selection-score gap below which a seed is redrawn
TOLERANCE = 1e-4  # the C++ test's bound on the max abs logit error
SENSITIVITY = 1e-2  # zeroing any one parameter must move some logit by more than this
WEIGHT_STD = 0.15  # every matrix (routers, projections, experts, LM head)
EMBED_STD = 0.5

# Each family: the transformers classes, the config (tiny sizes, every feature on), and the
# Switchyard [model] section of the same architecture (None: the engine cannot express it yet).
FAMILIES = {
    "mixtral": dict(
        config="MixtralConfig",
        model="MixtralForCausalLM",
        hf=dict(vocab_size=96, hidden_size=32, intermediate_size=16, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
                rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 1e6},
                num_local_experts=6, num_experts_per_tok=2, sliding_window=None, router_aux_loss_coef=0.02,
                tie_word_embeddings=False),
        recipe=dict(vocab_size=96, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, qk_norm="none",
                    rope_theta=1e6, seq_len=SEQ, norm_eps=1e-5, tie_embeddings=False, d_ff=0,
                    first_dense_layers=0, n_experts=6, top_k=2, expert_ffn_dim=16, n_shared_experts=0,
                    score_fn="softmax", norm_topk_prob=True, capacity_factor=0.0, aux_loss_coef=0.02,
                    z_loss_coef=0.001),
        seed=1000,
    ),
    "qwen3_moe": dict(
        config="Qwen3MoeConfig",
        model="Qwen3MoeForCausalLM",
        # head_dim 16 apart from hidden_size / heads = 8, as Qwen3's 128 against 2048 / 32.
        hf=dict(vocab_size=96, hidden_size=32, intermediate_size=48, moe_intermediate_size=8,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                max_position_embeddings=64, rms_norm_eps=1e-6,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6}, num_experts=8,
                num_experts_per_tok=3, norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[],
                use_sliding_window=False, attention_bias=False, tie_word_embeddings=False),
        recipe=dict(vocab_size=96, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, qk_norm="head",
                    rope_theta=1e6, seq_len=SEQ, norm_eps=1e-6, tie_embeddings=False, d_ff=0,
                    first_dense_layers=0, n_experts=8, top_k=3, expert_ffn_dim=8, n_shared_experts=0,
                    score_fn="softmax", norm_topk_prob=True, capacity_factor=0.0, aux_loss_coef=0.001,
                    z_loss_coef=0.0),
        seed=2000,
    ),
    "olmoe": dict(
        config="OlmoeConfig",
        model="OlmoeForCausalLM",
        # GQA (OLMoE-1B-7B itself has as many KV heads as heads; the code supports fewer).
        hf=dict(vocab_size=96, hidden_size=32, intermediate_size=8, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5,
                rope_parameters={"rope_type": "default", "rope_theta": 1e4}, num_experts=8,
                num_experts_per_tok=2, norm_topk_prob=False, clip_qkv=None, attention_bias=False,
                pad_token_id=1, eos_token_id=None, tie_word_embeddings=False),
        recipe=dict(vocab_size=96, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, qk_norm="full",
                    rope_theta=1e4, seq_len=SEQ, norm_eps=1e-5, tie_embeddings=False, d_ff=0,
                    first_dense_layers=0, n_experts=8, top_k=2, expert_ffn_dim=8, n_shared_experts=0,
                    score_fn="softmax", norm_topk_prob=False, capacity_factor=0.0, aux_loss_coef=0.01,
                    z_loss_coef=0.001),
        seed=3000,
    ),
    "deepseek_v3": dict(
        config="DeepseekV3Config",
        model="DeepseekV3ForCausalLM",
        # DeepSeek-V3's own rope_scaling (yarn, factor 40 over 4096 positions, mscale 1 / 1) and
        # rope_theta, interleaved RoPE, MLA with a query LoRA, group-limited sigmoid routing.
        hf=dict(vocab_size=96, hidden_size=32, intermediate_size=32, moe_intermediate_size=8, num_hidden_layers=3,
                num_attention_heads=4, num_key_value_heads=4, q_lora_rank=16, kv_lora_rank=16,
                qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8, n_routed_experts=8, n_shared_experts=2,
                num_experts_per_tok=3, n_group=4, topk_group=2, routed_scaling_factor=2.5, norm_topk_prob=True,
                first_k_dense_replace=1, max_position_embeddings=163840, rms_norm_eps=1e-6,
                rope_interleave=True, attention_bias=False, tie_word_embeddings=False,
                rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0,
                                 "original_max_position_embeddings": 4096, "beta_fast": 32.0, "beta_slow": 1.0,
                                 "mscale": 1.0, "mscale_all_dim": 1.0}),
        recipe=None,
        seed=4000,
    ),
    "gpt_oss": dict(
        config="GptOssConfig",
        model="GptOssForCausalLM",
        # gpt-oss's rope (yarn, factor 32 over 4096, theta 150000) and its alternating sliding /
        # full attention, the window shrunk to 4 so that it cuts at seq 16; the SwiGLU clamp
        # lowered from 7 to 1 so that it bites at these weights.
        hf=dict(vocab_size=96, hidden_size=32, intermediate_size=8, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=8, num_local_experts=8, num_experts_per_tok=4, sliding_window=4,
                layer_types=["sliding_attention", "full_attention"], max_position_embeddings=131072,
                rms_norm_eps=1e-5, attention_bias=True, swiglu_alpha=1.702, swiglu_limit=1.0,
                tie_word_embeddings=False,
                rope_parameters={"rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0, "beta_fast": 32.0,
                                 "beta_slow": 1.0, "truncate": False, "original_max_position_embeddings": 4096}),
        recipe=None,
        seed=5000,
    ),
}


def randomise(model, gen):
    """Every parameter and persistent buffer drawn again: norms around 1, matrices WEIGHT_STD,
    biases small, the embedding EMBED_STD; DeepSeek's correction bias and gpt-oss's sinks nonzero."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if "norm" in name and p.dim() == 1:
                p.copy_(torch.empty(p.shape).uniform_(0.6, 1.4, generator=gen))
            elif name.endswith("embed_tokens.weight"):
                p.copy_(torch.randn(p.shape, generator=gen) * EMBED_STD)
            elif leaf == "sinks":
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            elif leaf == "bias" or leaf.endswith("_bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * WEIGHT_STD)
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(torch.empty(b.shape).uniform_(-0.1, 0.1, generator=gen))


def routers(model):
    return [(n, m) for n, m in model.named_modules() if type(m).__name__.lower().endswith("topkrouter")]


def run(model, ids):
    """Logits and, per MoE layer, the router module and its logits [N, E] (a float64 copy)."""
    seen = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append((mod, out[0].detach().double())))
             for _, m in routers(model)]
    try:
        with torch.no_grad():
            logits = model(input_ids=ids).logits
    finally:
        for h in hooks:
            h.remove()
    return logits, seen


def routing_report(family, cfg, router_logits):
    """The smallest selection margin over every token and MoE layer (and the smallest group
    margin for group-limited routing), and the fewest tokens any expert receives."""
    k = cfg.num_experts_per_tok
    worst, worst_group, fewest = float("inf"), float("inf"), float("inf")
    for mod, r in router_logits:
        n_exp = r.shape[-1]
        if family == "deepseek_v3":
            # Sigmoid scores plus the correction bias choose; groups by the sum of their two best.
            s = torch.sigmoid(r) + mod.e_score_correction_bias.detach().double()
            g = s.view(-1, cfg.n_group, n_exp // cfg.n_group).topk(2, dim=-1)[0].sum(-1)
            gs = g.sort(dim=-1, descending=True)[0]
            worst_group = min(worst_group, (gs[:, cfg.topk_group - 1] - gs[:, cfg.topk_group]).min().item())
            top_groups = g.topk(cfg.topk_group, dim=-1)[1]
            mask = torch.zeros_like(g, dtype=torch.bool).scatter_(1, top_groups, True)
            mask = mask.repeat_interleave(n_exp // cfg.n_group, dim=1)
            choice = s.masked_fill(~mask, float("-inf"))
        elif family == "gpt_oss":
            choice = r  # top-k of the logits (with the router bias), softmax over the k after
        else:
            choice = torch.softmax(r, dim=-1)
        cs = choice.sort(dim=-1, descending=True)[0]
        worst = min(worst, (cs[:, k - 1] - cs[:, k]).min().item())
        counts = torch.bincount(choice.topk(k, dim=-1)[1].flatten(), minlength=n_exp)
        fewest = min(fewest, counts.min().item())
    return worst, worst_group, fewest


def expert_slices(name, p, family):
    """Each expert's own matrices of a fused [E, ...] tensor, as (label, index) pairs to zero."""
    if ".experts." not in name or p.dim() < 2:
        return [(name, None)]
    out = []
    for e in range(p.shape[0]):
        if name.endswith("gate_up_proj"):
            if family == "gpt_oss":  # [E, D, 2F], gate and up interleaved along the last dim
                out += [(f"{name}[{e}].gate", (e, slice(None), slice(0, None, 2))),
                        (f"{name}[{e}].up", (e, slice(None), slice(1, None, 2)))]
            else:  # [E, 2F, D], gate rows then up rows
                f = p.shape[1] // 2
                out += [(f"{name}[{e}].gate", (e, slice(0, f))), (f"{name}[{e}].up", (e, slice(f, None)))]
        else:
            out.append((f"{name}[{e}]", (e,)))
    return out


def sensitivity(model64, ids, ref, family):
    """The smallest max-abs logit change over zeroing each parameter (each expert's matrices one
    at a time), and which one it was."""
    least, least_name = float("inf"), None
    with torch.no_grad():
        for name, p in model64.named_parameters():
            for label, idx in expert_slices(name, p, family):
                saved = p.detach().clone()
                if idx is None:
                    p.zero_()
                else:
                    p[idx] = 0
                d = (model64(input_ids=ids).logits - ref).abs().max().item()
                p.copy_(saved)
                if d < least:
                    least, least_name = d, label
    return least, least_name


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, float):
        s = repr(v)
        return s if any(c in s for c in ".en") else s + ".0"
    return str(v)


def write_recipe(path, family, recipe):
    lines = [f"# The architecture of tests/fixtures/hf/{family}/ (made by scripts/hf_fixtures.py from the same",
             "# sizes as its config.json); tests/test_hf_parity.cpp imports the fixture with it.", "[model]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in recipe.items()]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def make_family(family, spec, out_root, max_tries):
    cfg_cls = getattr(transformers, spec["config"])
    model_cls = getattr(transformers, spec["model"])
    for seed in range(spec["seed"], spec["seed"] + max_tries):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        cfg = cfg_cls(**spec["hf"])
        cfg._attn_implementation = "eager"
        cfg._experts_implementation = "eager"
        model = model_cls(cfg).float().eval()
        randomise(model, gen)
        ids = torch.randint(0, cfg.vocab_size, (BATCH, SEQ), generator=gen)
        model64 = copy.deepcopy(model).double().eval()
        logits64, router_logits = run(model64, ids)
        worst, worst_group, fewest = routing_report(family, cfg, router_logits)
        ok = worst > MARGIN and (family != "deepseek_v3" or worst_group > MARGIN) and fewest >= 1
        print(f"{family}: seed {seed}: selection margin {worst:.2e}"
              + (f", group margin {worst_group:.2e}" if family == "deepseek_v3" else "")
              + f", fewest tokens per expert {fewest}" + ("" if ok else " -> redraw"))
        if ok:
            break
    else:
        sys.exit(f"{family}: no seed in {max_tries} tries gives routing margins > {MARGIN}")

    logits32, _ = run(model, ids)
    f32_vs_f64 = (logits32.double() - logits64).abs().max().item()
    least, least_name = sensitivity(model64, ids, logits64, family)
    print(f"{family}: float32 forward vs float64 forward: max abs {f32_vs_f64:.2e}; logits range "
          f"[{logits64.min().item():.2f}, {logits64.max().item():.2f}]; zeroing one parameter moves the "
          f"logits by at least {least:.3e} ({least_name})")
    if least < SENSITIVITY:
        sys.exit(f"{family}: zeroing {least_name} moves the logits by only {least:.2e}; the fixture is not sensitive")

    d = os.path.join(out_root, family)
    os.makedirs(d, exist_ok=True)
    for stale in ("model.safetensors", "config.json", "generation_config.json"):
        if os.path.exists(os.path.join(d, stale)):
            os.remove(os.path.join(d, stale))
    model.save_pretrained(d)  # one shard (50 GB shards), safetensors, the checkpoint's own tensor names
    gen_cfg = os.path.join(d, "generation_config.json")
    if os.path.exists(gen_cfg):
        os.remove(gen_cfg)  # not needed to rebuild the model
    save_file({"input_ids": ids.to(torch.int32).contiguous(), "logits": logits64.float().contiguous()},
              os.path.join(d, "expected.safetensors"),
              # One key: safetensors writes several in no fixed order, and the bytes should repeat.
              metadata={"reference": f"float64 forward of the float32 weights, cast to float32; seed {seed}; "
                                     f"transformers {transformers.__version__}, torch {torch.__version__}"})
    if spec["recipe"] is not None:
        write_recipe(os.path.join(d, "recipe.toml"), family, spec["recipe"])

    # What was written reads back to the same model.
    back = model_cls.from_pretrained(d, dtype=torch.float32, attn_implementation="eager",
                                     experts_implementation="eager").eval()
    again, _ = run(back, ids)
    reload_err = (again - logits32).abs().max().item()
    if reload_err > 1e-6:
        sys.exit(f"{family}: the saved directory reloads to other logits (max abs {reload_err:.2e})")
    sizes = {f: os.path.getsize(os.path.join(d, f)) for f in sorted(os.listdir(d))}
    print(f"{family}: wrote {d}: " + ", ".join(f"{f} {s} B" for f, s in sizes.items()))
    return dict(family=family, seed=seed, margin=worst, group_margin=worst_group, f32_vs_f64=f32_vs_f64,
                sensitivity=least, sensitivity_name=least_name, bytes=sum(sizes.values()))


README = """# Hugging Face parity fixtures

Made by `scripts/hf-fixtures.sh` (a virtual environment `.venv-hf` with torch, transformers and
safetensors, then `scripts/hf_fixtures.py`); not part of `make test`. Regenerate after changing the
script, then run `sy_tests --gtest_filter='HfParity*'`.

Made with transformers {transformers}, torch {torch}, Python {python}.

Each `<family>/` holds a tiny random model built with transformers' own classes in float32:
`model.safetensors` and `config.json` as `save_pretrained` writes them (one shard), and
`expected.safetensors` with `input_ids` (int32 [{batch}, {seq}]) and `logits` (float32
[{batch}, {seq}, vocab]) of the model in eval mode with eager attention and eager experts. The
logits are the float64 forward of the float32 weights, cast to float32 (inside that forward
transformers still computes RMSNorm, the attention softmax, the RoPE tables and DeepSeek's router
in float32). `recipe.toml` is the same architecture as a Switchyard `[model]` section;
tests/test_hf_parity.cpp imports each and compares. The recipe.toml of deepseek_v3 and gpt_oss
were written by hand from their config.json, after the engine gained MLA and the gpt-oss features.

Weights: every matrix normal(0, {wstd}), the embedding normal(0, {estd}), norm gains uniform(0.6, 1.4),
biases normal(0, 0.1), gpt-oss sinks normal(0, 0.5), DeepSeek's e_score_correction_bias
uniform(-0.1, 0.1). A seed is kept only if every token's k-th selection score beats its (k+1)-th
by more than {margin} in every MoE layer (DeepSeek: also the topk_group-th group score beats the
next) and every expert gets a token; zeroing any one parameter (each expert's gate, up and down
separately) moves some logit by more than {sens}.

What the deepseek_v3 and gpt_oss fixtures exercise (transformers' semantics):

- deepseek_v3: 3 layers, the first dense (`first_k_dense_replace` 1, `intermediate_size` 32), then
  MoE. MLA: q = q_b_proj(RMSNorm(q_a_proj(x))) per head [qk_nope 8 | qk_rope 8]; kv_a_proj_with_mqa
  gives [latent 16 | shared rotary key 8], the latent through kv_a_layernorm and kv_b_proj into
  per-head [k_nope 8 | v 8]. `rope_interleave`: the rotary part pairs (2i, 2i+1) and comes out as
  [rotated evens | rotated odds] (the same permutation of q and k, so q.k is unchanged). yarn
  (factor 40 over 4096, beta 32 / 1, mscale = mscale_all_dim = 1): blended inverse frequencies,
  cos/sin unscaled, softmax scale (qk_nope + qk_rope)^-0.5 * (0.1 ln 40 + 1)^2. Router in float32:
  sigmoid(x W^T); choice by sigmoid + e_score_correction_bias; groups (4 of 2) scored by the sum of
  their two best, the best 2 groups' experts eligible, top 3; weights are the unbiased sigmoids,
  renormalised (+1e-20), times 2.5. Shared experts: one SwiGLU of width n_shared_experts (2) x
  moe_intermediate_size (8) = 16, i.e. two experts of width 8 side by side. No MTP layer is saved.
- gpt_oss: attention with biases on q, k, v and o, one learned sink logit per head (softmax over
  [scores, sink], the sink's share dropped); layer 0 sliding (key s visible to query t iff
  t - 4 < s <= t), layer 1 full. RoPE in halves with yarn (factor 32 over 4096, theta 150000):
  cos and sin both times 0.1 ln 32 + 1; softmax scale head_dim^-0.5. Router: x W^T + b, top 4 of
  the logits, softmax over those 4. Experts stored fused and [in, out]: gate_up_proj [E, D, 2F] +
  bias (gate the even columns, up the odd), g = min(gate, limit), u = clamp(up, -limit, limit),
  h = (u + 1) * g * sigmoid(1.702 g), out = h down_proj [E, F, D] + bias; the limit is 1.0 here
  (7.0 in the released models) so that it clamps about 12% of gates and 21% of ups.

| family | seed | min selection margin | float32 vs float64 forward (max abs) | least logit change from zeroing one parameter | bytes |
|---|---|---|---|---|---|
{rows}
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                                  "fixtures", "hf"))
    ap.add_argument("--family", action="append", help="only these (default: all)")
    ap.add_argument("--max-tries", type=int, default=200)
    a = ap.parse_args()
    torch.set_num_threads(1)  # the same reduction order on every machine
    out = os.path.normpath(a.out)
    results = []
    for family, spec in FAMILIES.items():
        if a.family and family not in a.family:
            continue
        results.append(make_family(family, spec, out, a.max_tries))
    if a.family:
        return  # a partial run leaves the README as it was
    rows = "\n".join(
        f"| {r['family']} | {r['seed']} | {r['margin']:.2e}"
        + (f" (groups {r['group_margin']:.2e})" if r["family"] == "deepseek_v3" else "")
        + f" | {r['f32_vs_f64']:.1e} | {r['sensitivity']:.2e} ({r['sensitivity_name']}) | {r['bytes']} |"
        for r in results)
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(README.format(transformers=transformers.__version__, torch=torch.__version__,
                              python=platform.python_version(), batch=BATCH, seq=SEQ, wstd=WEIGHT_STD,
                              estd=EMBED_STD, margin=MARGIN, sens=SENSITIVITY, rows=rows))


if __name__ == "__main__":
    main()
