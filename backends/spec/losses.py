"""The training objective every backend differentiates: mean cross-entropy plus ``balance_weight`` times
the kind's auxiliary balancing loss (Switch's per layer, ``spec.routers``; UELB for MoUE, ``spec.moue``)."""

from __future__ import annotations

from .config import ModelConfig
from .forward import cross_entropy
from .kinds import of
from .routers import Routing


def aux_loss(ops, routings: list[Routing], cfg: ModelConfig):
    """The auxiliary balancing loss of one forward (unweighted), by ``cfg.kind`` (``Kind.balance_loss``)."""
    return of(cfg).balance_loss(ops, routings, cfg)


def training_loss(ops, logits, labels, routings: list[Routing], cfg: ModelConfig):
    """Mean cross-entropy + ``balance_weight * aux_loss`` (when > 0)."""
    loss = cross_entropy(ops, logits, labels)
    weight = float(cfg.router.balance_weight)
    if weight > 0 and routings:
        loss = loss + weight * aux_loss(ops, routings, cfg)
    return loss
