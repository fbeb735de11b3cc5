#!/usr/bin/env python3
"""PyTorch eager on the GPU benchmark's model and batch: the baseline bench_cuda is compared with.

    python3 bench/cuda/torch_eager.py bench/cuda/moe-1b.toml [--steps N] [--warmup N]
        [--device cuda|cpu] [--precision bf16|fp32] [--set section.key=value ...]

It reads the recipe's [model], [optim] and [train] as bench_cuda does (the [model] defaults are
engine/model_config.h's), builds the model of docs/model.md in plain PyTorch, the way a user of
Hugging Face's Mixtral would write it (nn.Linear layers, RMSNorm in float32, rotate-half RoPE,
GQA causal attention through scaled_dot_product_attention, a softmax top-k router, the SwiGLU
experts run one after another on the rows routed to each), and trains on random tokens with
AdamW on float32 master weights, under bf16 autocast on CUDA. It times `--steps` steps after
`--warmup` steps (torch.cuda.synchronize around the timer) and prints one markdown row in
bench/RESULTS.md's GPU table: tokens/s, MFU with the project's FLOPs per token (docs/model.md:
6 N_active + 12 L H hd T) against 989 TF/s and against torch's own bf16 matmul peak measured in
the same run, and peak memory (torch.cuda.max_memory_allocated; peak RSS on CPU).

The router runs in float32 as in the engine (docs/cuda.md, mixed precision). Capacity (token
dropping) and the aux-loss-free router bias are not implemented: the benchmark is dropless.
On CPU (`--device cpu`, fp32 unless `--precision bf16`) it is a smoke test with small shapes:
    python3 bench/cuda/torch_eager.py bench/cuda/moe-1b.toml --device cpu --steps 2 \\
        --set model.d_model=64 --set model.n_layers=2 --set model.vocab_size=256 ...
"""
import argparse
import datetime
import math
import os
import resource
import subprocess
import sys
import time
import tomllib

import torch
import torch.nn as nn
import torch.nn.functional as F

H100_DENSE_BF16 = 989e12

# engine/model_config.h's defaults, for the keys a recipe leaves out.
MODEL_DEFAULTS = dict(vocab_size=256, d_model=256, n_layers=4, n_heads=8, n_kv_heads=4, head_dim=0,
                      rope_theta=10000.0, seq_len=256, norm_eps=1e-5, tie_embeddings=False, init_std=0.02,
                      d_ff=1024, first_dense_layers=0, n_experts=8, top_k=2, expert_ffn_dim=512,
                      n_shared_experts=0, score_fn="softmax", norm_topk_prob=True, capacity_factor=0.0,
                      aux_loss_coef=0.01, z_loss_coef=0.001, router_bias_update_rate=0.0)
# bench_cuda's AdamW: the recipe's lr, AdamWArgs' defaults for the rest (engine/backend.h).
OPTIM_DEFAULTS = dict(lr=3e-4, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.0)
TRAIN_DEFAULTS = dict(seed=1, micro_batch=8)


class Config:
    def __init__(self, model):
        self.__dict__.update(model)
        if not self.head_dim:
            self.head_dim = self.d_model // self.n_heads

    def is_moe(self, layer):
        return self.n_experts > 0 and layer >= self.first_dense_layers


def parse_value(text):
    """A --set value as TOML reads it (7, 1e-3, true, "x"), or the bare text as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def load_recipe(path, overrides):
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot:
            sys.exit(f"torch_eager: --set wants section.key=value, got {item!r}")
        raw.setdefault(section, {})[name] = parse_value(value)
    sections = {}
    for section, defaults in (("model", MODEL_DEFAULTS), ("optim", OPTIM_DEFAULTS), ("train", TRAIN_DEFAULTS)):
        given = raw.get(section, {})
        unknown = sorted(set(given) - set(defaults)) if section == "model" else []
        if unknown:
            sys.exit(f"torch_eager: unknown [model] keys {unknown} (engine/model_config.h has {sorted(defaults)})")
        sections[section] = {**defaults, **{k: v for k, v in given.items() if k in defaults}}
    cfg = Config(sections["model"])
    if cfg.capacity_factor > 0 or cfg.router_bias_update_rate > 0:
        sys.exit("torch_eager: capacity_factor and router_bias_update_rate are not implemented (dropless only)")
    if cfg.score_fn not in ("softmax", "sigmoid"):
        sys.exit(f"torch_eager: score_fn must be softmax or sigmoid, got {cfg.score_fn!r}")
    name = os.path.splitext(os.path.basename(path))[0]
    return name, cfg, sections["optim"], sections["train"]


# ---- the model (docs/model.md) --------------------------------------------------------------------
class RMSNorm(nn.Module):
    """In float32 whatever the input's type, as Hugging Face's LlamaRMSNorm."""

    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        return self.weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps))


def rope_tables(cfg, device):
    half = cfg.head_dim // 2
    inv_freq = cfg.rope_theta ** (-2.0 * torch.arange(half, dtype=torch.float64) / cfg.head_dim)
    angle = torch.arange(cfg.seq_len, dtype=torch.float64)[:, None] * inv_freq[None, :]  # [T, hd/2]
    return angle.cos().float().to(device), angle.sin().float().to(device)


def rope(x, cos, sin):
    """Rotate-half RoPE on x [B, T, heads, hd]: pair (i, i + hd/2)."""
    T, half = x.shape[1], x.shape[3] // 2
    c, s = cos[None, :T, None, :].to(x.dtype), sin[None, :T, None, :].to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)


HAVE_SDPA = hasattr(F, "scaled_dot_product_attention")  # torch >= 2.0


def causal_attention(q, k, v):
    """q, k, v [B, H, T, hd] (kv heads already repeated): softmax(q k^T / sqrt(hd)) v over s <= t."""
    if HAVE_SDPA:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    T = q.shape[2]
    s = (q @ k.transpose(-1, -2)).float() / math.sqrt(q.shape[-1])
    future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
    return torch.softmax(s.masked_fill(future, float("-inf")), dim=-1).to(v.dtype) @ v


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        D, H, KV, hd = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.H, self.KV, self.hd = H, KV, hd
        self.wq = nn.Linear(D, H * hd, bias=False)
        self.wk = nn.Linear(D, KV * hd, bias=False)
        self.wv = nn.Linear(D, KV * hd, bias=False)
        self.wo = nn.Linear(H * hd, D, bias=False)

    def forward(self, a, cos, sin):
        B, T, _ = a.shape
        q = rope(self.wq(a).view(B, T, self.H, self.hd), cos, sin)
        k = rope(self.wk(a).view(B, T, self.KV, self.hd), cos, sin)
        v = self.wv(a).view(B, T, self.KV, self.hd)
        # Query head h reads kv head h // (H / KV), as Hugging Face's repeat_kv.
        k, v = (t.repeat_interleave(self.H // self.KV, dim=2) for t in (k, v))
        o = causal_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.wo(o.transpose(1, 2).reshape(B, T, self.H * self.hd))


class SwiGLU(nn.Module):
    def __init__(self, d, f):
        super().__init__()
        self.w1 = nn.Linear(d, f, bias=False)
        self.w3 = nn.Linear(d, f, bias=False)
        self.w2 = nn.Linear(f, d, bias=False)

    def forward(self, a):
        return self.w2(F.silu(self.w1(a)) * self.w3(a))


class MoE(nn.Module):
    """Top-k router and a loop over the experts, as Hugging Face's MixtralSparseMoeBlock."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.router = nn.Linear(cfg.d_model, cfg.n_experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(cfg.d_model, cfg.expert_ffn_dim) for _ in range(cfg.n_experts))
        self.shared = nn.ModuleList(SwiGLU(cfg.d_model, cfg.expert_ffn_dim) for _ in range(cfg.n_shared_experts))

    def forward(self, a):
        """a [N, D] -> (out [N, D], aux + z)."""
        cfg, N = self.cfg, a.shape[0]
        E, k = cfg.n_experts, cfg.top_k
        with torch.autocast(device_type=a.device.type, enabled=False):  # the router in float32
            logits = F.linear(a.float(), self.router.weight.float())
            scores = torch.softmax(logits, dim=-1) if cfg.score_fn == "softmax" else torch.sigmoid(logits)
            w, idx = torch.topk(scores, k, dim=-1)
            if cfg.norm_topk_prob:
                w = w / w.sum(dim=-1, keepdim=True)
            # Load balance (docs/model.md): f_e the share of assignments (a constant), P_e the mean
            # normalised score; router z-loss on the logits.
            f = torch.bincount(idx.reshape(-1), minlength=E).float() / (N * k)
            prob = scores / scores.sum(dim=-1, keepdim=True)
            aux = cfg.aux_loss_coef * E * (f * prob.mean(dim=0)).sum()
            z = cfg.z_loss_coef * torch.logsumexp(logits, dim=-1).pow(2).mean()
        out = torch.zeros_like(a)
        mask = F.one_hot(idx, E).permute(2, 1, 0)  # [E, k, N]
        for e, expert in enumerate(self.experts):
            slot, rows = torch.where(mask[e])
            if rows.numel() == 0:
                continue
            y = expert(a[rows]) * w[rows, slot, None].to(a.dtype)
            out.index_add_(0, rows, y.to(out.dtype))
        for s in self.shared:
            out = out + s(a)
        return out, aux + z


class Block(nn.Module):
    def __init__(self, cfg, layer):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.moe = MoE(cfg) if cfg.is_moe(layer) else None
        self.mlp = None if self.moe else SwiGLU(cfg.d_model, cfg.d_ff)

    def forward(self, x, cos, sin):
        h = x + self.attn(self.attn_norm(x), cos, sin)
        a = self.ffn_norm(h)
        if self.moe is None:
            return h + self.mlp(a), None
        B, T, D = a.shape
        y, extra = self.moe(a.reshape(B * T, D))
        return h + y.view(B, T, D), extra


class Model(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.final_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.normal_(p, std=cfg.init_std)

    def forward(self, ids, targets, cos, sin):
        x = self.embed(ids)
        extra = torch.zeros((), device=ids.device)
        for layer in self.layers:
            x, e = layer(x, cos, sin)
            if e is not None:
                extra = extra + e
        w_out = self.embed.weight if self.lm_head is None else self.lm_head.weight
        logits = F.linear(self.final_norm(x), w_out)
        ce = F.cross_entropy(logits.reshape(-1, self.cfg.vocab_size).float(), targets.reshape(-1))
        return ce + extra


def active_params_per_token(cfg):
    """docs/model.md's N_active: the weights one token multiplies by."""
    D, H, KV, hd = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    n = cfg.n_layers * (D * H * hd + 2 * D * KV * hd + H * hd * D)
    for i in range(cfg.n_layers):
        if cfg.is_moe(i):
            n += cfg.n_experts * D + (cfg.top_k + cfg.n_shared_experts) * 3 * D * cfg.expert_ffn_dim
        else:
            n += 3 * D * cfg.d_ff
    return n + cfg.vocab_size * D  # the LM head, counted also when tied


def flops_per_token(cfg):
    return 6.0 * active_params_per_token(cfg) + 12.0 * cfg.n_layers * cfg.n_heads * cfg.head_dim * cfg.seq_len


# ---- measurement ------------------------------------------------------------------------------------
def matmul_peak(device, dtype, size=8192, reps=5):
    """Best FLOP/s of a torch.matmul at size^3 (the first run warms up)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = 0.0
    for r in range(reps):
        t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0.record()
        torch.matmul(a, b)
        t1.record()
        t1.synchronize()
        if r > 0:
            best = max(best, 2.0 * size ** 3 / (t0.elapsed_time(t1) * 1e-3))
    return best


def code_version():
    """What bench_cuda prints: git describe --always --dirty."""
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        return subprocess.run(["git", "describe", "--always", "--dirty"], cwd=here, capture_output=True,
                              text=True, check=True).stdout.strip() or "unknown"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recipe")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (bench_cuda: 2)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--precision", choices=["bf16", "fp32"], help="autocast type (default: bf16 on cuda, fp32 on cpu)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--no-peak", action="store_true", help="skip the matmul peak measurement")
    args = ap.parse_args(argv)
    name, cfg, optim, train = load_recipe(args.recipe, args.set)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("torch_eager: torch.cuda.is_available() is False (use --device cpu for the smoke test)")
    device = torch.device(args.device)
    precision = args.precision or ("bf16" if args.device == "cuda" else "fp32")
    torch.manual_seed(train["seed"])

    peak_bf16 = peak_f32 = 0.0
    if args.device == "cuda":
        if not args.no_peak:
            peak_bf16 = matmul_peak(device, torch.bfloat16)
            peak_f32 = matmul_peak(device, torch.float32)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = Model(cfg).to(device)  # float32 master weights
    opt = torch.optim.AdamW(model.parameters(), lr=optim["lr"], betas=(optim["beta1"], optim["beta2"]),
                            eps=optim["eps"], weight_decay=optim["weight_decay"])
    cos, sin = rope_tables(cfg, device)
    B, T = train["micro_batch"], cfg.seq_len
    gen = torch.Generator(device="cpu").manual_seed(train["seed"] + 1000)

    def sync():
        if args.device == "cuda":
            torch.cuda.synchronize()

    seconds, loss = 0.0, float("nan")
    for s in range(-args.warmup, args.steps):
        ids = torch.randint(cfg.vocab_size, (B, T), generator=gen).to(device)
        targets = torch.randint(cfg.vocab_size, (B, T), generator=gen).to(device)
        sync()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=args.device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(ids, targets, cos, sin)
        out.backward()
        opt.step()
        sync()
        if s >= 0:
            seconds += time.perf_counter() - t0
        loss = out.item()
    if not math.isfinite(loss):
        sys.exit(f"torch_eager: the loss is {loss}")

    tokens = B * T
    tps = tokens * args.steps / seconds if seconds > 0 else float("nan")
    flops = tps * flops_per_token(cfg)
    params = sum(p.numel() for p in model.parameters())
    if args.device == "cuda":
        dev_name = torch.cuda.get_device_name(device)
        mem = f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB"
        mfu_peak = (f"{100 * flops / peak_bf16:.1f}% (bf16 peak {peak_bf16 / 1e12:.0f} TF/s; fp32 {peak_f32 / 1e12:.0f})"
                    if peak_bf16 else "not measured")
    else:
        dev_name = "CPU"
        mem = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB RSS"
        mfu_peak = "n/a"
    attn = "SDPA" if HAVE_SDPA else "hand-written attention"
    label = f"{name}: PyTorch {torch.__version__} eager, {'bf16 autocast' if precision == 'bf16' else 'fp32'}, {attn}"
    print(f"torch_eager: {args.steps} steps of {tokens} tokens in {seconds:.3f} s, last loss {loss:.4f}", file=sys.stderr)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    size = f"{params / 1e9:.2f}B" if params >= 1e8 else f"{params / 1e6:.2f}M"
    print(f"| {date} | {dev_name} | {code_version()} | {label} | {size} | {tokens} | {tps:.0f} | "
          f"{100 * flops / H100_DENSE_BF16:.1f}% | {mfu_peak} | {mem} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
