"""The Transformer probes of the paper's Section 5 (attention entropy and distance, head specialisation,
participation ratio, superposition pressure): closed-form cases, invariances and bounds on random attention."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from backends.spec.probes import (
    attention_distance,
    attention_entropy,
    head_specialisation,
    participation_ratio,
    superposition_pressure,
)


def uniform_causal(t: int, batch: int = 1, heads: int = 1) -> np.ndarray:
    mask = np.tril(np.ones((t, t)))
    return np.broadcast_to(mask / mask.sum(axis=1, keepdims=True), (batch, heads, t, t)).copy()


def one_hot(keys, batch: int = 1) -> np.ndarray:
    """Attention where query i of head h attends only key ``keys[h][i]``."""
    keys = np.asarray(keys)
    heads, t = keys.shape
    a = np.zeros((batch, heads, t, t))
    a[:, np.arange(heads)[:, None], np.arange(t)[None, :], keys] = 1.0
    return a


def causal_softmax(logits: np.ndarray) -> np.ndarray:
    t = logits.shape[-1]
    z = np.where(np.tril(np.ones((t, t), dtype=bool)), logits, -np.inf)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def causal_attention(max_batch=3, max_heads=4, max_t=9):
    shapes = st.tuples(st.integers(1, max_batch), st.integers(1, max_heads), st.integers(1, max_t))
    logits = shapes.flatmap(lambda s: arrays(np.float64, (*s, s[2]), elements=st.floats(-20, 20, allow_nan=False, width=64)))
    return logits.map(causal_softmax)


# --- attention entropy and distance -----------------------------------------------------------------


@pytest.mark.parametrize("t", [1, 2, 5, 16])
def test_uniform_causal_entropy_and_distance(t):
    a = uniform_causal(t, batch=2, heads=3)
    i = np.arange(t)
    np.testing.assert_allclose(attention_entropy(a), np.full(3, np.log(i + 1).mean()), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(attention_distance(a), np.full(3, (i / 2).mean()), rtol=1e-12, atol=1e-15)


def test_one_hot_entropy_is_zero_and_distance_is_the_offset():
    t = 7
    i = np.arange(t)
    a = one_hot([i, np.zeros(t, dtype=int), np.maximum(i - 2, 0)], batch=2)
    assert attention_entropy(a).tolist() == [0.0, 0.0, 0.0]
    d = attention_distance(a)
    assert d[0] == 0.0  # attends to itself
    assert d[1] == pytest.approx(i.mean())  # attends to position 0: distance i
    assert d[2] == pytest.approx(np.minimum(i, 2).mean())  # two back, clamped at the start


def test_entropy_and_distance_per_head_and_averaged_over_batch():
    t = 4
    uniform, self_ = uniform_causal(t)[0, 0], np.eye(t)
    a = np.stack([np.stack([uniform, self_]), np.stack([self_, self_])])  # (2 batch, 2 heads)
    i = np.arange(t)
    np.testing.assert_allclose(attention_entropy(a), [np.log(i + 1).mean() / 2, 0.0], atol=1e-15)
    np.testing.assert_allclose(attention_distance(a), [(i / 2).mean() / 2, 0.0], atol=1e-15)


def test_bidirectional_attention_is_accepted():
    t = 5
    a = np.full((1, 1, t, t), 1.0 / t)
    assert attention_entropy(a)[0] == pytest.approx(np.log(t))
    i, j = np.meshgrid(np.arange(t), np.arange(t), indexing="ij")
    assert attention_distance(a)[0] == pytest.approx(np.abs(i - j).mean())


def test_float32_attention_is_accepted():
    a = causal_softmax(np.random.default_rng(0).normal(size=(2, 3, 64, 64))).astype(np.float32)
    assert attention_entropy(a).shape == attention_distance(a).shape == (3,)
    assert 0.0 <= head_specialisation(a) <= 1.0


# --- head specialisation ----------------------------------------------------------------------------


def test_identical_heads_have_specialisation_zero():
    a = causal_softmax(np.random.default_rng(1).normal(size=(2, 1, 6, 6)))
    assert head_specialisation(np.repeat(a, 4, axis=1)) == 0.0
    assert head_specialisation(a) == 0.0  # a single head: no pair to differ


def test_heads_on_disjoint_keys_have_specialisation_one():
    t = 6
    assert head_specialisation(one_hot([np.zeros(t, int), np.ones(t, int), np.full(t, 2)])) == pytest.approx(1.0, abs=1e-12)
    # Broad but disjoint: head 0 spreads over the even keys, head 1 over the odd ones.
    even = np.tile(np.arange(t) % 2 == 0, (t, 1)) / (t / 2)
    a = np.stack([even, np.roll(even, 1, axis=1)])[None]
    assert head_specialisation(a) == pytest.approx(1.0, abs=1e-12)


def test_causal_disjoint_heads_reach_t_minus_one_over_t():
    # Causal rows 1.. can differ fully (self vs the previous key); row 0 is the same one-hot for every head.
    t = 8
    i = np.arange(t)
    assert head_specialisation(one_hot([i, np.maximum(i - 1, 0)])) == pytest.approx((t - 1) / t, abs=1e-12)


def test_specialisation_of_half_overlapping_rows_is_one_half():
    # p = (1/2, 1/2, 0), q = (0, 1/2, 1/2): m = (1/4, 1/2, 1/4), JS_2 = 1/2.
    row_p, row_q = np.array([0.5, 0.5, 0.0]), np.array([0.0, 0.5, 0.5])
    a = np.stack([np.tile(row_p, (3, 1)), np.tile(row_q, (3, 1))])[None]
    assert head_specialisation(a) == pytest.approx(0.5, abs=1e-12)


def test_specialisation_is_the_mean_over_pairs():
    t = 5
    # Heads 0 and 1 identical, head 2 disjoint from both: pairs (0,1)=0, (0,2)=1, (1,2)=1.
    a = one_hot([np.zeros(t, int), np.zeros(t, int), np.ones(t, int)])
    assert head_specialisation(a) == pytest.approx(2 / 3, abs=1e-12)


@given(causal_attention(), st.randoms(use_true_random=False))
def test_specialisation_is_invariant_to_head_order(a, rnd):
    order = list(range(a.shape[1]))
    rnd.shuffle(order)
    assert head_specialisation(a[:, order]) == pytest.approx(head_specialisation(a), rel=1e-12, abs=1e-15)
    np.testing.assert_allclose(attention_entropy(a[:, order]), attention_entropy(a)[order], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(attention_distance(a[:, order]), attention_distance(a)[order], rtol=1e-12, atol=1e-15)


@given(causal_attention())
def test_random_causal_attention_is_within_bounds(a):
    t = a.shape[-1]
    i = np.arange(t)
    ent, dist, spec = attention_entropy(a), attention_distance(a), head_specialisation(a)
    assert ent.shape == dist.shape == (a.shape[1],)
    tol = 1e-12
    assert (ent >= -tol).all() and (ent <= np.log(t) + tol).all()
    assert (ent <= np.log(i + 1).mean() + tol).all()  # row i has at most i + 1 keys
    assert (dist >= 0).all() and (dist <= t - 1 + tol).all()
    assert (dist <= i.mean() + tol).all()  # causal: |i - j| <= i
    assert 0.0 <= spec <= 1.0
    assert spec <= (t - 1) / t + tol  # the first row is the same for every head


# --- participation ratio ----------------------------------------------------------------------------


def test_rank_one_representation_has_participation_ratio_one():
    rng = np.random.default_rng(2)
    h = rng.normal(size=(50, 1)) * rng.normal(size=(1, 16)) + rng.normal(size=(1, 16))  # offset: centring removes it
    assert participation_ratio(h) == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("d", [1, 3, 8, 32])
def test_equal_eigenvalues_give_exactly_d(d):
    assert participation_ratio(np.vstack([np.eye(d), -np.eye(d)])) == float(d)
    # A rotated version: orthonormal columns orthogonal to the all-ones vector, so already centred.
    rng = np.random.default_rng(d)
    x = rng.normal(size=(3 * d + 2, d))
    q, _ = np.linalg.qr(x - x.mean(axis=0))
    assert participation_ratio(5.0 * q + 3.0) == pytest.approx(d, rel=1e-12)


def test_large_isotropic_gaussian_is_close_to_d():
    d = 8
    h = np.random.default_rng(3).normal(size=(20_000, d))
    assert participation_ratio(h) == pytest.approx(d, rel=0.01)


def test_participation_ratio_uses_the_smaller_gram_when_tokens_are_few():
    rng = np.random.default_rng(4)
    h = rng.normal(size=(5, 40))
    lam = np.linalg.eigvalsh(np.cov(h, rowvar=False))
    assert participation_ratio(h) == pytest.approx(lam.sum() ** 2 / (lam**2).sum(), rel=1e-10)
    assert participation_ratio(h) <= 4 + 1e-12  # at most tokens - 1 directions


@given(
    # Values on a 1e-5 grid in [-10, 10]: scale * h cannot underflow (tiny h has its own test).
    arrays(np.float64, st.tuples(st.integers(2, 30), st.integers(1, 10)), elements=st.integers(-(10**6), 10**6).map(lambda n: n / 1e5)),
    st.floats(1e-3, 1e3),
    st.floats(-100, 100),
)
def test_participation_ratio_is_scale_and_shift_invariant_and_bounded(h, scale, shift):
    pr = participation_ratio(h)
    if pr == 0.0:  # zero variance
        return
    assert pr == pytest.approx(participation_ratio(scale * h), rel=1e-9)
    assert 1.0 - 1e-9 <= pr <= min(h.shape[0] - 1, h.shape[1]) + 1e-9
    hn = h / np.abs(h - h.mean(axis=0)).max()  # the reference's squares would underflow for tiny h
    lam = np.clip(np.linalg.eigvalsh(np.cov(hn, rowvar=False).reshape(h.shape[1], h.shape[1])), 0, None)
    assert pr == pytest.approx(lam.sum() ** 2 / (lam**2).sum(), rel=1e-6)
    shifted = h + shift
    if np.abs(shifted).max() < 1e3 * np.abs(h - h.mean(axis=0)).max():  # shift not large enough to swamp the variance
        assert participation_ratio(shifted) == pytest.approx(pr, rel=1e-6)


@pytest.mark.parametrize("scale", [1e-160, 1e-300, 1e150, 1e300])
def test_participation_ratio_of_tiny_and_huge_values(scale):
    d = 4
    h = np.vstack([np.eye(d), -np.eye(d)])
    assert participation_ratio(scale * h) == pytest.approx(d, rel=1e-12)
    assert participation_ratio(scale * np.outer(np.arange(6.0), np.ones(3))) == pytest.approx(1.0, rel=1e-12)


def test_zero_variance_gives_zero():
    assert participation_ratio(np.ones((10, 4))) == 0.0
    assert participation_ratio(np.full((7, 3), 0.1)) == 0.0  # the mean of 0.1s is not exactly 0.1
    assert participation_ratio(np.arange(5.0)[None]) == 0.0  # a single token
    assert participation_ratio(np.zeros((3, 2))) == 0.0


# --- superposition pressure -------------------------------------------------------------------------


def test_superposition_pressure_is_pr_over_active_times_hidden():
    d = 6
    h = np.vstack([np.eye(d), -np.eye(d)])  # PR = 6 exactly
    assert superposition_pressure(h, 2.0, 3) == pytest.approx(6 / (2.0 * 3))
    counts = np.array([1, 2, 3, 2] * 3)  # per token, mean 2
    assert superposition_pressure(h, counts, 3) == pytest.approx(1.0)
    assert superposition_pressure(h, counts.reshape(3, 4), np.int64(3)) == pytest.approx(1.0)
    assert superposition_pressure(np.ones((4, 2)), 2, 8) == 0.0  # no variance, no load


def test_superposition_pressure_falls_as_capacity_grows():
    h = np.random.default_rng(5).normal(size=(200, 16))
    p = [superposition_pressure(h, k, 64) for k in (1, 2.4, 4)]
    assert p[0] > p[1] > p[2] > 0


@pytest.mark.parametrize(
    ("active", "hidden", "match"),
    [
        (2, 0, "expert_hidden must be a positive integer"),
        (2, -4, "expert_hidden must be a positive integer"),
        (2, 3.5, "expert_hidden must be a positive integer"),
        (2, True, "expert_hidden must be a positive integer"),
        (-1, 4, "active_experts must be non-negative"),
        (0, 4, "averages 0"),
        (np.zeros(10), 4, "averages 0"),
        (np.ones(9), 4, "one count per token"),
        (np.nan, 4, "non-finite"),
        ("2", 4, "must be numbers"),
    ],
)
def test_superposition_pressure_validation(active, hidden, match):
    h = np.random.default_rng(6).normal(size=(10, 3))
    with pytest.raises(ValueError, match=match):
        superposition_pressure(h, active, hidden)


# --- validation -------------------------------------------------------------------------------------

PROBES = [attention_entropy, attention_distance, head_specialisation]


def _bad(kind: str) -> np.ndarray:
    a = uniform_causal(4, batch=2, heads=2)
    if kind == "ndim":
        return a[0]
    if kind == "square":
        return a[..., :3]
    if kind == "empty":
        return a[:, :0]
    if kind == "sum":
        a[1, 0, 2] *= 0.9
    elif kind == "negative":
        a[0, 1, 3, :2] = [-0.25, 0.75]
    elif kind == "nan":
        a[0, 0, 1, 0] = np.nan
    return a


@pytest.mark.parametrize("probe", PROBES)
@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("ndim", r"4-D \(batch, heads, T, T\); got 3-D"),
        ("square", "square"),
        ("empty", "at least one"),
        ("sum", r"sum to 1 within 1e-05; the worst row, \(batch, head, query\) = \(1, 0, 2\), sums to 0.9"),
        ("negative", r"negative entries; the most negative is -0.25 at \(batch, head, query, key\) = \(0, 1, 3, 0\)"),
        ("nan", "non-finite"),
    ],
)
def test_attention_validation(probe, kind, match):
    with pytest.raises(ValueError, match=match):
        probe(_bad(kind))


def test_row_sum_tolerance_is_adjustable():
    a = uniform_causal(4) * (1 + 1e-4)
    with pytest.raises(ValueError, match="sum to 1"):
        attention_entropy(a)
    assert attention_entropy(a, atol=1e-3).shape == (1,)


def test_attention_of_complex_or_strings_is_refused():
    with pytest.raises(ValueError, match="real numbers"):
        attention_entropy(uniform_causal(3).astype(complex))


@pytest.mark.parametrize(
    ("h", "match"),
    [
        (np.ones(5), "2-D"),
        (np.ones((2, 3, 4)), "2-D"),
        (np.ones((0, 4)), "at least one token"),
        (np.array([[1.0, np.inf], [0.0, 1.0]]), "non-finite"),
        (np.array([["a", "b"]]), "real numbers"),
    ],
)
def test_representation_validation(h, match):
    with pytest.raises(ValueError, match=match):
        participation_ratio(h)
    with pytest.raises(ValueError, match=match):
        superposition_pressure(h, 1, 4)
