"""How a DynaMoE layer evaluates ``sum_i w_i E_i(h)`` (Eq. 6): equal results, different speed.

Every method computes the same sum (only the floating-point summation order differs), written against
``spec.ops``; ``forward.expert_mixture`` calls ``mixture``, which picks one by ``method``:

- ``"batched"``: every expert on every token as one batched product (E, N, d) -> (E, N, d_h) -> (E, N, d),
  weighted and summed over E. The first form of the spec.
- ``"concat"``: the experts side by side as one wide two-layer network: ``relu(h W1' + b1')`` with
  ``W1'`` (d, E d_h), each expert's hidden block scaled by its weight, then one product with ``W2'``
  (E d_h, d) that also sums over the experts, plus ``w b2``. Two plain matrix products, as the dense MLP,
  and no (E, N, d) intermediate: the same FLOPs as ``"batched"`` in far fewer, larger kernels.
- ``"sparse"``: sort the selected (token, expert) pairs by expert, gather their tokens, run each expert
  on its own tokens only, scatter the weighted outputs back (``index_add``). Active FLOPs only, but data-
  dependent shapes: eager backends whose ops declare ``supports_nonzero`` (PyTorch) only; compilers need
  static shapes.

Which one runs is a backend-level setting chosen from measurements (``python -m harness bench --dispatch``
compares them), never a model-config field: ``ops.expert_dispatch`` (a method name, or a dict from the
hidden width d to a method) with ``DEFAULT`` where a backend sets none; ``use(method)`` overrides it
for a measurement.
"""

from __future__ import annotations

import contextlib

from .ops import Ops

METHODS = ("batched", "concat", "sparse")
DEFAULT = Ops.expert_dispatch
_override: list[str] = []


@contextlib.contextmanager
def use(method: str):
    """Evaluate every expert mixture traced inside the block with ``method`` (for measurements)."""
    if method not in METHODS:
        raise ValueError(f"unknown expert dispatch {method!r}: choose one of {', '.join(METHODS)}")
    _override.append(method)
    try:
        yield
    finally:
        _override.pop()


def method(ops, hidden_dim: int) -> str:
    """The dispatch ``ops`` uses for layers of width ``hidden_dim`` (an override from ``use`` first)."""
    if _override:
        return _override[-1]
    choice = ops.expert_dispatch
    if isinstance(choice, dict):
        choice = choice.get(hidden_dim, DEFAULT)
    if choice == "sparse" and not ops.supports_nonzero:
        return DEFAULT
    return choice


def batched(ops, p: dict, h, weights):
    hidden = ops.relu(ops.matmul(ops.expand_dims(h, 0), p["w1"]) + ops.expand_dims(p["b1"], 1))  # (E, N, d_h)
    out = ops.matmul(hidden, p["w2"]) + ops.expand_dims(p["b2"], 1)  # (E, N, d)
    weights = ops.expand_dims(ops.transpose(weights, (1, 0)), 2)  # (E, N, 1)
    return ops.sum(weights * out, axis=0)


def concat(ops, p: dict, h, weights):
    n_experts, d, d_h = ops.shape(p["w1"])
    n_tokens = ops.shape(h)[0]
    w1 = ops.reshape(ops.transpose(p["w1"], (1, 0, 2)), (d, n_experts * d_h))  # [:, e d_h + j] = W1_e[:, j]
    b1 = ops.reshape(p["b1"], (1, n_experts * d_h))
    hidden = ops.reshape(ops.relu(ops.matmul(h, w1) + b1), (n_tokens, n_experts, d_h))
    scaled = ops.reshape(hidden * ops.expand_dims(weights, 2), (n_tokens, n_experts * d_h))
    return ops.matmul(scaled, ops.reshape(p["w2"], (n_experts * d_h, d))) + ops.matmul(weights, p["b2"])


def sparse(ops, p: dict, h, weights):
    """Each expert on its selected tokens only (``weights > 0``); needs ``ops.nonzero``/``index_add``
    (``ops.supports_nonzero``)."""
    n_experts = ops.shape(p["w1"])[0]
    y = h * 0.0
    for e in range(n_experts):
        w_e = weights[:, e]
        rows = ops.nonzero(w_e > 0)
        if ops.shape(rows)[0] == 0:
            continue
        tokens = ops.take_rows(h, rows)
        hidden = ops.relu(ops.matmul(tokens, p["w1"][e]) + p["b1"][e])
        out = (ops.matmul(hidden, p["w2"][e]) + p["b2"][e]) * ops.take_rows(ops.expand_dims(w_e, 1), rows)
        y = ops.index_add(y, rows, out)
    return y


def mixture(ops, p: dict, h, weights):
    """``sum_i w_i E_i(h)`` for tokens ``h`` (N, d), weights (N, E) zero off the selected set."""
    return {"batched": batched, "concat": concat, "sparse": sparse}[method(ops, ops.shape(h)[-1])](ops, p, h, weights)
