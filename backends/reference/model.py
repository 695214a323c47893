"""NumPy float64 forward of the DynaMoE and MoUE models and the MLP baseline, on either backbone
(``spec.forward`` with ``NumpyOps``; the Transformer's probe inputs through ``spec.transformer``)."""

from __future__ import annotations

import numpy as np

from backends.spec import forward as F
from backends.spec import transformer as T
from backends.spec.config import ModelConfig
from backends.spec.losses import training_loss
from backends.spec.ops import NumpyOps
from backends.spec.stats import layer_stats

OPS = NumpyOps(np.float64)


def _as64(params: dict) -> dict:
    return {name: np.asarray(value, dtype=np.float64) for name, value in params.items()}


def _inputs(x, cfg: ModelConfig):
    return np.asarray(x, dtype=np.int64) if cfg.task == "lm" else np.asarray(x, dtype=np.float64)


def forward(params: dict, x, cfg: ModelConfig, noises=None) -> tuple[np.ndarray, list[F.Routing]]:
    """Logits (float64) and per-layer ``Routing`` (gate probabilities, selected mask, weights).

    ``noises``: per-layer gate-noise arrays (N, E_l) for a training-mode forward, else ``None``.
    """
    noises = None if noises is None else [np.asarray(n, dtype=np.float64) for n in noises]
    return F.model_forward(OPS, _as64(params), _inputs(x, cfg), cfg, noises)


def loss(params: dict, x, y, cfg: ModelConfig, noises=None) -> float:
    """The training loss on (x, y): mean cross-entropy, plus ``balance_weight`` times the balancing loss
    when that is > 0 (``spec.losses.training_loss``; what every backend's ``gradients`` differentiates)."""
    logits, routings = forward(params, x, cfg, noises)
    return float(training_loss(OPS, logits, np.asarray(y, dtype=np.int64), routings, cfg))


def routing_stats(routings: list[F.Routing]) -> list[dict]:
    """Per-layer Table 6 statistics (``spec.stats.layer_stats``) of one forward's routings."""
    return [layer_stats(np.asarray(r.mask).sum(axis=0), np.asarray(r.mask).shape[0]) for r in routings]


def forward_with_probes(params: dict, x, cfg: ModelConfig) -> tuple[np.ndarray, list[F.Routing], dict]:
    """A Transformer's evaluation forward with its probe inputs: ``(logits, routings, record)``, ``record``
    holding each layer's ``"attention"`` (B, heads, T, T) and ``"post_attention"`` (B*T, d), float64."""
    return T.forward_with_probes(OPS, _as64(params), _inputs(x, cfg), cfg)
