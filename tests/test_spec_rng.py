"""Seeded randomness: streams are deterministic, independent, and have the documented distributions."""

from __future__ import annotations

import numpy as np
import pytest

from backends.spec import ModelConfig, init_params, rng
from backends.spec.init import param_shapes


def test_same_seed_same_numbers_other_seed_other_numbers():
    a, b, c = init_params(ModelConfig(), 0), init_params(ModelConfig(), 0), init_params(ModelConfig(), 1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["input.weight"], c["input.weight"])


def test_tensor_streams_are_independent_of_the_architecture():
    # Changing the schedule changes the expert tensors, never the input projection or the head.
    a = init_params(ModelConfig(), 3)
    b = init_params(ModelConfig(schedule=ModelConfig().schedule.__class__("uniform")), 3)
    for name in ("input.weight", "input.bias", "head.weight", "layers.0.experts.w1"):
        assert np.array_equal(a[name], b[name])
    assert a["layers.1.gate.weight"].shape != b["layers.1.gate.weight"].shape


def test_documented_distributions():
    cfg = ModelConfig()
    p = init_params(cfg, 0)
    assert set(p) == set(param_shapes(cfg))
    bound = 1 / np.sqrt(784)
    assert np.abs(p["input.weight"]).max() <= bound and np.abs(p["input.weight"]).max() > 0.99 * bound
    assert np.abs(p["layers.0.experts.w2"]).max() <= 1 / np.sqrt(64)  # fan-in of the second expert matrix
    assert p["input.weight"].std() == pytest.approx(bound / np.sqrt(3), rel=0.01)  # uniform's std
    assert (p["norm.gamma"] == 1).all() and (p["norm.beta"] == 0).all()
    emb = init_params(ModelConfig(size="tiny", task="lm", vocab_size=5000), 0)["embed.weight"]
    assert emb.std() == pytest.approx(0.02, rel=0.02)


def test_data_order_and_batches():
    order = rng.data_order(0, 0, 1000)
    assert sorted(order.tolist()) == list(range(1000))
    assert not np.array_equal(order, rng.data_order(0, 1, 1000))  # a new order every epoch
    assert np.array_equal(order, rng.data_order(0, 0, 1000))
    batches = rng.batches(0, 0, 1000, 256)
    assert [len(b) for b in batches] == [256, 256, 256, 232]
    assert np.array_equal(np.concatenate(batches), order)


def test_gate_noise_scale_and_independence():
    a = rng.gate_noise(0, 5, 1, (4096, 8), 0.1)
    assert a.std() == pytest.approx(0.1, rel=0.03) and abs(a.mean()) < 0.005
    assert np.array_equal(a, rng.gate_noise(0, 5, 1, (4096, 8), 0.1))
    assert not np.array_equal(a, rng.gate_noise(0, 5, 2, (4096, 8), 0.1))
    assert not np.array_equal(a, rng.gate_noise(0, 6, 1, (4096, 8), 0.1))


def test_split_and_bad_seed():
    kept, held = rng.split_indices(0, 100, 10)
    assert len(held) == 10 and len(kept) == 90 and not set(kept) & set(held)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        rng.generator(-1, rng.PARAMS)
