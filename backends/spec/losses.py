"""The training objective every backend differentiates: mean cross-entropy plus ``balance_weight`` times
the kind's auxiliary balancing loss (Switch's per layer, ``spec.routers``; UELB for MoUE, ``spec.moue``)."""

from __future__ import annotations

from .config import ModelConfig
from .forward import cross_entropy, head_sums, linear_cross_entropy, model_forward, model_hidden
from .kinds import of
from .routers import Routing


def aux_loss(ops, routings: list[Routing], cfg: ModelConfig):
    """The auxiliary balancing loss of one forward (unweighted), by ``cfg.kind`` (``Kind.balance_loss``)."""
    return of(cfg).balance_loss(ops, routings, cfg)


def with_balance(ops, loss, routings: list[Routing], cfg: ModelConfig):
    """``loss + balance_weight * aux_loss`` (when ``balance_weight`` > 0 and there are routings)."""
    weight = float(cfg.router.balance_weight)
    if weight > 0 and routings:
        loss = loss + weight * aux_loss(ops, routings, cfg)
    return loss


def training_loss(ops, logits, labels, routings: list[Routing], cfg: ModelConfig):
    """Mean cross-entropy + ``balance_weight * aux_loss`` (when > 0): the definition."""
    return with_balance(ops, cross_entropy(ops, logits, labels), routings, cfg)


def _flat(ops, labels):
    shape = ops.shape(labels)
    return labels if len(shape) == 1 else ops.reshape(labels, (shape[0] * shape[1],))


def model_loss(ops, params: dict, x, labels, cfg: ModelConfig, noises=None):
    """``training_loss`` of the model on ``(x, labels)``, as the backends differentiate it. Language
    modelling: the head's cross-entropy chunk by chunk with its own gradient (``forward.linear_cross_entropy``
    on ``forward.model_hidden``), never the tokens x vocabulary logits; classification: on the logits."""
    if cfg.task != "lm":
        logits, routings = model_forward(ops, params, x, cfg, noises)
        return training_loss(ops, logits, labels, routings, cfg)
    h, routings = model_hidden(ops, params, x, cfg, noises)
    loss = linear_cross_entropy(ops, h, params["head.weight"], params["head.bias"], _flat(ops, labels))
    return with_balance(ops, loss, routings, cfg)


def evaluation_sums(ops, params: dict, x, labels, cfg: ModelConfig):
    """``(summed cross-entropy, correct top-1 predictions, routings)`` of an evaluation-mode forward
    (no noise, no balancing term), the head chunk by chunk (``forward.head_sums``)."""
    h, routings = model_hidden(ops, params, x, cfg)
    loss_sum, correct = head_sums(ops, h, params["head.weight"], params["head.bias"], _flat(ops, labels))
    return loss_sum, correct, routings
