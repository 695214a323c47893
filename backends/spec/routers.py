"""Every router of the harness, chosen by ``RouterConfig.kind``, written once against ``spec.ops``.

DynaMoE (Eq. 4-7, ``spec.dynamic``) and the baselines the paper lacked (its Section 7.10):

- ``"topk"``: fixed top-K (the paper's Eq. 2-3): the ``top_k`` highest gates, weights renormalised over
  them, ``w_i = g_i / sum_{j in S} g_j`` (``../shared/spec/DYNAMOE.md`` section 3: "weights
  renormalised"). No capacity.
- ``"switch"`` (Fedus et al. 2022): top-1, ``w_i = g_i`` (Switch Eq. 2, not renormalised), with capacity.
- ``"gshard"`` (Lepikhin et al. 2021): top-2, ``w = g_S / (g_1 + g_2)`` normalised over both choices
  *before* dropping (GShard's Algorithm 1: a token that loses its second expert keeps ``g_1 / (g_1 + g_2)``).
  GShard's random dispatch of the second expert is left out (deterministic; it would need more noise).
- ``"expert_choice"`` (Zhou et al. 2022): each expert takes the ``C`` tokens with its highest gates,
  ``w = g`` (EC's gating matrix is the softmax scores of the chosen pairs). A token no expert chose is
  dropped. EC's "capacity factor" c (average experts per token) is ``capacity_factor * top_k`` here.

Shared decisions (the papers differ in where their noise goes; ours isolates the routing rule):

- **Noise.** Every router gets DynaMoE's Eq. 7 noise on the gate probabilities in training (the same
  ``spec.rng.gate_noise`` arrays, (N, E)); the *selection* uses the noisy gates, the baselines' *weights*
  the clean gates (so weights stay positive; Switch and GShard weight with their gates). ``noise_std = 0``
  switches it off for every router.
- **Ties** in a token's gates: lower expert index first (``spec.dynamic.expert_ranks``). Expert choice
  keeps every token equal to an expert's C-th largest gate (Eq. 4's ``>=``, so at least C).
- **Capacity** ``C = min(N, ceil(capacity_factor * N * k / E))`` tokens an expert (k = 1 Switch, 2 GShard,
  ``top_k`` expert choice). Switch and GShard fill it in token order (Switch's and GShard's cumulative
  sum of the dispatch mask), all first choices before any second choice; a choice past ``C`` is dropped.
  A token with every choice dropped has all-zero weights: its layer output is 0 and the residual passes
  ``h`` through unchanged.
- **Balancing loss** (``aux_loss``): Switch's ``E * sum_i f_i P_i`` per layer, with ``P_i`` the mean
  (clean) gate of expert i and ``f_i`` expert i's share of the layer's *assignments before dropping*
  (for top-1 exactly Switch's fraction of tokens; for k > 1 normalised to sum to 1, so a balanced layer
  scores 1 for every router). Summed over the layers (as Switch and GShard add one term a layer) and
  multiplied by ``balance_weight`` in the training loss (``spec.losses``). MoUE uses UELB (``spec.moue``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .config import RouterConfig
from .dynamic import combine_weights, expert_ranks, select_experts


@dataclass
class Routing:
    """What one layer decided, all (N, E): gate probabilities, the experts that process each token
    (``mask``, after dropping), combine weights (zero off ``mask``), and the assignments before capacity
    (``assigned``; the load ``f`` of the balancing loss). ``assigned`` is ``mask`` for routers without capacity."""

    probs: Any
    mask: Any
    weights: Any
    assigned: Any = None


def softmax(ops, x):
    e = ops.exp(x - ops.max(x, axis=-1, keepdims=True))
    return e / ops.sum(e, axis=-1, keepdims=True)


def capacity(tokens: int, experts: int, k: int, factor: float) -> int:
    """Tokens one expert may take: ``min(N, ceil(factor * N * k / E))`` (at least 1)."""
    return max(1, min(tokens, math.ceil(factor * tokens * k / experts - 1e-9)))


def choices_within_capacity(ops, ranks, k: int, cap: int):
    """Float (N, E) mask of the first ``k`` choices (``ranks`` < k) that fit in capacity ``cap``.

    Choice j of every token is placed after all kept choices < j, in token order: its position in expert
    e is (kept earlier choices of e) + (tokens before it whose choice j is e).
    """
    kept, filled = None, 0.0
    for j in range(k):
        choice = ops.to_float(ranks == float(j), ranks)
        position = ops.cumsum(choice, axis=0) - choice + filled
        kept_j = choice * ops.to_float(position < float(cap), ranks)
        filled = filled + ops.sum(kept_j, axis=0, keepdims=True)
        kept = kept_j if kept is None else kept + kept_j
    return kept


def _top_choices(ops, noisy, probs, router: RouterConfig):
    n_tokens, n_experts = ops.shape(noisy)
    k = min({"topk": router.top_k, "switch": 1, "gshard": 2}[router.kind], n_experts)
    ranks = expert_ranks(noisy, ops)
    assigned = ranks < float(k)
    if router.kind == "topk":
        mask = assigned
    else:
        cap = capacity(n_tokens, n_experts, k, router.capacity_factor)
        mask = choices_within_capacity(ops, ranks, k, cap) > 0.5
    if router.kind == "switch":
        return mask, assigned, ops.where(mask, probs, 0.0)
    chosen = ops.where(assigned, probs, 0.0)
    return mask, assigned, ops.where(mask, chosen / ops.sum(chosen, axis=-1, keepdims=True), 0.0)


def _expert_choice(ops, noisy, probs, router: RouterConfig):
    n_tokens, n_experts = ops.shape(noisy)
    cap = capacity(n_tokens, n_experts, router.top_k, router.capacity_factor)
    by_expert = ops.sort(ops.transpose(noisy, (1, 0)), axis=-1)  # (E, N) ascending
    threshold = ops.transpose(by_expert[..., n_tokens - cap : n_tokens - cap + 1], (1, 0))  # (1, E): C-th largest
    mask = noisy >= threshold
    return mask, mask, ops.where(mask, probs, 0.0)


def route_logits(ops, logits, noise, router: RouterConfig) -> Routing:
    """Gate (Eq. 1), noise (Eq. 7) and the selection and weights of ``router.kind`` for logits (N, E)."""
    probs = softmax(ops, logits)
    noisy = probs if noise is None else probs + noise
    if router.kind == "dynamic":
        k_min, k_max = router.layer_bounds(ops.shape(logits)[-1])
        mask = select_experts(noisy, router.tau, k_min, k_max, scope=router.scope, ops=ops)
        values = noisy if router.combine == "probs" else logits
        return Routing(probs, mask, combine_weights(values, mask, router.temperature, ops=ops), mask)
    if router.kind == "expert_choice":
        return Routing(probs, *_reorder(_expert_choice(ops, noisy, probs, router)))
    return Routing(probs, *_reorder(_top_choices(ops, noisy, probs, router)))


def _reorder(result):
    mask, assigned, weights = result
    return mask, weights, assigned


def switch_loss(ops, probs, assigned):
    """``E * sum_i f_i P_i`` of one layer: f = share of the assignments, P = mean gate (see module doc)."""
    n_experts = ops.shape(probs)[-1]
    counts = ops.sum(ops.to_float(assigned, probs), axis=0)
    f = counts / ops.sum(counts)
    return float(n_experts) * ops.sum(f * ops.mean(probs, axis=0))
