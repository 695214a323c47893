"""The baseline routers and the balancing loss (``spec.routers``): hand-built cases, a loop oracle, properties.

Exact comparisons (``==``, or 1e-15 relative) where the spec's arithmetic is the hand computation's;
1e-12 where the same float64 numbers are summed in another order.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.spec import ModelConfig, RouterConfig, ScheduleConfig, init_params
from backends.spec import forward as F
from backends.spec.accounting import active_flops_per_token, expected_active, layer_flops, matched_mlp, parameter_count
from backends.spec.losses import aux_loss, training_loss
from backends.spec.ops import NumpyOps
from backends.spec.routers import capacity, route_logits, switch_loss

OPS = NumpyOps()


def route(probs, **router):
    """Route given gate probabilities (logits = log p, so softmax gives p back to rounding)."""
    return route_logits(OPS, np.log(np.asarray(probs, dtype=np.float64)), None, RouterConfig(**router))


def test_capacity_formula():
    assert capacity(4, 2, 1, 1.0) == 2  # Switch: ceil(1.0 * 4 * 1 / 2)
    assert capacity(256, 8, 1, 1.25) == 40
    assert capacity(4, 3, 2, 0.75) == 2  # ceil(0.75 * 4 * 2 / 3) = ceil(2.0)
    assert capacity(10, 4, 2, 100.0) == 10 and capacity(3, 8, 1, 0.01) == 1  # clamped to [1, N]


def test_switch_drops_tokens_over_capacity_and_the_residual_passes_them():
    # 4 tokens, 2 experts, every token prefers expert 0; capacity ceil(1.0 * 4 / 2) = 2 -> tokens 2, 3 dropped.
    gen = np.random.default_rng(0)
    d, dh = 2, 3
    p = {"gate": np.array([[2.0, -2.0], [0.0, 0.0]]), "w1": gen.normal(size=(2, d, dh)), "b1": gen.normal(size=(2, dh))}
    p |= {"w2": gen.normal(size=(2, dh, d)), "b2": gen.normal(size=(2, d))}
    h = np.array([[1.0, 0.0], [1.0, 0.1], [1.0, 0.2], [1.0, 0.3]])
    router = RouterConfig(kind="switch", capacity_factor=1.0)
    y, routing = F.dynamoe_layer(OPS, p, h, None, router)
    assert routing.assigned.tolist() == [[True, False]] * 4
    assert routing.mask.tolist() == [[True, False], [True, False], [False, False], [False, False]]
    p0 = 1 / (1 + math.exp(-4.0))  # softmax of logits (2, -2)
    np.testing.assert_allclose(routing.weights, [[p0, 0], [p0, 0], [0, 0], [0, 0]], rtol=1e-15)  # Switch: w = g, not renormalised
    expert0 = np.maximum(h[:2] @ p["w1"][0] + p["b1"][0], 0) @ p["w2"][0] + p["b2"][0]
    np.testing.assert_allclose(y[:2], p0 * expert0, rtol=1e-14)
    assert (y[2:] == 0).all()
    assert ((h + y)[2:] == h[2:]).all()  # the residual passes the dropped tokens through unchanged


def test_gshard_fills_first_choices_before_second_choices():
    # E = 3, N = 4, k = 2, factor 0.75: C = 2. Tokens 0-2 prefer (1, then 0), token 3 (0, then 1).
    # Expert 1 first choices: t0, t1 kept, t2 dropped. Expert 0: t3's first choice (position 0), then the
    # second choices t0 (position 1) kept, t1, t2 dropped. Expert 1 second choice t3: position 2, dropped.
    probs = [[0.3, 0.6, 0.1]] * 3 + [[0.6, 0.3, 0.1]]
    r = route(probs, kind="gshard", capacity_factor=0.75)
    assert r.assigned.tolist() == [[True, True, False]] * 4
    assert r.mask.tolist() == [[True, True, False], [False, True, False], [False, False, False], [True, False, False]]
    # weights normalised over both choices before dropping (GShard): a lost second choice is not renormalised
    expected = [[0.3 / 0.9, 0.6 / 0.9, 0], [0, 0.6 / 0.9, 0], [0, 0, 0], [0.6 / 0.9, 0, 0]]
    np.testing.assert_allclose(r.weights, expected, rtol=1e-12)


def test_topk_selects_k_and_renormalises():
    probs = [[0.1, 0.4, 0.2, 0.3]]
    r2 = route(probs, kind="topk", top_k=2)
    assert r2.mask.tolist() == [[False, True, False, True]]
    np.testing.assert_allclose(r2.weights, [[0, 0.4 / 0.7, 0, 0.3 / 0.7]], rtol=1e-12)
    r1 = route(probs, kind="topk", top_k=1)
    assert r1.mask.tolist() == [[False, True, False, False]] and r1.weights.tolist() == [[0, 1.0, 0, 0]]
    assert route([[0.5, 0.5]], kind="topk", top_k=1).mask.tolist() == [[True, False]]  # ties: lower index
    assert route([[0.3, 0.7]], kind="topk", top_k=5).mask.all()  # K above E: every expert


def test_expert_choice_each_expert_takes_its_capacity():
    # N = 4, E = 2, top_k 1, factor 1: C = 2 tokens an expert, by the expert's own gate column.
    probs = [[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.4, 0.6]]
    r = route(probs, kind="expert_choice", top_k=1, capacity_factor=1.0)
    assert r.mask.tolist() == [[True, False], [True, False], [False, True], [False, True]]
    np.testing.assert_allclose(r.weights, [[0.9, 0], [0.8, 0], [0, 0.3], [0, 0.6]], rtol=1e-12)
    # C = 1: expert 0 takes t0, expert 1 takes t2; nobody takes t1, which is dropped
    r = route([[0.9, 0.1], [0.8, 0.2], [0.5, 0.5]], kind="expert_choice", top_k=1, capacity_factor=0.5)
    assert r.mask.tolist() == [[True, False], [False, False], [False, True]]
    assert (r.weights[1] == 0).all()


def test_switch_loss_hand_computed():
    # f = (2/3, 1/3) (top-1 of each token), P = (1.4/3, 1.6/3): 2 (2/3 1.4/3 + 1/3 1.6/3) = 8.8/9
    probs = np.array([[0.7, 0.3], [0.6, 0.4], [0.1, 0.9]])
    assigned = np.array([[True, False], [True, False], [False, True]])
    assert switch_loss(OPS, probs, assigned) == pytest.approx(8.8 / 9, rel=1e-15)
    # balanced load and gates score exactly 1
    assert switch_loss(OPS, np.full((4, 4), 0.25), np.eye(4, dtype=bool)) == pytest.approx(1.0, rel=1e-15)
    # top-2 of 3: assignments (2, 2, 2) -> f = 1/3 each; P = (0.5, 0.3, 0.2): 3 * (1/3) * 1 = 1
    probs = np.array([[0.6, 0.3, 0.1], [0.4, 0.3, 0.3], [0.5, 0.3, 0.2]])
    assigned = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1]], dtype=bool)
    assert switch_loss(OPS, probs, assigned) == pytest.approx(1.0, rel=1e-15)
    # all to expert 0 with P_0 = 0.6: 3 * 1 * 0.6 = 1.8
    assert switch_loss(OPS, np.array([[0.6, 0.3, 0.1]] * 2), np.array([[1, 0, 0]] * 2, dtype=bool)) == pytest.approx(1.8, rel=1e-15)


def test_aux_loss_uses_assignments_before_dropping_and_sums_layers():
    probs = [[0.3, 0.6, 0.1]] * 3 + [[0.6, 0.3, 0.1]]
    r = route(probs, kind="gshard", capacity_factor=0.75)
    # assigned: every token {0, 1} -> f = (1/2, 1/2, 0); P = (1.5/4, 2.1/4, 0.4/4): 3 (0.75 + 1.05) / 4
    expected = 3 * (0.5 * 1.5 / 4 + 0.5 * 2.1 / 4)
    cfg = ModelConfig(size="tiny")
    assert aux_loss(OPS, [r], cfg) == pytest.approx(expected, rel=1e-12)
    assert aux_loss(OPS, [r, r], cfg) == pytest.approx(2 * expected, rel=1e-12)


def test_training_loss_adds_the_weighted_balance_term():
    cfg = ModelConfig(size="tiny", router=RouterConfig(kind="switch", balance_weight=0.01))
    params = init_params(cfg, 0)
    x = np.random.default_rng(0).random((32, 784))
    y = np.arange(32) % 10
    logits, routings = F.model_forward(OPS, params, x, cfg)
    ce = F.cross_entropy(OPS, logits, y)
    assert training_loss(OPS, logits, y, routings, cfg) == pytest.approx(ce + 0.01 * aux_loss(OPS, routings, cfg), rel=1e-15)
    assert training_loss(OPS, logits, y, routings, cfg.replace(router=RouterConfig(kind="switch"))) == ce  # weight 0: CE only


def loop_route(probs, router: RouterConfig):
    """A per-token loop reading of Switch / GShard / top-K (argsort, explicit capacity counters)."""
    n, e = probs.shape
    k = min({"topk": router.top_k, "switch": 1, "gshard": 2}[router.kind], e)
    order = np.argsort(-probs, axis=1, kind="stable")
    mask = np.zeros((n, e), dtype=bool)
    if router.kind == "topk":
        for t in range(n):
            mask[t, order[t, :k]] = True
    else:
        cap = capacity(n, e, k, router.capacity_factor)
        used = np.zeros(e, dtype=int)
        for j in range(k):
            for t in range(n):
                expert = order[t, j]
                if used[expert] < cap:
                    used[expert] += 1
                    mask[t, expert] = True
    weights = np.zeros((n, e))
    for t in range(n):
        top = order[t, :k]
        denom = 1.0 if router.kind == "switch" else probs[t, top].sum()
        for i in top:
            if mask[t, i]:
                weights[t, i] = probs[t, i] / denom
    return mask, weights


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 40),
    st.integers(1, 9),
    st.sampled_from(["topk", "switch", "gshard"]),
    st.integers(1, 4),
    st.floats(0.1, 3.0),
    st.integers(0, 2**31),
)
def test_vectorised_routers_equal_the_loop(n, e, kind, k, factor, seed):
    logits = np.random.default_rng(seed).normal(size=(n, e)) * 2
    router = RouterConfig(kind=kind, top_k=k, capacity_factor=factor)
    r = route_logits(OPS, logits, None, router)
    mask, weights = loop_route(r.probs, router)
    assert np.array_equal(r.mask, mask)
    np.testing.assert_allclose(r.weights, weights, rtol=1e-13, atol=0)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 40), st.integers(2, 9), st.integers(1, 4), st.floats(0.1, 3.0), st.integers(0, 2**31))
def test_expert_choice_properties(n, e, k, factor, seed):
    # E >= 2: with one expert every gate is 1, a tie, and ">=" keeps all tokens
    logits = np.random.default_rng(seed).normal(size=(n, e)) * 2
    router = RouterConfig(kind="expert_choice", top_k=k, capacity_factor=factor)
    r = route_logits(OPS, logits, None, router)
    cap = capacity(n, e, k, factor)
    assert (r.mask.sum(axis=0) == cap).all()  # distinct gates: exactly C tokens an expert
    for i in range(e):  # and they are that expert's C highest gates
        assert set(np.flatnonzero(r.mask[:, i])) == set(np.argsort(-r.probs[:, i], kind="stable")[:cap])
    assert (r.weights[~r.mask] == 0).all() and np.array_equal(r.weights[r.mask], r.probs[r.mask])


@pytest.mark.parametrize("kind", ["topk", "switch", "gshard", "expert_choice", "dynamic"])
def test_noise_moves_the_selection_not_the_baseline_weights(kind):
    logits = np.random.default_rng(1).normal(size=(64, 6))
    noise = np.random.default_rng(2).normal(scale=0.1, size=(64, 6))
    router = RouterConfig(kind=kind)
    clean, noisy = route_logits(OPS, logits, None, router), route_logits(OPS, logits, noise, router)
    assert not np.array_equal(clean.mask, noisy.mask)
    if kind != "dynamic":  # the baselines weight with the clean gates: positive wherever selected
        assert (noisy.weights[noisy.mask] > 0).all()


def test_expected_active_and_flops_per_router():
    assert expected_active(8, RouterConfig(kind="topk", top_k=2)) == 2.0
    assert expected_active(1, RouterConfig(kind="topk", top_k=2)) == 1.0
    assert expected_active(8, RouterConfig(kind="switch")) == 1.0
    assert expected_active(8, RouterConfig(kind="gshard")) == 2.0
    assert expected_active(8, RouterConfig(kind="expert_choice", top_k=2, capacity_factor=1.0)) == 2.0
    cfg = ModelConfig(router=RouterConfig(kind="switch"))
    d, dh = 128, 64
    assert layer_flops(cfg, 0) == 4 * d * dh + 2 * d * 8  # one expert + the gate (Prop. 1)


@pytest.mark.parametrize("schedule", ["descending", "uniform"])
@pytest.mark.parametrize("kind", ["dynamic", "topk"])
def test_matched_mlp(schedule, kind):
    cfg = ModelConfig(schedule=ScheduleConfig(schedule), router=RouterConfig(kind=kind))
    d, layers = cfg.hidden_dim, cfg.num_layers
    by_params = matched_mlp(cfg, "params")
    assert by_params.kind == "mlp" and by_params.router == cfg.router
    # one unit of width changes an MLP layer by 2d + 1 parameters: the match is within half of it per layer
    assert abs(parameter_count(by_params) - parameter_count(cfg)) <= layers * (2 * d + 1) / 2
    by_flops = matched_mlp(cfg, "flops")
    assert abs(active_flops_per_token(by_flops) - active_flops_per_token(cfg)) <= layers * 4 * d / 2
    with pytest.raises(ValueError, match="by = 'size'"):
        matched_mlp(cfg, "size")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "hash"}, "RouterConfig.kind = 'hash'"),
        ({"top_k": 0}, "RouterConfig.top_k = 0"),
        ({"capacity_factor": 0}, "RouterConfig.capacity_factor = 0"),
        ({"balance_weight": -1}, "RouterConfig.balance_weight = -1"),
    ],
)
def test_router_config_errors_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RouterConfig(**kwargs)
