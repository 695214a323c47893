"""MoUE (``spec.moue``): topology, UELB against hand-computed values, the trajectory state, conversion of
a MoE checkpoint, accounting, and the vectorised layers against a per-token loop.

Float64 throughout: 1e-12 where the same numbers are summed in another order, 1e-15 relative for
formulas evaluated as in the hand computation.
"""

from __future__ import annotations

import numpy as np
import pytest

from backends import reference
from backends.spec import ModelConfig, RouterConfig, ScheduleConfig, init_params, param_shapes, parameter_count, rng
from backends.spec import forward as F
from backends.spec.accounting import layer_flops
from backends.spec.config import MoUEConfig
from backends.spec.moue import exposure, layer_widths, moe_to_moue, pool_usage, routing_paths, uelb, windows
from backends.spec.ops import NumpyOps
from backends.spec.routers import Routing
from harness.training import step_noises

OPS = NumpyOps()


def moue(size="small", router=None, schedule=None, **kwargs):
    return ModelConfig(
        size=size, kind="moue", moue=MoUEConfig(**kwargs), router=router or RouterConfig(), schedule=schedule or ScheduleConfig()
    )


def test_staggered_rotational_windows():
    cfg = moue()  # Small, descending 8, 6, 3, 1; U = 16, stride U // L = 4
    assert windows(cfg) == [tuple(range(8)), (4, 5, 6, 7, 8, 9), (8, 9, 10), (12,)]
    assert exposure(cfg).tolist() == [1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 1, 0, 1, 0, 0, 0]
    wrap = moue(schedule=ScheduleConfig("uniform", 1, 8), pool_size=10, stride=3)
    assert windows(wrap)[2] == (6, 7, 8, 9, 0, 1, 2, 3)  # rotation wraps round the pool
    assert exposure(wrap).sum() == 4 * 8  # every layer sees E_l pool experts
    assert layer_widths(moue(local_experts=2)) == [10, 8, 5, 3]
    assert routing_paths(moue()) == 8 * 6 * 3 * 1


def test_uelb_hand_computed():
    # L = 2, E_l = 2, U = 3, stride 1: windows (0, 1) and (1, 2), exposure (1, 2, 1).
    cfg = moue(size="tiny", schedule=ScheduleConfig("uniform", 1, 2), pool_size=3, stride=1, trajectory_dim=0)
    assert windows(cfg) == [(0, 1), (1, 2)]
    layer0 = Routing(np.array([[0.8, 0.2], [0.4, 0.6]]), np.array([[1, 0], [0, 1]], dtype=bool), None)
    layer1 = Routing(np.array([[0.5, 0.5], [0.9, 0.1]]), np.array([[1, 0], [1, 0]], dtype=bool), None)
    # f: layer 0 (.5, .5) on (0, 1), layer 1 (1, 0) on (1, 2); P: (.6, .4) and (.7, .3).
    # corrected: f = (.5, 1.5/2, 0) / 1.25 = (.4, .6, 0); P = (.6, 1.1/2, .3) / 1.45
    expected = 3 * (0.4 * 0.6 + 0.6 * 0.55) / 1.45
    assert uelb(OPS, [layer0, layer1], cfg) == pytest.approx(expected, rel=1e-15)
    # uncorrected: f = (.5, 1.5, 0) / 2, P = (.6, 1.1, .3) / 2: 3 (.25 .3 + .75 .55) = 1.4625
    plain = cfg.replace(moue=MoUEConfig(pool_size=3, stride=1, trajectory_dim=0, exposure_correction=False))
    assert uelb(OPS, [layer0, layer1], plain) == pytest.approx(1.4625, rel=1e-15)


def test_uelb_is_one_when_every_layer_is_balanced():
    # Each layer balanced over its window: with the exposure correction the pool is uniform (UELB = 1);
    # without it the expert seen by both layers counts twice and the loss exceeds 1.
    cfg = moue(size="tiny", schedule=ScheduleConfig("uniform", 1, 2), pool_size=3, stride=1, trajectory_dim=0)
    balanced = Routing(np.full((2, 2), 0.5), np.eye(2, dtype=bool), None)
    assert uelb(OPS, [balanced, balanced], cfg) == pytest.approx(1.0, rel=1e-15)
    plain = cfg.replace(moue=MoUEConfig(pool_size=3, stride=1, trajectory_dim=0, exposure_correction=False))
    assert uelb(OPS, [balanced, balanced], plain) == pytest.approx(3 * (0.25**2 + 0.5**2 + 0.25**2), rel=1e-15)


def test_exposure_correction_is_a_no_op_when_every_pool_expert_has_the_same_exposure():
    # Small, uniform, pool 16: every pool expert is seen by 2 layers, and a common factor cancels in the
    # normalisation of f and P. So moue-vs-moe ablates the correction on the descending schedule instead.
    cfg = moue(size="small", schedule=ScheduleConfig("uniform"), pool_size=16)
    assert set(exposure(cfg).tolist()) == {2}
    rng = np.random.default_rng(0)
    routings = []
    for _ in range(cfg.num_layers):
        probs = rng.dirichlet(np.ones(8), size=32)
        routings.append(Routing(probs, probs >= np.sort(probs, axis=1)[:, -2:-1], None))
    plain = cfg.replace(moue=MoUEConfig(pool_size=16, exposure_correction=False))
    assert uelb(OPS, routings, plain) == uelb(OPS, routings, cfg)  # bit for bit: the factor is 1/2
    falling = moue(size="small", schedule=ScheduleConfig("descending"), pool_size=16)
    assert len(set(exposure(falling).tolist())) > 1
    routings = [Routing(p := rng.dirichlet(np.ones(e), size=32), p >= p.max(axis=1, keepdims=True), None) for e in layer_widths(falling)]
    uncorrected = falling.replace(moue=MoUEConfig(pool_size=16, exposure_correction=False))
    assert abs(uelb(OPS, routings, uncorrected) - uelb(OPS, routings, falling)) > 1e-3


def test_uelb_counts_local_experts_with_exposure_one():
    cfg = moue(size="tiny", schedule=ScheduleConfig("uniform", 1, 1), pool_size=1, stride=0, local_experts=1, trajectory_dim=0)
    # slots (pool 0, local); the universe is (pool 0, local of layer 0, local of layer 1), exposures (2, 1, 1)
    r = Routing(np.full((2, 2), 0.5), np.eye(2, dtype=bool), None)
    # f = (.5 + .5) / 2, .5, .5 -> (1/3 each); P likewise: 3 * 3 * (1/9) = 1
    assert uelb(OPS, [r, r], cfg) == pytest.approx(1.0, rel=1e-15)


def loop_forward(params, x, cfg):
    """Per-token loop reading of the MoUE model with the top-K router (argsort; explicit state update)."""
    m, k = cfg.moue, cfg.router.top_k
    out = []
    for t in range(len(x)):
        h = x[t] @ params["input.weight"] + params["input.bias"]
        state = np.zeros(m.trajectory_dim)
        for layer, window in enumerate(windows(cfg)):
            slots = [("pool.", i) for i in window] + [(f"layers.{layer}.", j) for j in range(m.local_experts)]
            gate = np.stack([params[pre + "gate.weight"][:, i] for pre, i in slots], axis=1)
            z = np.concatenate([h, state]) @ gate
            g = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
            top = np.argsort(-g, kind="stable")[:k]
            w = np.zeros(len(slots))
            w[top] = g[top] / g[top].sum()
            y = np.zeros_like(h)
            for s in top:
                pre, i = slots[s]
                e = {key: params[pre + "experts." + key][i] for key in ("w1", "b1", "w2", "b2")}
                y += w[s] * (np.maximum(h @ e["w1"] + e["b1"], 0) @ e["w2"] + e["b2"])
            if layer < cfg.num_layers - 1:
                emb = np.stack([params[pre + "trajectory.weight"][i] for pre, i in slots])
                v = state + w @ emb
                state = (v - v.mean()) / np.sqrt(((v - v.mean()) ** 2).mean() + cfg.layer_norm_eps)
            h = h + y
        h = (h - h.mean()) / np.sqrt(h.var() + cfg.layer_norm_eps) * params["norm.gamma"] + params["norm.beta"]
        out.append(h @ params["head.weight"] + params["head.bias"])
    return np.array(out)


def test_moue_layers_equal_the_loop():
    cfg = moue(router=RouterConfig(kind="topk", top_k=2), pool_size=10, local_experts=1, trajectory_dim=4)
    params = init_params(cfg, 3)
    x = rng.sample_generator(0).random((24, 784))
    logits, routings = reference.forward(params, x, cfg)
    np.testing.assert_allclose(logits, loop_forward(params, x, cfg), rtol=0, atol=1e-12)
    assert [r.mask.shape for r in routings] == [(24, w) for w in layer_widths(cfg)]


def test_trajectory_state_steers_later_layers_only():
    cfg = moue(router=RouterConfig(kind="topk", top_k=2), trajectory_dim=4)
    params = init_params(cfg, 0)
    x = rng.sample_generator(1).random((64, 784))
    _, routings = reference.forward(params, x, cfg)
    flat = dict(params, **{"pool.trajectory.weight": np.zeros_like(params["pool.trajectory.weight"])})
    _, routings_flat = reference.forward(flat, x, cfg)
    np.testing.assert_array_equal(routings[0].probs, routings_flat[0].probs)  # layer 0 sees r_0 = 0 either way
    assert not np.allclose(routings[1].probs, routings_flat[1].probs)


@pytest.mark.parametrize("kind", ["dynamic", "switch", "expert_choice"])
def test_conversion_with_disjoint_windows_reproduces_the_moe(kind):
    # Disjoint windows and no trajectory state: the converted MoUE is the MoE, exactly.
    router = RouterConfig(kind=kind)
    moe_cfg = ModelConfig(size="tiny", schedule=ScheduleConfig("uniform", 1, 4), router=router)
    moue_cfg = moe_cfg.replace(kind="moue", moue=MoUEConfig(pool_size=8, stride=4, trajectory_dim=0))
    params = init_params(moe_cfg, 5)
    converted = moe_to_moue(params, moe_cfg, moue_cfg)
    assert list(converted) == list(param_shapes(moue_cfg))
    x = rng.sample_generator(2).random((64, 784))
    noises = step_noises(moe_cfg, 0, 0, 64)
    (a, ra), (b, rb) = reference.forward(params, x, moe_cfg, noises), reference.forward(converted, x, moue_cfg, noises)
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-12)
    assert all(np.array_equal(p.mask, q.mask) for p, q in zip(ra, rb))


def test_conversion_averages_overlapping_windows():
    moe_cfg = ModelConfig()  # descending 8, 6, 3, 1
    moue_cfg = moe_cfg.replace(kind="moue", moue=MoUEConfig())  # windows as in test_staggered_rotational_windows
    params = init_params(moe_cfg, 1)
    converted = moe_to_moue(params, moe_cfg, moue_cfg, seed=3)
    w1 = converted["pool.experts.w1"]
    np.testing.assert_allclose(w1[0], params["layers.0.experts.w1"][0], rtol=1e-15)
    # pool 5 = layer 0's expert 5 and layer 1's expert 1
    np.testing.assert_allclose(w1[5], (params["layers.0.experts.w1"][5] + params["layers.1.experts.w1"][1]) / 2, rtol=1e-15)
    assert (converted["pool.gate.weight"][128:, :11] == 0).all()  # the trajectory rows start at zero
    fresh = init_params(moue_cfg, 3)
    np.testing.assert_array_equal(w1[11], fresh["pool.experts.w1"][11])  # no window covers pool 11
    np.testing.assert_array_equal(converted["head.weight"], params["head.weight"])
    with pytest.raises(ValueError, match="differ in schedule"):
        moe_to_moue(params, moe_cfg, moue_cfg.replace(schedule=ScheduleConfig("uniform")))


def test_accounting_matches_active_experts():
    moe_cfg = ModelConfig(router=RouterConfig(kind="topk"))
    moue_cfg = moe_cfg.replace(kind="moue", moue=MoUEConfig(trajectory_dim=0))
    # the same active experts per token and layer: the same FLOPs, gate included (one column per slot)
    assert [layer_flops(moue_cfg, i) for i in range(4)] == [layer_flops(moe_cfg, i) for i in range(4)]
    d, dh, u = 128, 64, 16
    shapes = param_shapes(moue_cfg)
    assert shapes["pool.experts.w1"] == (u, d, dh) and shapes["pool.gate.weight"] == (d, u)
    assert parameter_count(moue_cfg) == sum(int(np.prod(s)) for s in shapes.values())
    usage = pool_usage(moue_cfg, [np.ones(8), np.ones(6), np.ones(3), np.ones(1)])
    assert usage.tolist() == exposure(moue_cfg).tolist()


def test_step_noises_have_one_column_per_slot():
    cfg = moue(local_experts=1)
    assert [n.shape for n in step_noises(cfg, 0, 0, 5)] == [(5, 9), (5, 7), (5, 4), (5, 2)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "moue"}, "ModelConfig.moue = None is invalid: kind='moue' needs a MoUEConfig"),
        ({"moue": MoUEConfig()}, "only for kind='moue'"),
        ({"kind": "moue", "moue": MoUEConfig(pool_size=4)}, "pool_size must be >= the widest layer's window E_l = 8"),
    ],
)
def test_model_config_checks_moue(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pool_size": 0}, "MoUEConfig.pool_size = 0"),
        ({"stride": -1}, "MoUEConfig.stride = -1"),
        ({"local_experts": 1.5}, "MoUEConfig.local_experts = 1.5"),
        ({"trajectory_dim": -2}, "MoUEConfig.trajectory_dim = -2"),
        ({"exposure_correction": "yes"}, "MoUEConfig.exposure_correction = 'yes'"),
    ],
)
def test_moue_config_errors_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MoUEConfig(**kwargs)


def test_model_forward_routes_moue_with_every_router():
    for kind in ("dynamic", "topk", "switch", "gshard", "expert_choice"):
        cfg = moue(size="tiny", router=RouterConfig(kind=kind), local_experts=1)
        params = init_params(cfg, 0)
        x = rng.sample_generator(0).random((32, 784))
        logits, routings = F.model_forward(OPS, params, x, cfg, step_noises(cfg, 0, 0, 32))
        assert logits.shape == (32, 10) and np.isfinite(logits).all() and len(routings) == 2
