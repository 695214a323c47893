"""The four Transformer probes of the DynaMoE paper's Section 5 ("Note on architecture scope"), which it never computed.

The paper (text in ``../shared/spec/TRANSFORMER.md``, Sections 5.4, 7.6, 7.7, 7.10) proposes them "for future
evaluation in Transformer-based extensions": attention entropy, effective attention distance, the head
specialisation index and the superposition pressure proxy. They are computed here once, in NumPy, from the
attention weights and representations any backend returns, so every backend is measured by the same numbers.

Inputs:

- ``attn``: one layer's attention weights, shape ``(batch, heads, T, T)``, ``attn[b, h, i, j]`` the weight
  query ``i`` gives key ``j``; every row a probability distribution (non-negative, summing to 1 within
  ``atol``). Causal attention (zeros above the diagonal) is the usual case, but causality is not required:
  the definitions hold for bidirectional attention too.
- ``h``: one layer's representations, shape ``(tokens, d)`` (flatten batch and positions first).

Decisions the paper left open:

- **Averaging.** Entropy and distance are per head, averaged over batch and *all* query positions with equal
  weight (the paper's "mean token-level" reading): under a causal mask the early rows have little room
  (row ``i`` has entropy at most ``log(i + 1)`` and distance at most ``i``), and they count as much as late rows.
- **Head dissimilarity.** Jensen-Shannon divergence in bits between the two heads' attention rows for the same
  query, averaged over queries and batch, then over all head pairs (see ``head_specialisation``).
- **Feature load.** The participation ratio of the covariance spectrum; a zero-variance ``h`` gives 0.0.
- **Capacity.** Mean active experts per token times the expert hidden width: the routed width one token sees.

All functions are vectorised over batch, heads and positions; the specialisation index loops over the first
head of each pair only (``heads - 1`` iterations, each vectorised over the remaining heads), which keeps the
temporary arrays the size of ``attn`` rather than ``heads`` times it.
"""

from __future__ import annotations

import numpy as np

ROW_SUM_ATOL = 1e-5
"""Default tolerance on ``|sum_j attn[b, h, i, j] - 1|`` (float32 softmax rows sum to 1 within a few 1e-7)."""


def _check_attention(attn, atol: float) -> np.ndarray:
    """``attn`` as float64 ``(batch, heads, T, T)`` after checking it is a stack of attention distributions."""
    a = np.asarray(attn)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_):
        raise ValueError(f"attn must hold real numbers; got dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    if a.ndim != 4:
        raise ValueError(f"attn must be 4-D (batch, heads, T, T); got {a.ndim}-D with shape {a.shape}")
    b, heads, tq, tk = a.shape
    if tq != tk:
        raise ValueError(f"attn must be self-attention with square (T, T) maps; got query x key {tq} x {tk}")
    if b == 0 or heads == 0 or tq == 0:
        raise ValueError(f"attn must have at least one batch element, head and position; got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("attn has non-finite entries (NaN or inf)")
    if (a < 0).any():
        idx = tuple(int(n) for n in np.unravel_index(np.argmin(a), a.shape))
        raise ValueError(f"attn has negative entries; the most negative is {a[idx]:.3g} at (batch, head, query, key) = {idx}")
    err = np.abs(a.sum(axis=-1) - 1.0)
    if (err > atol).any():
        idx = tuple(int(n) for n in np.unravel_index(np.argmax(err), err.shape))
        raise ValueError(
            f"attn rows must sum to 1 within {atol:g}; the worst row, (batch, head, query) = {idx}, sums to {a[idx].sum():.6g}"
        )
    return a


def _check_representation(h) -> np.ndarray:
    """``h`` as float64 ``(tokens, d)`` after checking its shape and values."""
    x = np.asarray(h)
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"h must hold real numbers; got dtype {x.dtype}")
    x = x.astype(np.float64, copy=False)
    if x.ndim != 2:
        raise ValueError(f"h must be 2-D (tokens, d); got {x.ndim}-D with shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"h must have at least one token and one feature; got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("h has non-finite entries (NaN or inf)")
    return x


def _plogq_ratio(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Elementwise ``p log2(p / q)``, 0 where ``p == 0`` (wherever it is called, ``p > 0`` implies ``q > 0``)."""
    out = np.zeros(np.broadcast_shapes(p.shape, q.shape))
    pos = np.broadcast_to(p > 0, out.shape)
    ratio = np.divide(p, q, out=np.ones_like(out), where=pos)
    np.log2(ratio, out=out, where=pos)
    return out * p


def attention_entropy(attn, *, atol: float = ROW_SUM_ATOL) -> np.ndarray:
    """Attention entropy per head, in nats: ``H_h = mean_{b,i} -sum_j a[b,h,i,j] ln a[b,h,i,j]`` (``0 ln 0 = 0``).

    Paper (Section 5.4): "Mean token-level entropy of each layer's attention distribution (lower values
    indicate sharper attention concentration)." Each query's row is one token-level distribution; its
    entropy is averaged over batch and query positions, per head, giving shape ``(heads,)`` (average the
    result for the layer's single number). Row ``i`` of a causal map has entropy in ``[0, log(i + 1)]``, so
    each head's value lies in ``[0, mean_i log(i + 1)] ⊂ [0, log T]``; uniform causal attention attains the
    upper end, one-hot attention gives 0.
    """
    a = _check_attention(attn, atol)
    b, _, t, _ = a.shape
    log_a = np.log(a, out=np.zeros_like(a), where=a > 0)
    return -np.einsum("bhij,bhij->h", a, log_a) / (b * t)


def attention_distance(attn, *, atol: float = ROW_SUM_ATOL) -> np.ndarray:
    """Effective attention distance per head, in positions: ``D_h = mean_{b,i} sum_j a[b,h,i,j] |i - j|``.

    Paper (Section 5.4): "Expected relative distance between query and attended key positions, used as a
    proxy for long-range dependency aggregation." The expectation of ``|i - j|`` under query ``i``'s
    attention row, averaged over batch and query positions, per head: shape ``(heads,)``. It lies in
    ``[0, T - 1]`` (in ``[0, mean_i i] = [0, (T - 1) / 2]`` under a causal mask); attention to self gives 0,
    uniform causal attention gives ``mean_i i / 2``.
    """
    a = _check_attention(attn, atol)
    b, _, t, _ = a.shape
    pos = np.arange(t, dtype=np.float64)
    dist = np.abs(pos[:, None] - pos[None, :])
    return np.einsum("bhij,ij->h", a, dist) / (b * t)


def head_specialisation(attn, *, atol: float = ROW_SUM_ATOL) -> float:
    """Head specialisation index of a layer, in ``[0, 1]``: mean pairwise Jensen-Shannon divergence of its heads.

    Paper (Section 5.4): "Inter-head diversity measured by pairwise dissimilarity of attention maps within
    each layer." Here, for heads ``g != h``::

        S = mean_{g < h} mean_{b,i} JS_2(a[b,g,i,:], a[b,h,i,:])
        JS_2(p, q) = (KL_2(p || m) + KL_2(q || m)) / 2,  m = (p + q) / 2,  KL_2 in bits.

    Why Jensen-Shannon on rows rather than ``1 - cosine`` of the flattened maps: attention rows are
    probability distributions, and JS is the divergence between distributions; with base-2 logs it is
    bounded in ``[0, 1]`` without any rescaling, is 0 exactly when the two rows are equal and 1 exactly when
    their supports are disjoint (heads reading different keys), and is symmetric (``sqrt(JS)`` is a metric).
    Comparing row by row respects that a map is one distribution per query, each counted once; cosine of
    flattened maps weights each row by its Euclidean norm, so sharp rows (norm near 1) swamp broad ones
    (norm about ``1 / sqrt(i + 1)``), and it measures the angle between vectors, not how distributions differ.

    The index is invariant to the order of the heads. It is 0 for a single head (no pair to differ). All
    query rows count equally, so under a causal mask, whose first row is the same one-hot for every head,
    its largest value is ``(T - 1) / T``; that constant factor is the same at every depth and does not affect
    depth-wise comparisons.
    """
    a = _check_attention(attn, atol)
    b, heads, t, _ = a.shape
    if heads < 2:
        return 0.0
    total = 0.0
    for g in range(heads - 1):
        p = a[:, g : g + 1]  # (b, 1, T, T)
        q = a[:, g + 1 :]  # (b, heads - g - 1, T, T)
        m = 0.5 * (p + q)
        total += 0.5 * (_plogq_ratio(p, m).sum() + _plogq_ratio(q, m).sum())
    pairs = heads * (heads - 1) // 2
    return float(np.clip(total / (pairs * b * t), 0.0, 1.0))


def participation_ratio(h) -> float:
    """Participation-ratio dimensionality of representations ``h`` (tokens, d): ``(sum_k l_k)^2 / sum_k l_k^2``.

    ``l_k`` are the eigenvalues of the covariance of ``h`` over tokens (``h`` centred by its per-feature mean).
    Paper (Section 5.4): the feature load ``F_l`` "is estimated by participation-ratio feature dimensionality";
    Section 7.7 reads it as the "number of active latent factors after attention mixing". The value lies in
    ``[1, min(tokens - 1, d)]``: 1 when the variance lies along one direction, ``d`` when all ``d`` directions
    carry equal variance. It is invariant to scaling ``h``, to translating it and to rotating its features.

    No eigendecomposition is needed: ``sum l_k`` is the trace of the covariance and ``sum l_k^2`` its squared
    Frobenius norm; the (smaller of the) ``d x d`` covariance and ``tokens x tokens`` Gram matrix share their
    non-zero eigenvalues, and the covariance's normalisation cancels in the ratio.

    Zero variance (a single token, or all tokens equal up to rounding) returns 0.0, not 1.0: no direction
    carries variance, so there is no feature load, and 0 keeps that case apart from a genuine rank-1 ``h``.
    "Up to rounding": every centred entry at most ``64 eps max|h|``, the size of centring's own rounding.
    """
    x = _check_representation(h)
    scale = float(np.abs(x).max())
    if scale == 0.0:
        return 0.0
    x = x / scale  # the ratio is scale-free; unit scale keeps the squares below from under- or overflowing
    xc = x - x.mean(axis=0, keepdims=True)
    if float(np.abs(xc).max()) <= 64 * np.finfo(np.float64).eps:
        return 0.0
    tokens, d = xc.shape
    gram = xc.T @ xc if d <= tokens else xc @ xc.T
    trace = float(np.trace(gram))
    frob2 = float(np.einsum("ij,ij->", gram, gram))
    return trace * trace / frob2


def superposition_pressure(h, active_experts, expert_hidden: int) -> float:
    """Superposition pressure proxy of a layer: ``P_l = F_l / C_l``.

    Paper (Section 5.4): "Layer-wise ratio [F_l / C_l], where [F_l] is estimated by participation-ratio
    feature dimensionality and [C_l] is effective MoE capacity induced by routed expert width"; Section 7.7:
    capacity "induced by width and expert multiplicity", larger ratios meaning "stronger feature overlap".

    - ``F_l = participation_ratio(h)`` for the layer's representations ``h`` (tokens, d), 0 for zero variance.
    - ``C_l = mean(active_experts) * expert_hidden``: the routed width one token passes through, i.e. the mean
      number of experts a token activates at this layer (``layer_stats``' ``avg_active``; dynamic routing makes
      it vary per token) times each expert's hidden width. Mean *active*, not total, experts: a token is
      represented only in the experts it is routed to, and the paper's "increasing expert count ... increases
      [C_l]" holds through the active count, which grows with the layer's experts at a fixed percentile.
      ``active_experts`` is that mean as a scalar, or per-token counts (any shape, one per token of ``h``).

    The ratio is a proxy compared across layers, not a probability: it is not bounded by 1.
    """
    if isinstance(expert_hidden, bool) or not isinstance(expert_hidden, (int, np.integer)):
        raise ValueError(f"expert_hidden must be a positive integer width; got {expert_hidden!r}")
    if expert_hidden <= 0:
        raise ValueError(f"expert_hidden must be a positive integer width; got {expert_hidden}")
    x = _check_representation(h)
    k = np.asarray(active_experts)
    if not (np.issubdtype(k.dtype, np.floating) or np.issubdtype(k.dtype, np.integer)):
        raise ValueError(f"active_experts must be numbers; got dtype {k.dtype}")
    k = k.astype(np.float64, copy=False)
    if k.ndim > 0 and k.size != x.shape[0]:
        raise ValueError(f"active_experts must be a scalar mean or one count per token of h ({x.shape[0]}); got shape {k.shape}")
    if not np.isfinite(k).all():
        raise ValueError("active_experts has non-finite entries (NaN or inf)")
    if (k < 0).any():
        raise ValueError(f"active_experts must be non-negative; got minimum {k.min():g}")
    mean_active = float(k.mean())
    if mean_active <= 0:
        raise ValueError("active_experts averages 0: the layer has no routed capacity, so the pressure is undefined")
    return participation_ratio(x) / (mean_active * int(expert_hidden))
