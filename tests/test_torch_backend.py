"""PyTorch backend against the float64 reference, and its own guarantees (gradcheck, determinism).

Tolerances: float64 uses the same formulas in another summation order, so logits agree to ~1e-15 and
1e-10 leaves five orders of margin. float32 carries ~6e-8 relative rounding per operation through about
ten matrix products of width <= 784, giving ~1e-6 of the logits' scale: 1e-5 bounds it with margin.
Selected sets may differ only for tokens with a gate within 1e-6 of the threshold (or of a tie), where
float32 rounding legitimately decides; those are counted and must be few.
"""

from __future__ import annotations

import numpy as np
import pytest

from backends import reference
from backends.common import DYNAMOE_LAYER_NAMES
from backends.spec import ModelConfig, RouterConfig, TrainConfig, init_params, rng
from backends.spec.optim import adamw_update
from harness.parity import mask_disagreement, max_abs_error, max_rel_error
from tests.backend_checks import (
    LAYER_CASES,
    ROUTER_CASES,
    check_export_roundtrip_and_shape_errors,
    check_layer_parity,
    check_optimizer_state_continues_training_exactly,
    check_router_parity,
)
from tests.conftest import backend_or_skip
from tests.test_reference import CONFIGS, inputs

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def bt():
    return backend_or_skip("torch")


def noises_for(cfg, x, step=0, seed=1):
    tokens = x.size if cfg.task == "lm" else len(x)
    return (
        [rng.gate_noise(seed, step, l, (tokens, e), 0.1) for l, e in enumerate(cfg.experts_per_layer())] if cfg.kind == "dynamoe" else None
    )


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("training", [False, True])
def test_forward_parity(bt, name, training):
    cfg = CONFIGS[name]
    params = init_params(cfg, 2)
    x = inputs(cfg, n=256 if cfg.task == "classify" else 64)
    noises = noises_for(cfg, x) if training else None
    ref, ref_routings = reference.forward(params, x, cfg, noises)

    logits64, masks64 = bt.forward(bt.build_model(cfg, params, "float64"), x, noises)
    assert max_abs_error(logits64, ref) <= 1e-10
    assert all(np.array_equal(m, r.mask) for m, r in zip(masks64, ref_routings))

    logits32, masks32 = bt.forward(bt.build_model(cfg, params, "float32"), x, noises)
    assert logits32.dtype == np.float32
    assert max_rel_error(logits32, ref) <= 1e-5
    for layer, (m, r) in enumerate(zip(masks32, ref_routings)):
        noisy = r.probs if noises is None else r.probs + noises[layer]
        differing, unexplained = mask_disagreement(m, r.mask, noisy, cfg.router.tau, cfg.router.scope)
        assert unexplained == 0 and differing <= 2, (layer, differing)


def test_gradcheck_layer_float64(bt):
    import torch

    from backends.spec.dynamic import gate_threshold

    # A small layer (d = 8, E = 5, d_h = 6, 16 tokens) keeps the numerical Jacobian cheap; all inputs checked.
    gen = rng.sample_generator(0)
    d, e, dh, n = 8, 5, 6, 16
    arrays = [gen.uniform(-1, 1, s) for s in ((d, e), (e, d, dh), (e, dh), (e, dh, d), (e, d))]
    layer = bt.DynaMoE.from_arrays(RouterConfig(scope="batch"), dict(zip(DYNAMOE_LAYER_NAMES, arrays)), dtype="float64")
    h = torch.tensor(gen.standard_normal((n, d)), dtype=torch.float64, requires_grad=True)
    noise = torch.as_tensor(rng.gate_noise(0, 0, 0, (n, e), 0.1))
    # The selection is piecewise constant: check that gradcheck's 1e-6 perturbations cannot flip it.
    routing = layer.forward_with_routing(h, noise)[1]
    noisy = routing.probs.detach().numpy() + noise.numpy()
    assert np.abs(noisy - gate_threshold(noisy, 70, "batch")).min() > 1e-4
    assert len(set(routing.mask.sum(dim=1).tolist())) > 1  # a dynamic count is what is differentiated
    weights = list(layer.parameters())
    assert torch.autograd.gradcheck(lambda h, *w: layer(h, noise), (h, *weights), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_gradients_against_finite_differences_of_the_reference(bt):
    # An independent check of the whole model's gradient: central differences of the float64 reference.
    cfg = ModelConfig(size="tiny")
    params = init_params(cfg, 4)
    x, y = inputs(cfg, n=32), rng.sample_generator(9).integers(0, 10, 32)
    loss, grads = bt.gradients(bt.build_model(cfg, params, "float64"), x, y)
    assert loss == pytest.approx(reference.loss(params, x, y, cfg), abs=1e-12)
    gen = np.random.default_rng(0)
    for name in ("input.weight", "layers.0.gate.weight", "layers.0.experts.w2", "head.bias"):
        idx = tuple(gen.integers(0, s) for s in params[name].shape)
        plus, minus = {k: v.copy() for k, v in params.items()}, {k: v.copy() for k, v in params.items()}
        plus[name][idx] += 1e-6
        minus[name][idx] -= 1e-6
        numeric = (reference.loss(plus, x, y, cfg) - reference.loss(minus, x, y, cfg)) / 2e-6
        assert grads[name][idx] == pytest.approx(numeric, rel=1e-5, abs=1e-9), name


def test_adamw_is_the_spec_formula(bt):
    import torch

    cfg = TrainConfig()
    p0 = rng.sample_generator(3).standard_normal(5)
    grads = [rng.sample_generator(i).standard_normal(5) for i in range(3)]
    param = torch.nn.Parameter(torch.as_tensor(p0.copy()))
    opt = torch.optim.AdamW([param], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay, foreach=False)
    p, m, v = p0.copy(), np.zeros(5), np.zeros(5)
    for step, g in enumerate(grads, start=1):
        param.grad = torch.as_tensor(g)
        opt.step()
        p, m, v = adamw_update(p, g, m, v, step, cfg.lr, cfg)
        np.testing.assert_allclose(param.detach().numpy(), p, rtol=0, atol=1e-15)


def _short_run(bt, compile=False, steps=6):
    cfg = ModelConfig(size="tiny")
    train = TrainConfig(batch_size=32)
    model = bt.build_model(cfg, init_params(cfg, 0))
    trainer = bt.Trainer(model, train, compile=compile)
    gen = rng.sample_generator(5)
    x, y = gen.random((32 * steps, 784)), gen.integers(0, 10, 32 * steps)
    losses = []
    for s in range(steps):
        sl = slice(32 * s, 32 * (s + 1))
        losses.append(bt.to_float(trainer.step(x[sl], y[sl], noises_for(cfg, x[sl], step=s), 1e-3)))
    return np.array(losses), bt.export_params(model)


def test_training_is_bit_reproducible(bt):
    a, pa = _short_run(bt)
    b, pb = _short_run(bt)
    assert np.array_equal(a, b)
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)
    assert np.isfinite(a).all()


@pytest.mark.slow
def test_torch_compile_matches_eager(bt):
    eager, _ = _short_run(bt, compile=False, steps=3)
    compiled, _ = _short_run(bt, compile=True, steps=3)
    np.testing.assert_allclose(compiled, eager, rtol=1e-5)


def test_export_roundtrip_and_shape_errors(bt):
    check_export_roundtrip_and_shape_errors(bt, ModelConfig())


@pytest.mark.parametrize("case", ROUTER_CASES)
def test_router_parity(bt, case):
    check_router_parity(bt, case)


@pytest.mark.parametrize("case", LAYER_CASES)
def test_native_layer_parity(bt, case):
    check_layer_parity(bt, case)


def test_moue_export_roundtrip(bt):
    check_export_roundtrip_and_shape_errors(bt, ROUTER_CASES["moue"])


def test_models_go_where_the_device_variable_says(bt, monkeypatch):
    """``DYNAMOE_TORCH_DEVICE`` picks the device (unset: CUDA when present); a bad name is a clear error."""
    from backends.torch.model import DEVICE_ENV

    cfg = ModelConfig(size="tiny")
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    model = bt.build_model(cfg, init_params(cfg, 0))
    assert model.device.type == "cpu" and bt.runtime_info()["device"] == "cpu"
    monkeypatch.setenv(DEVICE_ENV, "warp-drive")
    with pytest.raises(ValueError, match="DYNAMOE_TORCH_DEVICE='warp-drive' is not a torch device"):
        bt.build_model(cfg, init_params(cfg, 0))


def test_optimizer_state_continues_training_exactly(bt):
    check_optimizer_state_continues_training_exactly(bt, compile=False)
