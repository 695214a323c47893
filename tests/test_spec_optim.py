"""AdamW (``spec.optim``): the first step by hand, and PyTorch's built-in AdamW, as the torch ``Trainer``
builds it (``fused=True``), equal to the spec's update.

Tolerance: float64, the same formula in another arrangement (``torch`` divides ``lr`` by ``1 - b1^t`` and
``sqrt(v)`` by ``sqrt(1 - b2^t)``), so parameters of scale ~0.1 agree to ~3e-17 (measured); 1e-14 leaves margin.
"""

from __future__ import annotations

import numpy as np
import pytest

from backends.spec import ModelConfig, TrainConfig, init_params, layer_widths, rng
from backends.spec.ops import NumpyOps
from backends.spec.optim import adamw_step, adamw_update, bias_corrections
from tests.conftest import backend_or_skip


def test_first_step_by_hand():
    """At t = 1 from zero moments ``m_hat = g`` and ``v_hat = g^2``: ``p (1 - lr wd) - lr g / (|g| + eps)``."""
    cfg = TrainConfig()
    gen = rng.sample_generator(7)
    p, g = gen.standard_normal(6), gen.standard_normal(6)
    new, m, v = adamw_update(p, g, np.zeros(6), np.zeros(6), 1, 1e-3, cfg)
    np.testing.assert_allclose(m, (1 - cfg.beta1) * g, rtol=1e-15)
    np.testing.assert_allclose(v, (1 - cfg.beta2) * g * g, rtol=1e-15)
    np.testing.assert_allclose(new, p * (1 - 1e-3 * cfg.weight_decay) - 1e-3 * g / (np.abs(g) + cfg.eps), rtol=1e-12)


def test_adamw_update_is_adamw_step_on_numpy():
    cfg = TrainConfig()
    gen = rng.sample_generator(8)
    p, g, m, v = gen.standard_normal(4), gen.standard_normal(4), gen.standard_normal(4), gen.random(4)
    expected = adamw_step(NumpyOps(), p, g, m, v, 3e-4, bias_corrections(5, cfg), cfg)
    for got, want in zip(adamw_update(p, g, m, v, 5, 3e-4, cfg), expected):
        assert np.array_equal(got, want)


@pytest.mark.torch
def test_torch_trainer_is_the_spec_update():
    """Three ``Trainer.step`` calls with new learning rates = ``adamw_update`` on the backend's gradients."""
    bt = backend_or_skip("torch")
    cfg, train = ModelConfig(size="tiny"), TrainConfig()
    model = bt.build_model(cfg, init_params(cfg, 0), "float64")
    trainer = bt.Trainer(model, train)
    gen = rng.sample_generator(4)
    x, y = gen.random((96, 784)), gen.integers(0, 10, 96)
    p = bt.export_params(model)
    m, v = ({k: np.zeros_like(a) for k, a in p.items()} for _ in range(2))
    for step, lr in enumerate((1e-3, 7e-4, 3e-4), start=1):
        xs, ys = x[32 * (step - 1) : 32 * step], y[32 * (step - 1) : 32 * step]
        noises = [rng.gate_noise(1, step, layer, (32, width), 0.1) for layer, width in enumerate(layer_widths(cfg))]
        _, grads = bt.gradients(model, xs, ys, noises)
        trainer.step(xs, ys, noises, lr)
        got = bt.export_params(model)
        for k in p:
            p[k], m[k], v[k] = adamw_update(p[k], grads[k], m[k], v[k], step, lr, train)
            np.testing.assert_allclose(got[k], p[k], rtol=0, atol=1e-14, err_msg=f"{k} at step {step}")
