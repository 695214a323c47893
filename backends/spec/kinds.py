"""The registry of model kinds: what each ``ModelConfig.kind`` plugs into the core.

The core (``forward``, ``init``, ``losses``, ``accounting``) names no kind: it asks ``of(cfg)`` for the
``Kind`` registered under ``cfg.kind`` and calls its hooks. DynaMoE and the MLP register in
``spec.networks``, MoUE in ``spec.moue``; importing ``backends.spec`` imports both, so every kind is
registered before any model is evaluated.

A backbone other than the MLP's (``ModelConfig.backbone``, e.g. ``"transformer"`` in
``spec.transformer``) registers under its own name; ``of`` then returns it, and it evaluates the
feed-forward of ``cfg.kind`` one layer at a time through that kind's ``block`` (``ffn_of``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from .config import BACKBONES, MODEL_KINDS, ModelConfig
from .routers import switch_loss


class Kind(ABC):
    """The hooks of one model kind: the residual layers between the input embedding and the final
    LayerNorm and head, which the core builds the same way for every kind.

    ``sequence``: the layers read a language model's tokens as sequences, ``h`` (B, T, d) (a Transformer's
    attention), and return them flattened (B*T, d); otherwise every hook sees tokens ``h`` (N, d).
    """

    sequence: bool = False

    @abstractmethod
    def layer_shapes(self, cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
        """Names and shapes of the residual layers' parameters, in ``init.param_shapes`` order."""

    @abstractmethod
    def layers(self, ops, params: dict, h, cfg: ModelConfig, noises=None):
        """The L residual layers on tokens ``h`` (N, d): ``(h_L, routings)``, one ``Routing`` per routed layer."""

    @abstractmethod
    def layer_widths(self, cfg: ModelConfig) -> list[int]:
        """Routing choices per layer (the width of its gates, masks and noise); empty when nothing routes."""

    @abstractmethod
    def layer_flops(self, cfg: ModelConfig, layer: int, active: float | None) -> float:
        """Per-token forward FLOPs of layer ``layer`` with ``active`` experts per token (``None`` unrouted)."""

    def fan_in(self, name: str, shape: tuple[int, ...], cfg: ModelConfig) -> int | None:
        """The initialisation fan-in of a parameter of this kind's own, ``None`` for the core's rule."""
        return None

    def initial_state(self, ops, h, cfg: ModelConfig):
        """The state ``block`` carries from layer to layer for tokens ``h`` (N, d) (``None``: none)."""
        return None

    def block(self, ops, params: dict, layer: int, h, state, cfg: ModelConfig, noise=None):
        """Layer ``layer``'s update ``F_l(h)`` on tokens ``h`` (N, d), without the residual:
        ``(y, routing or None, state)``. What a backbone that interleaves other operators (attention)
        evaluates; the kind's own ``layers`` is ``h + F_l(h)`` layer by layer."""
        raise NotImplementedError(f"{type(self).__name__} has no per-layer block")

    def balance_loss(self, ops, routings: list, cfg: ModelConfig):
        """The auxiliary balancing loss of one forward (unweighted): Switch's per layer, summed."""
        total = None
        for r in routings:
            term = switch_loss(ops, r.probs, r.mask if r.assigned is None else r.assigned)
            total = term if total is None else total + term
        return total


KINDS: dict[str, Kind] = {}


def register(name: str, kind: Kind) -> None:
    """Make ``kind`` the implementation of ``ModelConfig.kind == name``."""
    if name not in MODEL_KINDS + BACKBONES[1:]:
        raise ValueError(f"cannot register model kind {name!r}: ModelConfig accepts only {', '.join(MODEL_KINDS + BACKBONES[1:])}")
    KINDS[name] = kind


def _registered(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"model kind {name!r} is not registered (import backends.spec registers every kind)") from None


def of(cfg: ModelConfig) -> Kind:
    """The registered ``Kind`` of ``cfg``: its backbone's, unless that is the MLP's, else ``cfg.kind``'s."""
    return _registered(cfg.kind if cfg.backbone == "mlp" else cfg.backbone)


def ffn_of(cfg: ModelConfig) -> Kind:
    """The ``Kind`` of ``cfg.kind`` whatever the backbone (the feed-forward a backbone's layers hold)."""
    return _registered(cfg.kind)


def layer_widths(cfg: ModelConfig) -> list[int]:
    """Routing choices per layer: E_l for DynaMoE, E_l + local experts for MoUE, none for the MLP."""
    return of(cfg).layer_widths(cfg)
