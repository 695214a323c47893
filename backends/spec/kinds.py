"""The registry of model kinds: what each ``ModelConfig.kind`` plugs into the core.

The core (``forward``, ``init``, ``losses``, ``accounting``) names no kind: it asks ``of(cfg)`` for the
``Kind`` registered under ``cfg.kind`` and calls its hooks. DynaMoE and the MLP register in
``spec.networks``, MoUE in ``spec.moue``; importing ``backends.spec`` imports both, so every kind is
registered before any model is evaluated.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from .config import MODEL_KINDS, ModelConfig
from .routers import switch_loss


class Kind(ABC):
    """The hooks of one model kind: the residual layers between the input embedding and the final
    LayerNorm and head, which the core builds the same way for every kind."""

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
    if name not in MODEL_KINDS:
        raise ValueError(f"cannot register model kind {name!r}: ModelConfig accepts only {', '.join(MODEL_KINDS)}")
    KINDS[name] = kind


def of(cfg: ModelConfig) -> Kind:
    """The registered ``Kind`` of ``cfg.kind``."""
    try:
        return KINDS[cfg.kind]
    except KeyError:
        raise ValueError(f"model kind {cfg.kind!r} is not registered (import backends.spec registers every kind)") from None


def layer_widths(cfg: ModelConfig) -> list[int]:
    """Routing choices per layer: E_l for DynaMoE, E_l + local experts for MoUE, none for the MLP."""
    return of(cfg).layer_widths(cfg)
