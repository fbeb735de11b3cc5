#!/usr/bin/env python3
"""The Switchyard model written again in PyTorch (float64, autograd): the reference the C++
model's hand-written forward and backward passes are tested against (tests/test_reference_torch.cpp).

Usage: /usr/bin/python3 tests/reference/moe_ref.py IN.h5 OUT.h5

IN.h5: root attribute `config` (JSON of the ModelConfig fields), int32 datasets `input_ids` and
`targets` [B, T], and every parameter (plus the optional router-bias buffers) as a dataset named
as in docs/model.md.
OUT.h5: float64 `loss`, `ce`, `aux`, `z` (scalars), `logits` [B*T, V], `grad.<name>` for every
parameter; int32 `route.<layer>.idx` and `route.<layer>.kept` [B*T, top_k] for every MoE layer.

It is written for clarity rather than speed: a per-expert loop, explicit masks, no fused kernels,
so that each line can be checked against docs/model.md. Keep it that way.
"""
import json
import math
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

DT = torch.float64


class Config:
    def __init__(self, d):
        # Fields older inputs may lack: QK-norm and Multi-head Latent Attention off.
        self.__dict__.update(dict(qk_norm="none", q_lora_rank=0, kv_lora_rank=0, qk_nope_head_dim=0,
                                  qk_rope_head_dim=0, v_head_dim=0, n_expert_groups=1, topk_groups=1,
                                  routed_scaling_factor=1.0, sliding_window=0, full_attention_every=0,
                                  attention_sinks=False, attention_bias=False, rope_scaling="none", rope_factor=1.0,
                                  rope_original_max_position=0, yarn_beta_fast=32.0, yarn_beta_slow=1.0,
                                  yarn_truncate=True, yarn_mscale=0.0, yarn_mscale_all_dim=0.0,
                                  router_logit_bias=False, expert_bias=False, swiglu_limit=0.0, swiglu_alpha=1.0))
        self.__dict__.update(d)
        if not self.head_dim:
            self.head_dim = self.d_model // self.n_heads

    def is_moe(self, layer):
        return self.n_experts > 0 and layer >= self.first_dense_layers


def param_shapes(cfg):
    """Every trained parameter's name and shape, in the model's declaration order."""
    D, V, hd = cfg.d_model, cfg.vocab_size, cfg.head_dim
    out = [("embed.weight", (V, D))]
    for i in range(cfg.n_layers):
        p = f"layers.{i}."
        out.append((p + "attn_norm.weight", (D,)))
        out += mla_shapes(cfg, p) if cfg.kv_lora_rank else gqa_shapes(cfg, p)
        out.append((p + "ffn_norm.weight", (D,)))
        if cfg.is_moe(i):
            Fe = cfg.expert_ffn_dim
            out.append((p + "moe.router.weight", (cfg.n_experts, D)))
            if cfg.router_logit_bias:
                out.append((p + "moe.router.logit_bias", (cfg.n_experts,)))
            # Every down projection is stored [in, out] (split by rows under tensor parallelism).
            for e in range(cfg.n_experts):
                q = p + f"moe.experts.{e}."
                out += [(q + "w1", (Fe, D)), (q + "w3", (Fe, D)), (q + "w2", (Fe, D))]
                if cfg.expert_bias:
                    out += [(q + "b13", (2 * Fe,)), (q + "b2", (D,))]
            for s in range(cfg.n_shared_experts):
                q = p + f"moe.shared.{s}."
                out += [(q + "w1", (Fe, D)), (q + "w3", (Fe, D)), (q + "w2", (Fe, D))]
        else:
            out += [(p + "mlp.w1", (cfg.d_ff, D)), (p + "mlp.w3", (cfg.d_ff, D)), (p + "mlp.w2", (cfg.d_ff, D))]
    out.append(("final_norm.weight", (D,)))
    if not cfg.tie_embeddings:
        out.append(("lm_head.weight", (V, D)))
    return out


def gqa_shapes(cfg, p):
    D, H, KV, hd = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    out = [(p + "attn.wq", (H * hd, D)), (p + "attn.wk", (KV * hd, D)), (p + "attn.wv", (KV * hd, D)),
           (p + "attn.wo", (H * hd, D))]  # wo stored [in, out]
    if cfg.attention_bias:
        out += [(p + "attn.bq", (H * hd,)), (p + "attn.bk", (KV * hd,)), (p + "attn.bv", (KV * hd,)),
                (p + "attn.bo", (D,))]
    if cfg.attention_sinks:
        out.append((p + "attn.sinks", (H,)))
    if cfg.qk_norm == "head":
        out += [(p + "attn.q_norm.weight", (hd,)), (p + "attn.k_norm.weight", (hd,))]
    elif cfg.qk_norm == "full":
        out += [(p + "attn.q_norm.weight", (H * hd,)), (p + "attn.k_norm.weight", (KV * hd,))]
    return out


def mla_shapes(cfg, p):
    D, H = cfg.d_model, cfg.n_heads
    qk, kvr, dr = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim, cfg.kv_lora_rank, cfg.qk_rope_head_dim
    if cfg.q_lora_rank:
        out = [(p + "attn.wq_a", (cfg.q_lora_rank, D)), (p + "attn.q_a_norm.weight", (cfg.q_lora_rank,)),
               (p + "attn.wq_b", (H * qk, cfg.q_lora_rank))]
    else:
        out = [(p + "attn.wq", (H * qk, D))]
    return out + [(p + "attn.wkv_a", (kvr + dr, D)), (p + "attn.kv_a_norm.weight", (kvr,)),
                  (p + "attn.wkv_b", (H * (cfg.qk_nope_head_dim + cfg.v_head_dim), kvr)),
                  (p + "attn.wo", (H * cfg.v_head_dim, D))]


def buffer_shapes(cfg):
    """Non-trained inputs: the aux-loss-free balancing bias of each MoE layer (optional)."""
    return [(f"layers.{i}.moe.router.bias", (cfg.n_experts,)) for i in range(cfg.n_layers) if cfg.is_moe(i)]


def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def yarn_mscale(factor, m):
    return 1.0 if factor <= 1 else 0.1 * m * math.log(factor) + 1.0


def rope_tables(cfg, T, dim):
    """cos, sin [T, dim/2]: RoPE at positions 0..T-1, with YaRN's frequency blend and amplitude."""
    half = dim // 2
    inv_freq = cfg.rope_theta ** (-2.0 * torch.arange(half, dtype=DT) / dim)
    amp = 1.0
    if cfg.rope_scaling == "yarn":
        def corr(rot):
            return dim * math.log(cfg.rope_original_max_position / (rot * 2 * math.pi)) / (2 * math.log(cfg.rope_theta))
        low, high = corr(cfg.yarn_beta_fast), corr(cfg.yarn_beta_slow)
        if cfg.yarn_truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001
        keep = 1 - torch.clamp((torch.arange(half, dtype=DT) - low) / (high - low), 0, 1)
        inv_freq = inv_freq / cfg.rope_factor * (1 - keep) + inv_freq * keep
        if cfg.yarn_mscale and cfg.yarn_mscale_all_dim:
            amp = yarn_mscale(cfg.rope_factor, cfg.yarn_mscale) / yarn_mscale(cfg.rope_factor, cfg.yarn_mscale_all_dim)
        else:
            amp = yarn_mscale(cfg.rope_factor, 1.0)
    angle = torch.arange(T, dtype=DT)[:, None] * inv_freq[None, :]  # [T, half]
    return amp * angle.cos(), amp * angle.sin()


def rope(x, cfg):
    """Rotate-half RoPE on x [B, T, heads, hd] at positions 0..T-1."""
    T, hd = x.shape[1], x.shape[3]
    half = hd // 2
    cos, sin = rope_tables(cfg, T, hd)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def softmax_scale(cfg, qk_dim):
    s = 1 / math.sqrt(qk_dim)
    if cfg.rope_scaling == "yarn" and cfg.yarn_mscale_all_dim:
        s *= yarn_mscale(cfg.rope_factor, cfg.yarn_mscale_all_dim) ** 2
    return s


def causal_attention(q, k, v, scale, window=0, sinks=None):
    """q, k [B, T, H, hq], v [B, T, H, hv] -> [B, T, H * hv]. window > 0: query t sees keys
    t - window < s <= t; sinks [H]: a logit per head in each row's softmax, with no value."""
    B, T, H, _ = q.shape
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, T, hd]
    s = q @ k.transpose(-1, -2) * scale
    t_idx = torch.arange(T)
    masked = t_idx[None, :] > t_idx[:, None]
    if window:
        masked = masked | (t_idx[None, :] <= t_idx[:, None] - window)
    s = s.masked_fill(masked, float("-inf"))
    if sinks is not None:
        s = torch.cat([s, sinks.view(1, H, 1, 1).expand(B, H, T, 1)], dim=-1)
    p = torch.softmax(s, dim=-1)
    if sinks is not None:
        p = p[..., :-1]
    o = p @ v
    return o.transpose(1, 2).reshape(B, T, -1)


def layer_window(cfg, layer):
    full = cfg.full_attention_every > 0 and (layer + 1) % cfg.full_attention_every == 0
    return cfg.sliding_window if cfg.sliding_window > 0 and not full else 0


def attention(a, P, p, cfg, layer):
    if cfg.kv_lora_rank:
        return mla(a, P, p, cfg, layer)
    B, T, _ = a.shape
    H, KV, hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    q, k = a @ P[p + "wq"].T, a @ P[p + "wk"].T
    v = a @ P[p + "wv"].T
    if cfg.attention_bias:
        q, k, v = q + P[p + "bq"], k + P[p + "bk"], v + P[p + "bv"]
    if cfg.qk_norm == "full":  # over each token's whole q and k
        q, k = rmsnorm(q, P[p + "q_norm.weight"], cfg.norm_eps), rmsnorm(k, P[p + "k_norm.weight"], cfg.norm_eps)
    q, k = q.view(B, T, H, hd), k.view(B, T, KV, hd)
    if cfg.qk_norm == "head":  # over each head's features, one weight shared by the heads
        q, k = rmsnorm(q, P[p + "q_norm.weight"], cfg.norm_eps), rmsnorm(k, P[p + "k_norm.weight"], cfg.norm_eps)
    q, k = rope(q, cfg), rope(k, cfg)
    v = v.view(B, T, KV, hd)
    # Query head h reads kv head h // (H / KV): repeat each kv head for its consecutive query heads.
    k = k.repeat_interleave(H // KV, dim=2)
    v = v.repeat_interleave(H // KV, dim=2)
    o = causal_attention(q, k, v, softmax_scale(cfg, hd), layer_window(cfg, layer),
                         P[p + "sinks"] if cfg.attention_sinks else None) @ P[p + "wo"]
    return o + P[p + "bo"] if cfg.attention_bias else o


def mla(a, P, p, cfg, layer):
    """Multi-head Latent Attention (docs/model.md): per-head keys and values from a normed latent,
    a rotary tail on q and on one key shared by every head."""
    B, T, _ = a.shape
    H, dn, dr, dv, kvr = cfg.n_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim, cfg.kv_lora_rank
    if cfg.q_lora_rank:
        q = rmsnorm(a @ P[p + "wq_a"].T, P[p + "q_a_norm.weight"], cfg.norm_eps) @ P[p + "wq_b"].T
    else:
        q = a @ P[p + "wq"].T
    q = q.view(B, T, H, dn + dr)
    q = torch.cat([q[..., :dn], rope(q[..., dn:], cfg)], dim=-1)
    kva = a @ P[p + "wkv_a"].T
    kv = (rmsnorm(kva[..., :kvr], P[p + "kv_a_norm.weight"], cfg.norm_eps) @ P[p + "wkv_b"].T).view(B, T, H, dn + dv)
    kpe = rope(kva[..., kvr:].reshape(B, T, 1, dr), cfg).expand(B, T, H, dr)
    k = torch.cat([kv[..., :dn], kpe], dim=-1)
    return causal_attention(q, k, kv[..., dn:], softmax_scale(cfg, dn + dr), layer_window(cfg, layer)) @ P[p + "wo"]


def swiglu(a, P, p, cfg, bias=False):
    g, u = a @ P[p + "w1"].T, a @ P[p + "w3"].T
    if bias:  # b13 = gate biases, then up biases
        F_ = g.shape[-1]
        g, u = g + P[p + "b13"][:F_], u + P[p + "b13"][F_:]
    if cfg.swiglu_limit > 0:  # GPT-OSS: clamp, then g sigmoid(alpha g) (u + 1)
        g, u = g.clamp(max=cfg.swiglu_limit), u.clamp(-cfg.swiglu_limit, cfg.swiglu_limit)
        h = g * torch.sigmoid(cfg.swiglu_alpha * g) * (u + 1)
    else:
        h = F.silu(g) * u
    y = h @ P[p + "w2"]
    return y + P[p + "b2"] if bias else y


def capacity(cfg, n_tokens):
    if cfg.capacity_factor <= 0:
        return -1
    # The same tolerance as the engine (expert_capacity), so 1.0 * 12 * 2 / 4 is exactly 6.
    return math.ceil(cfg.capacity_factor * n_tokens * cfg.top_k / cfg.n_experts - 1e-9)


def moe(a, P, bias, p, cfg):
    """MoE FFN on a [N, D]; returns (out, aux, z, idx, kept)."""
    N = a.shape[0]
    E, k = cfg.n_experts, cfg.top_k
    logits = a @ P[p + "router.weight"].T  # [N, E]
    if cfg.router_logit_bias:
        logits = logits + P[p + "router.logit_bias"]
    if cfg.score_fn == "softmax":
        scores = torch.softmax(logits, dim=-1)
    elif cfg.score_fn == "sigmoid":
        scores = torch.sigmoid(logits)
    else:
        raise ValueError(f"score_fn must be softmax or sigmoid, got {cfg.score_fn!r}")

    # Selection: top k of (scores + bias), ties to the lower expert index. A stable sort of the
    # negated key keeps equal keys in index order. It is piecewise constant: no gradient.
    key = (scores + bias).detach().numpy()
    G = cfg.n_expert_groups
    if G > 1:  # group-limited: only the experts of the topk_groups groups with the best two-sum
        grouped = np.sort(key.reshape(N, G, E // G), axis=2)[:, :, ::-1]
        gscore = grouped[:, :, :2].sum(axis=2)
        top = np.argsort(-gscore, axis=1, kind="stable")[:, :cfg.topk_groups]
        allowed = np.zeros((N, G), dtype=bool)
        np.put_along_axis(allowed, top, True, axis=1)
        key = np.where(np.repeat(allowed, E // G, axis=1), key, -np.inf)
    idx = np.argsort(-key, axis=1, kind="stable")[:, :k]
    idx_t = torch.from_numpy(idx)
    w = scores.gather(1, idx_t)  # [N, k], without the bias
    if cfg.norm_topk_prob:
        w = w / w.sum(dim=-1, keepdim=True)
    w = w * cfg.routed_scaling_factor

    # Capacity: all first choices (slot 0) in token order, then all second choices, ...
    cap = capacity(cfg, N)
    kept = np.zeros((N, k), dtype=np.int32)
    load = np.zeros(E, dtype=np.int64)
    for j in range(k):
        for n in range(N):
            e = idx[n, j]
            if cap < 0 or load[e] < cap:
                kept[n, j] = 1
                load[e] += 1

    out = torch.zeros_like(a)
    for e in range(E):
        rows, slots = np.nonzero((idx == e) & (kept == 1))
        if len(rows) == 0:
            continue
        rows_t, slots_t = torch.from_numpy(rows), torch.from_numpy(slots)
        y = swiglu(a[rows_t], P, p + f"experts.{e}.", cfg, cfg.expert_bias)
        out = out.index_add(0, rows_t, w[rows_t, slots_t].unsqueeze(1) * y)
    for s in range(cfg.n_shared_experts):
        out = out + swiglu(a, P, p + f"shared.{s}.", cfg)

    # Load balance: f counts the router's choices before capacity drops and is a constant.
    f = torch.from_numpy(np.bincount(idx.reshape(-1), minlength=E).astype(np.float64)) / (N * k)
    prob = scores / scores.sum(dim=-1, keepdim=True)
    aux = cfg.aux_loss_coef * E * (f * prob.mean(dim=0)).sum()
    z = cfg.z_loss_coef * torch.logsumexp(logits, dim=-1).pow(2).mean()
    return out, aux, z, idx.astype(np.int32), kept


def forward(cfg, P, buffers, input_ids, targets):
    """The loss and its parts. P: name -> tensor (the parameters); buffers: name -> tensor."""
    B, T = input_ids.shape
    N, D = B * T, cfg.d_model
    x = P["embed.weight"][input_ids.reshape(-1)].view(B, T, D)
    aux_total = torch.zeros((), dtype=DT)
    z_total = torch.zeros((), dtype=DT)
    routes = {}
    for i in range(cfg.n_layers):
        p = f"layers.{i}."
        h = x + attention(rmsnorm(x, P[p + "attn_norm.weight"], cfg.norm_eps), P, p + "attn.", cfg, i)
        a = rmsnorm(h, P[p + "ffn_norm.weight"], cfg.norm_eps)
        if cfg.is_moe(i):
            bias = buffers.get(p + "moe.router.bias", torch.zeros(cfg.n_experts, dtype=DT))
            y, aux, z, idx, kept = moe(a.reshape(N, D), P, bias, p + "moe.", cfg)
            aux_total = aux_total + aux
            z_total = z_total + z
            routes[i] = (idx, kept)
            y = y.view(B, T, D)
        else:
            y = swiglu(a, P, p + "mlp.", cfg)
        x = h + y
    w_out = P["embed.weight"] if cfg.tie_embeddings else P["lm_head.weight"]
    logits = (rmsnorm(x, P["final_norm.weight"], cfg.norm_eps) @ w_out.T).reshape(N, cfg.vocab_size)
    ce = F.cross_entropy(logits, targets.reshape(-1), reduction="mean")
    loss = ce + aux_total + z_total
    return {"loss": loss, "ce": ce, "aux": aux_total, "z": z_total, "logits": logits, "routes": routes}


def load(path):
    """(cfg, params, buffers, input_ids, targets) from IN.h5, checking every name and shape."""
    with h5py.File(path, "r") as f:
        raw = f.attrs["config"]
        cfg = Config(json.loads(raw.decode() if isinstance(raw, bytes) else raw))
        data = {name: f[name][...] for name in f.keys()}
    input_ids = torch.from_numpy(data.pop("input_ids").astype(np.int64))
    targets = torch.from_numpy(data.pop("targets").astype(np.int64))

    def take(name, shape):
        arr = data.pop(name)
        if tuple(arr.shape) != tuple(shape):
            raise ValueError(f"{path}: {name} has shape {arr.shape}, the config implies {shape}")
        return torch.from_numpy(arr.astype(np.float64))

    params, buffers = {}, {}
    for name, shape in param_shapes(cfg):
        if name not in data:
            raise ValueError(f"{path}: parameter {name} is missing")
        params[name] = take(name, shape).requires_grad_(True)
    for name, shape in buffer_shapes(cfg):
        if name in data:
            buffers[name] = take(name, shape)
    if data:
        # A name we do not know means the two models disagree on naming: fail rather than ignore.
        raise ValueError(f"{path}: unexpected datasets {sorted(data)}")
    return cfg, params, buffers, input_ids, targets


def main(argv):
    if len(argv) != 3:
        print(f"usage: {argv[0]} IN.h5 OUT.h5", file=sys.stderr)
        return 2
    cfg, params, buffers, input_ids, targets = load(argv[1])
    r = forward(cfg, params, buffers, input_ids, targets)
    r["loss"].backward()
    with h5py.File(argv[2], "w") as f:
        for key in ("loss", "ce", "aux", "z"):
            f.create_dataset(key, data=np.float64(r[key].item()))
        f.create_dataset("logits", data=r["logits"].detach().numpy())
        for name, t in params.items():
            # An expert that received no token has no gradient path: its gradient is zero.
            g = t.grad if t.grad is not None else torch.zeros_like(t)
            f.create_dataset("grad." + name, data=g.numpy())
        for layer, (idx, kept) in r["routes"].items():
            f.create_dataset(f"route.{layer}.idx", data=idx)
            f.create_dataset(f"route.{layer}.kept", data=kept)
    return 0


if __name__ == "__main__":
    torch.set_default_dtype(DT)
    sys.exit(main(sys.argv))
