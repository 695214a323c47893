"""The Transformer probes of a trained run (the DynaMoE paper's Section 5.4, ``backends.spec.probes``),
for the worker's summary: per layer, on ``PROBE_WINDOWS`` held-out windows.

The windows are the first ``PROBE_WINDOWS`` of the test split, in order (no randomness), evaluated in one
batch by the backend's ``transformer.forward_with_probes`` (evaluation mode: no gate noise). Per layer:

- ``attention_entropy`` (nats) and ``attention_distance`` (positions): the per-head values averaged over heads;
- ``head_specialisation``: mean pairwise Jensen-Shannon divergence of the heads, in [0, 1];
- ``feature_load``: the participation ratio of the post-attention representations ``u_l`` (Eq. 27);
- ``capacity``: mean active experts per token times the expert width (the routed width a token sees; the
  dense block's width ``mlp_hidden`` for the MLP feed-forward, one "expert" always active);
- ``superposition_pressure``: ``feature_load / capacity`` (Eq. 30);
- ``avg_active`` and ``entropy_bits``: the layer's routing on the same windows (``spec.stats.layer_stats``).
"""

from __future__ import annotations

import importlib

import numpy as np

from backends.spec import probes
from backends.spec.stats import layer_stats

PROBE_WINDOWS = 8
PROBE_FIELDS = ("attention_entropy", "attention_distance", "head_specialisation", "feature_load", "superposition_pressure")


def layer_probes(attention, post_attention, mask, cfg) -> dict:
    """One layer's probes from its attention (B, heads, T, T), ``u_l`` (B*T, d) and selected mask (B*T, E) or ``None``."""
    active = np.ones(len(post_attention)) if mask is None else np.asarray(mask).sum(axis=1)
    width = cfg.mlp_hidden if mask is None else cfg.expert_hidden
    out = {
        "attention_entropy": float(np.mean(probes.attention_entropy(attention))),
        "attention_distance": float(np.mean(probes.attention_distance(attention))),
        "head_specialisation": float(probes.head_specialisation(attention)),
        "feature_load": float(probes.participation_ratio(post_attention)),
        "capacity": float(active.mean() * width),
    }
    out["superposition_pressure"] = float(probes.superposition_pressure(post_attention, active, width)) if active.mean() > 0 else None
    if mask is not None:
        stats = layer_stats(np.asarray(mask).sum(axis=0), len(post_attention))
        out.update(avg_active=stats["avg_active"], entropy_bits=stats["entropy_bits"])
    return out


def probe_summary(backend, model, cfg, x_test, windows: int = PROBE_WINDOWS) -> list[dict] | None:
    """Per-layer probes of a Transformer run (module docstring); ``None`` for the MLP backbone."""
    if cfg.backbone != "transformer":
        return None
    module = importlib.import_module(f"{backend.__name__}.transformer")
    _, masks, record = module.forward_with_probes(model, np.asarray(x_test[:windows]))
    routed = iter(masks)
    return [
        layer_probes(a, u, None if cfg.kind == "mlp" else next(routed), cfg) for a, u in zip(record["attention"], record["post_attention"])
    ]


def add_probes(summary: dict, backend, model, config, data) -> None:
    """Put a Transformer run's per-layer probes into its worker summary (``"probes"``); nothing otherwise."""
    found = probe_summary(backend, model, config.model, data.x_test)
    if found is not None:
        summary["probes"] = found
