"""A deliberately naive, loop-per-token implementation of the spec, independent of ``spec.forward``.

It uses ``np.percentile`` and a stable argsort instead of the spec's interpolation and rank formulas,
so the vectorised reference is checked against a second reading of the same rules.
"""

from __future__ import annotations

import numpy as np

from backends.spec.config import ModelConfig


def _softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


def select_row(g, threshold, k_min, k_max):
    order = np.argsort(-g, kind="stable")  # highest first, ties: lower index first
    chosen = {i for i in range(len(g)) if g[i] >= threshold}
    if len(chosen) < k_min:
        chosen = set(order[:k_min].tolist())
    if len(chosen) > k_max:
        chosen = set(order[:k_max].tolist())
    mask = np.zeros(len(g), dtype=bool)
    mask[list(chosen)] = True
    return mask


def layer(p, h, noise, router):
    n, num_experts = h.shape[0], p["gate"].shape[1]
    k_min, k_max = router.layer_bounds(num_experts)
    logits = h @ p["gate"]
    probs = np.stack([_softmax(row) for row in logits])
    noisy = probs if noise is None else probs + noise
    batch_threshold = np.percentile(noisy, router.tau)
    out = np.zeros_like(h)
    masks = np.zeros((n, num_experts), dtype=bool)
    for t in range(n):
        threshold = batch_threshold if router.scope == "batch" else np.percentile(noisy[t], router.tau)
        mask = select_row(noisy[t], threshold, k_min, k_max)
        values = (noisy[t] if router.combine == "probs" else logits[t])[mask] / router.temperature
        weights = _softmax(values)
        for w, i in zip(weights, np.flatnonzero(mask)):
            hidden = np.maximum(h[t] @ p["w1"][i] + p["b1"][i], 0)
            out[t] += w * (hidden @ p["w2"][i] + p["b2"][i])
        masks[t] = mask
    return out, masks


def forward(params, x, cfg: ModelConfig, noises=None):
    if cfg.task == "lm":
        h = params["embed.weight"][np.asarray(x).reshape(-1)]
    else:
        h = x @ params["input.weight"] + params["input.bias"]
    masks = []
    for l in range(cfg.num_layers):
        pre = f"layers.{l}."
        if cfg.kind == "dynamoe":
            p = {"gate": params[pre + "gate.weight"], **{k: params[pre + "experts." + k] for k in ("w1", "b1", "w2", "b2")}}
            y, m = layer(p, h, None if noises is None else noises[l], cfg.router)
            masks.append(m)
        else:
            f = {k: params[pre + "ffn." + k] for k in ("w1", "b1", "w2", "b2")}
            y = np.maximum(h @ f["w1"] + f["b1"], 0) @ f["w2"] + f["b2"]
        h = h + y
    mu = h.mean(-1, keepdims=True)
    var = ((h - mu) ** 2).mean(-1, keepdims=True)
    h = (h - mu) / np.sqrt(var + cfg.layer_norm_eps) * params["norm.gamma"] + params["norm.beta"]
    logits = h @ params["head.weight"] + params["head.bias"]
    if cfg.task == "lm":
        logits = logits.reshape(*np.shape(x), -1)
    return logits, masks
