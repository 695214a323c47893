"""Dynamic selection (Eq. 4-5) and combine weights (Eq. 6): hand-computed cases and properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from backends.spec import combine_weights, select_experts
from backends.spec.dynamic import expert_ranks, gate_threshold, token_scope_count

finite = st.floats(-5, 5, allow_nan=False, width=64)


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def gate_batches(max_tokens=24, max_experts=12):
    shapes = st.tuples(st.integers(1, max_tokens), st.integers(1, max_experts))
    return shapes.flatmap(lambda s: arrays(np.float64, s, elements=finite)).map(softmax)


def test_hand_computed_token_scope():
    # sorted [.1 .2 .3 .4], 50th percentile: pos 1.5 -> .25; selects experts 1 (.4) and 3 (.3).
    g = np.array([[0.1, 0.4, 0.2, 0.3]])
    assert gate_threshold(g, 50, "token")[0, 0] == pytest.approx(0.25)
    assert select_experts(g, 50, 1, 4, scope="token").tolist() == [[False, True, False, True]]
    w = combine_weights(g, select_experts(g, 50, 1, 4, scope="token"), temperature=0.5)
    a, b = np.exp(0.4 / 0.5), np.exp(0.3 / 0.5)
    np.testing.assert_allclose(w, [[0, a / (a + b), 0, b / (a + b)]], rtol=1e-15)


def test_hand_computed_batch_scope():
    # One threshold over all 8 values: 70th percentile of [.05 .1 .15 .2 .25 .3 .35 .6], pos 4.9 -> .295.
    g = np.array([[0.6, 0.25, 0.1, 0.05], [0.35, 0.3, 0.2, 0.15]])
    assert gate_threshold(g, 70, "batch")[0, 0] == pytest.approx(0.295)
    mask = select_experts(g, 70, 1, 4, scope="batch")
    assert mask.tolist() == [[True, False, False, False], [True, True, False, False]]  # 1 and 2 experts: dynamic
    mask = select_experts(g, 90, 1, 4, scope="batch")  # pos 6.3 -> .425: row 2 has none -> k_min picks its top
    assert mask.tolist() == [[True, False, False, False], [True, False, False, False]]
    assert select_experts(g, 90, 2, 4, scope="batch").tolist() == [[True, True, False, False], [True, True, False, False]]


def test_ties_at_threshold_are_selected_and_clamps_break_ties_by_index():
    g = np.full((1, 4), 0.25)
    assert select_experts(g, 70, 1, 4, scope="token").tolist() == [[True] * 4]  # Eq. 4's ">=" keeps every tie
    assert select_experts(g, 70, 1, 2, scope="token").tolist() == [[True, True, False, False]]
    assert expert_ranks(np.array([[0.3, 0.2, 0.3, 0.2]])).tolist() == [[0, 2, 1, 3]]


@pytest.mark.parametrize(("experts", "count"), [(8, 3), (6, 2), (3, 1), (16, 5), (4, 1), (1, 1)])
def test_token_scope_is_a_fixed_count(experts, count):
    # ../shared/spec/PAPERS.md section 1 item 1: Eq. 4 read per token selects a count fixed by E alone.
    assert token_scope_count(experts, 70) == count
    g = softmax(np.random.default_rng(experts).standard_normal((500, experts)))
    assert (select_experts(g, 70, 1, experts, scope="token").sum(axis=1) == count).all()


def test_batch_scope_varies_per_token_and_averages_table6_layer1():
    g = softmax(np.random.default_rng(0).standard_normal((4096, 8)))
    active = select_experts(g, 70, 1, 8, scope="batch").sum(axis=1)
    assert len(np.unique(active)) >= 4  # dynamic: many different counts
    assert active.mean() == pytest.approx(2.4, abs=0.15)  # (1 - 0.7) * 8, Table 6's 2.4 (+ k_min lifts)


@settings(max_examples=200, deadline=None)
@given(gate_batches(), st.floats(1, 99), st.sampled_from(["batch", "token"]), st.data())
def test_threshold_is_numpy_percentile(g, tau, scope, data):
    expected = np.percentile(g, tau) if scope == "batch" else np.percentile(g, tau, axis=1)
    np.testing.assert_array_equal(np.asarray(gate_threshold(g, tau, scope)).reshape(-1), np.reshape(expected, -1))


@settings(max_examples=200, deadline=None)
@given(gate_batches(), st.floats(1, 99), st.sampled_from(["batch", "token"]), st.data())
def test_selection_properties(g, tau, scope, data):
    experts = g.shape[1]
    k_min = data.draw(st.integers(1, experts))
    k_max = data.draw(st.integers(k_min, experts))
    mask = select_experts(g, tau, k_min, k_max, scope=scope)
    counts = mask.sum(axis=1)
    assert ((k_min <= counts) & (counts <= k_max)).all()
    # S is a top set: every selected gate >= every unselected gate of the same token.
    lowest_in = np.where(mask, g, np.inf).min(axis=1)
    highest_out = np.where(mask, -np.inf, g).max(axis=1)
    assert (lowest_in >= highest_out).all()
    # Between the clamps, S is exactly the set at or above the threshold (Eq. 4).
    above = g >= gate_threshold(g, tau, scope)
    free = (above.sum(axis=1) >= k_min) & (above.sum(axis=1) <= k_max)
    assert (mask[free] == above[free]).all()


@settings(max_examples=200, deadline=None)
@given(gate_batches(), st.floats(1, 99), st.floats(0.05, 4))
def test_weights_sum_to_one_and_vanish_outside(g, tau, temperature):
    mask = select_experts(g, tau, 1, g.shape[1])
    w = combine_weights(g, mask, temperature)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-12)
    assert (w[~mask] == 0).all() and (w[mask] > 0).all()


def distinct_logit_rows():
    """Rows of distinct logits on a grid of 1/4, so no two gates are within rounding of each other."""
    row = st.integers(2, 10).flatmap(lambda e: st.lists(st.integers(-24, 24), min_size=e, max_size=e, unique=True))
    return (
        st.integers(1, 12)
        .flatmap(lambda n: st.lists(row, min_size=n, max_size=n))
        .filter(lambda rows: len({len(r) for r in rows}) == 1)
        .map(lambda rows: np.array(rows, dtype=np.float64) / 4)
    )


@settings(max_examples=200, deadline=None)
@given(distinct_logit_rows(), st.floats(-50, 50), st.integers(1, 99), st.sampled_from(["batch", "token"]))
def test_invariant_to_a_constant_added_to_the_logits(z, c, tau, scope):
    # softmax(z + c) = softmax(z), so the gates, the selected set and the weights do not change (Eq. 1, 4, 6).
    # Distinct grid logits and an integer tau keep every gate away from the threshold except exact hits.
    g, g_shift = softmax(z), softmax(z + c)
    experts = z.shape[1]
    mask = select_experts(g, tau, 1, experts, scope=scope)
    assert (select_experts(g_shift, tau, 1, experts, scope=scope) == mask).all()
    np.testing.assert_allclose(combine_weights(g_shift, mask, 0.5), combine_weights(g, mask, 0.5), atol=1e-12)
    # with combine="logits" the weights are softmax(z_S / T): shifting z cancels as well
    np.testing.assert_allclose(combine_weights(z + c, mask, 0.5), combine_weights(z, mask, 0.5), atol=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tau": 0}, "tau = 0"),
        ({"tau": 100}, "tau = 100"),
        ({"tau": 150}, "open interval"),
        ({"k_min": 3, "k_max": 2}, "k_min = 3, k_max = 2"),
        ({"k_min": 0}, "k_min = 0"),
    ],
)
def test_bad_routing_arguments(kwargs, message):
    args = {"tau": 70, "k_min": 1, "k_max": 4} | kwargs
    with pytest.raises(ValueError, match=message):
        select_experts(np.full((2, 4), 0.25), args["tau"], args["k_min"], args["k_max"])
    with pytest.raises(ValueError, match="temperature"):
        combine_weights(np.full((1, 2), 0.5), np.ones((1, 2), bool), 0)
