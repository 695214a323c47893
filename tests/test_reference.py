"""The vectorised float64 reference against a naive per-token loop (tests/oracle.py)."""

from __future__ import annotations

import numpy as np
import pytest

from backends import reference
from backends.spec import ModelConfig, RouterConfig, ScheduleConfig, init_params, rng
from tests import oracle

CONFIGS = {
    "small-descending": ModelConfig(),
    "small-token-scope": ModelConfig(router=RouterConfig(scope="token")),
    "small-logits-kmin2": ModelConfig(router=RouterConfig(combine="logits", k_min=2, k_max=4)),
    "tiny-wave-up": ModelConfig(size="tiny", schedule=ScheduleConfig("wave-up", 2, 6)),
    "small-mlp": ModelConfig(kind="mlp"),
    "tiny-lm": ModelConfig(size="tiny", task="lm", vocab_size=97),
}


def inputs(cfg, n=48, seed=0):
    gen = rng.sample_generator(seed)
    if cfg.task == "lm":
        return gen.integers(0, cfg.vocab_size, size=(n // 8, 8))
    return gen.random((n, cfg.input_dim))


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("training", [False, True])
def test_reference_equals_the_loop_oracle(name, training):
    cfg = CONFIGS[name]
    params = init_params(cfg, 1)
    x = inputs(cfg)
    tokens = x.size if cfg.task == "lm" else len(x)
    noises = None
    if training and cfg.kind == "dynamoe":
        noises = [rng.gate_noise(1, 0, l, (tokens, e), 0.1) for l, e in enumerate(cfg.experts_per_layer())]
    logits, routings = reference.forward(params, x, cfg, noises)
    expected, masks = oracle.forward(params, x, cfg, noises)
    assert logits.dtype == np.float64 and logits.shape == expected.shape
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-12)  # same float64 math, other order
    assert len(routings) == len(masks)
    for r, m in zip(routings, masks):
        assert np.array_equal(r.mask, m)
        np.testing.assert_allclose(r.weights.sum(axis=1), 1.0, atol=1e-12)


def test_routing_stats_table6_shape():
    cfg = ModelConfig()
    x = inputs(cfg, n=256)
    _, routings = reference.forward(init_params(cfg, 0), x, cfg)
    stats = reference.routing_stats(routings)
    assert [s["experts"] for s in stats] == [8, 6, 3, 1]
    assert stats[-1] == {"experts": 1, "avg_active": 1.0, "utilisation": 1.0, "usage": [1.0], "entropy_bits": 0.0}
    assert 2.2 < stats[0]["avg_active"] < 2.7  # batch scope: about (1 - 0.7) * 8 = 2.4 (Table 6: 2.4)
    for s in stats:
        assert s["utilisation"] == pytest.approx(s["avg_active"] / s["experts"])
        assert 0 <= s["entropy_bits"] <= np.log2(s["experts"]) + 1e-12
        assert sum(s["usage"]) == pytest.approx(1.0)


def test_loss_is_log_classes_at_a_uniform_head():
    cfg = ModelConfig(kind="mlp", size="tiny")
    params = init_params(cfg, 0)
    params["head.weight"][:] = 0
    params["head.bias"][:] = 0
    assert reference.loss(params, inputs(cfg), np.zeros(48, dtype=int), cfg) == pytest.approx(np.log(10))
