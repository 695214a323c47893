"""DynaMoE's dynamic router (``RouterConfig.kind = "dynamic"``): token-level expert selection (Eq. 4-5,
Algorithm 1) and its combine weights (Eq. 6); the other routers: ``spec.routers``.

Written once against the ``ops`` interface (``spec.ops``); called with NumPy arrays it needs no ``ops``.

Decisions the paper left open (evidence: ``../shared/spec/PAPERS.md`` section 1 items 1-3):

- **Percentile rule.** ``P_tau`` is the "linear" interpolation of NumPy's ``percentile`` (method 7 of
  Hyndman & Fan): over ``n`` values sorted ascending ``v_0 <= ... <= v_{n-1}``, ``pos = tau/100 * (n-1)``,
  ``lo = floor(pos)``, ``hi = min(lo + 1, n - 1)``, ``t = pos - lo``; the threshold is
  ``v_lo + (v_hi - v_lo) t`` when ``t < 1/2`` and ``v_hi - (v_hi - v_lo)(1 - t)`` otherwise (NumPy's own
  two-sided lerp, so the NumPy reference equals ``np.percentile`` to the bit). ``lo``, ``hi`` and ``t``
  are Python numbers fixed by the shape, so every backend evaluates the same expression.
- **Scope.** ``"token"`` is Eq. 4 read literally: the percentile of the token's own E_l gates. With
  distinct gates it always selects ``E_l - ceil(tau/100 (E_l - 1))`` experts (8 -> 3, 6 -> 2, 3 -> 1):
  not dynamic. ``"batch"`` (default) takes one threshold over all N x E_l gate values of the layer in
  the batch: the count then varies per token, averages ``(1 - tau/100) E_l`` (2.4 for 8 experts,
  exactly Table 6's first layer) and realises the paper's central claim. Its price: a token's routing
  depends on its batch-mates, so evaluation uses fixed batches (``TrainConfig.eval_batch_size``).
- **Ties.** Eq. 4's ``>=`` is kept: every gate equal to the threshold is selected. The clamps rank the
  experts by gate, higher first, ties broken by the lower expert index.
- **Clamps (Eq. 5).** Fewer than ``k_min`` selected: the top ``k_min`` (Algorithm 1 line 6, the
  minimum-activation guarantee). More than ``k_max``: the top ``k_max``. Because the above-threshold
  set is always a top set, both clamps are one vectorised rule on the ranks:
  ``(g >= P or rank < k_min) and rank < k_max``.
- **Combine input (Eq. 6).** ``softmax(v_S / T)`` over the selected experts, with ``v`` the noisy gate
  probabilities by default (``RouterConfig.combine = "logits"`` uses the logits).
"""

from __future__ import annotations

import math

import numpy as np

from .ops import NumpyOps

_NEG = -1e30  # masks out unselected experts before the max; finite so that no inf enters a gradient


def _numpy_ops(x) -> NumpyOps:
    return NumpyOps(np.asarray(x).dtype if np.asarray(x).dtype.kind == "f" else np.float64)


def percentile_positions(n: int, tau: float) -> tuple[int, int, float]:
    """``(lo, hi, t)`` of the linear-interpolation percentile ``tau`` (percent) of ``n`` sorted values."""
    if n < 1:
        raise ValueError(f"percentile of an empty set (n = {n})")
    pos = float(tau) / 100.0 * (n - 1)
    lo = min(int(math.floor(pos)), n - 1)
    return lo, min(lo + 1, n - 1), pos - lo


def interpolate(ops, sorted_values, n: int, tau: float):
    """The ``tau``-th percentile from values sorted ascending along the last axis (length ``n``)."""
    lo, hi, t = percentile_positions(n, tau)
    v_lo, v_hi = sorted_values[..., lo : lo + 1], sorted_values[..., hi : hi + 1]
    if t < 0.5:
        return v_lo + (v_hi - v_lo) * t
    return v_hi - (v_hi - v_lo) * (1.0 - t)


def gate_threshold(gates, tau: float, scope: str = "batch", ops=None):
    """``P_tau`` of Eq. 4: shape (N, 1) for ``scope="token"``, (1, 1) for ``scope="batch"``."""
    ops = ops or _numpy_ops(gates)
    n_tokens, n_experts = ops.shape(gates)
    if scope == "token":
        return interpolate(ops, ops.sort(gates, axis=-1), n_experts, tau)
    if scope == "batch":
        flat = ops.reshape(gates, (1, n_tokens * n_experts))
        return interpolate(ops, ops.sort(flat, axis=-1), n_tokens * n_experts, tau)
    raise ValueError(f"unknown routing scope {scope!r}: choose 'batch' or 'token'")


def expert_ranks(gates, ops=None):
    """Rank of each expert within its token (0 = highest gate; ties: lower index first), as floats."""
    ops = ops or _numpy_ops(gates)
    n_experts = ops.shape(gates)[-1]
    gi = ops.expand_dims(gates, 2)  # (N, E, 1): the expert being ranked
    gj = ops.expand_dims(gates, 1)  # (N, 1, E): the experts it is compared with
    index = ops.arange(n_experts, like=gates)
    before = ops.to_float(ops.expand_dims(index, 1) > ops.expand_dims(index, 0), gates)  # [i, j] = 1 where j < i
    beaten = ops.to_float(gj > gi, gates) + ops.to_float(gj == gi, gates) * before
    return ops.sum(beaten, axis=-1)


def select_experts(gates, tau: float, k_min: int, k_max: int, *, scope: str = "batch", ops=None):
    """Boolean mask (N, E) of the dynamic selection set S (Eq. 4) bounded by Eq. 5.

    ``gates``: (tokens, experts) gate values (noisy in training, Eq. 7). ``tau`` in percent. Selected:
    ``g_i >= P_tau`` or among the top ``k_min``, and among the top ``k_max`` (see module docstring).
    """
    if not 0.0 < float(tau) < 100.0:
        raise ValueError(f"tau = {tau!r} is invalid: must be a percentile in the open interval (0, 100)")
    if not 1 <= k_min <= k_max:
        raise ValueError(f"k_min = {k_min}, k_max = {k_max} are invalid: need 1 <= k_min <= k_max")
    ops = ops or _numpy_ops(gates)
    ranks = expert_ranks(gates, ops)
    above = gates >= gate_threshold(gates, tau, scope, ops)
    return ops.logical_and(ops.logical_or(above, ranks < k_min), ranks < k_max)


def combine_weights(values, mask, temperature: float, ops=None):
    """Eq. 6 weights ``softmax(v_S / T)`` over the selected experts: zero outside ``mask``, rows sum to 1."""
    if not temperature > 0:
        raise ValueError(f"temperature = {temperature!r} is invalid: must be > 0")
    ops = ops or _numpy_ops(values)
    z = values / temperature
    z_max = ops.max(ops.where(mask, z, _NEG), axis=-1, keepdims=True)
    e = ops.where(mask, ops.exp(ops.where(mask, z - z_max, 0.0)), 0.0)
    return e / ops.sum(e, axis=-1, keepdims=True)


def token_scope_count(num_experts: int, tau: float) -> int:
    """Experts selected per token by ``scope="token"`` when the gates are distinct (before clamps)."""
    lo, _, t = percentile_positions(num_experts, tau)
    return num_experts - (lo if t == 0 else lo + 1)
