"""The optimiser as the paper runs it (Section 5.3): AdamW with cosine annealing, one formula for all.

``learning_rate`` is evaluated on the host and handed to every backend each step. ``adamw_step`` is the
update (decoupled weight decay, Loshchilov & Hutter 2019, as in ``torch.optim.AdamW``) written once
against ``spec.ops``: the Keras and MLX optimisers evaluate it with their ops, PyTorch's built-in AdamW
is tested equal to it, and ``adamw_update`` is it on NumPy arrays.
"""

from __future__ import annotations

import math

import numpy as np

from .config import TrainConfig
from .ops import NumpyOps

_NUMPY = NumpyOps()


def learning_rate(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Cosine annealing from ``cfg.lr`` at step 0 to 0 at ``total_steps``, per optimiser step."""
    if total_steps < 1 or not 0 <= step <= total_steps:
        raise ValueError(f"step {step} outside [0, total_steps = {total_steps}]")
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))


def bias_corrections(step, cfg: TrainConfig):
    """``(1 - b1^t, 1 - b2^t)`` at the 1-based step ``t`` (a number, or an array of a compiled step)."""
    return 1.0 - cfg.beta1**step, 1.0 - cfg.beta2**step


def adamw_step(ops, param, grad, m, v, lr, corrections, cfg: TrainConfig):
    """One AdamW step: returns ``(param, m, v)``; ``corrections`` are ``bias_corrections(t)``.

    ``p <- p (1 - lr wd)``; ``m <- b1 m + (1 - b1) g``; ``v <- b2 v + (1 - b2) g^2``;
    ``p <- p - lr m_hat / (sqrt(v_hat) + eps)`` with ``m_hat = m / (1 - b1^t)``, ``v_hat = v / (1 - b2^t)``.
    """
    c1, c2 = corrections
    param = param * (1.0 - lr * cfg.weight_decay)
    m = cfg.beta1 * m + (1.0 - cfg.beta1) * grad
    v = cfg.beta2 * v + (1.0 - cfg.beta2) * grad * grad
    return param - lr * (m / c1) / (ops.sqrt(v / c2) + cfg.eps), m, v


def adamw_update(param, grad, m, v, step: int, lr: float, cfg: TrainConfig):
    """``adamw_step`` on NumPy arrays at the 1-based ``step``."""
    return adamw_step(_NUMPY, param, grad, m, v, lr, bias_corrections(step, cfg), cfg)


def optimizer_state_names(param_names) -> list[str]:
    """The names of an optimiser state as backends export it: ``steps`` (AdamW steps taken), then
    ``m.<param>`` and ``v.<param>`` (first and second moments) for every parameter."""
    return ["steps", *(f"{moment}.{name}" for name in param_names for moment in ("m", "v"))]


def check_optimizer_state(state: dict, shapes: dict) -> None:
    """Refuse an optimiser state that does not fit a model whose parameters have ``shapes`` (spec names
    to shapes, ``init.param_shapes``): a missing or unknown name, or a moment of another shape."""
    expected = optimizer_state_names(shapes)
    missing, unknown = [n for n in expected if n not in state], sorted(set(state) - set(expected))
    if missing or unknown:
        raise ValueError(
            f"optimiser state does not fit the model: missing {missing[:3]}, unknown {unknown[:3]} (a checkpoint of another config?)"
        )
    for name in expected[1:]:
        param = name.split(".", 1)[1]
        if np.shape(state[name]) != tuple(shapes[param]):
            raise ValueError(f"optimiser state {name!r} has shape {np.shape(state[name])}, the parameter has {tuple(shapes[param])}")
