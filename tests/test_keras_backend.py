"""Keras 3 backend (Keras on JAX or on PyTorch, by ``KERAS_BACKEND``; unset: jax) against the float64
reference, the PyTorch backend and the spec's AdamW.

Run once per Keras backend (Keras picks it once per process)::

    KERAS_BACKEND=jax python -m pytest tests/test_keras_backend.py
    KERAS_BACKEND=torch python -m pytest tests/test_keras_backend.py

Tolerances (the same reasoning as ``test_torch_backend``):

- forward, float32: ``max|a - ref| / max|ref| <= 1e-5``. float32 rounds each operation by ~6e-8
  relative; about ten matrix products of width <= 784 accumulate ~1e-6 of the logits' scale (measured:
  2e-7 to 9e-7), so 1e-5 bounds it with an order of margin.
- forward, float64: ``max|a - ref| <= 1e-10``. The same formulas in another summation order agree to
  ~1e-15 (measured: <= 3e-15); 1e-10 leaves five orders of margin and still catches any float32 step.
- selected masks: float64 identical; float32 may differ only for tokens with a (noisy) gate within 1e-6
  of the threshold (``spec.routing.gate_threshold``) or of a tie, where float32 rounding legitimately
  decides (``harness.parity.mask_disagreement``); those are counted and must be few (<= 2).
- gradients vs the PyTorch backend: per parameter ``||g - g_torch|| / ||g_torch||`` <= 1e-4 in float32
  (float32 rounding through forward and backward, ~1e-6 measured) and <= 1e-10 in float64 (~1e-15).
- AdamW vs ``spec.optim.adamw_update``: float64 to 1e-15 of the parameters' scale (the formula is the
  spec's, term by term: measured bit-identical); float32 to 1e-6 (rounding the parameters to float32
  alone is 6e-8 relative).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

import backends
from backends import reference
from backends.common import under
from backends.spec import ModelConfig, RouterConfig, TrainConfig, init_params, rng
from backends.spec import forward as F
from backends.spec.ops import NumpyOps
from backends.spec.optim import adamw_update, learning_rate
from harness.parity import mask_disagreement, max_abs_error, max_rel_error, norm_rel_error
from harness.training import step_noises
from tests.backend_checks import (
    LAYER_CASES,
    ROUTER_CASES,
    check_export_roundtrip_and_shape_errors,
    check_layer_parity,
    check_optimizer_state_continues_training_exactly,
    check_router_parity,
)
from tests.conftest import backend_or_skip

KERAS_BACKEND = os.environ.get("KERAS_BACKEND", "jax")
NAME = f"keras-{KERAS_BACKEND}"
_MARKS = {"jax": pytest.mark.keras_jax, "torch": pytest.mark.keras_torch}
pytestmark = _MARKS.get(KERAS_BACKEND, pytest.mark.skip(reason=f"KERAS_BACKEND={KERAS_BACKEND!r}: this project runs Keras on jax or torch"))

# Small where the brief names it; Tiny elsewhere (on JAX each config's forward is compiled, ~1 s for Small).
CONFIGS = {
    "small-descending": ModelConfig(),
    "tiny-token-scope": ModelConfig(size="tiny", router=RouterConfig(scope="token")),
    "tiny-logits-kmin2": ModelConfig(size="tiny", router=RouterConfig(combine="logits", k_min=2, k_max=4)),
    "small-mlp": ModelConfig(kind="mlp"),
    "tiny-lm": ModelConfig(size="tiny", task="lm", vocab_size=97),
}


@pytest.fixture(scope="module")
def bk():
    return backend_or_skip(NAME)


@pytest.fixture(scope="module")
def bt():
    return backend_or_skip("torch")


def inputs(cfg: ModelConfig, n: int, seed: int = 0):
    """``n`` images, or ``n // 8`` sequences of 8 token ids (``n`` routing tokens either way)."""
    gen = rng.sample_generator(seed)
    if cfg.task == "lm":
        return gen.integers(0, cfg.vocab_size, size=(n // 8, 8))
    return gen.random((n, cfg.input_dim))


def labels(cfg: ModelConfig, x, seed: int = 9):
    return rng.sample_generator(seed).integers(0, cfg.output_dim, size=x.shape if cfg.task == "lm" else len(x))


def noises_for(cfg: ModelConfig, x, step: int = 0, seed: int = 1):
    """Training-mode gate noise of every layer (Eq. 7), ``spec.rng.gate_noise``."""
    if cfg.kind != "dynamoe":
        return None
    tokens = x.size if cfg.task == "lm" else len(x)
    return [rng.gate_noise(seed, step, layer, (tokens, e), cfg.router.noise_std) for layer, e in enumerate(cfg.experts_per_layer())]


def check_masks_float32(cfg, masks, ref_routings, noises):
    """Masks equal the reference's except at tokens whose noisy gate is within 1e-6 of the threshold or a tie."""
    assert len(masks) == len(ref_routings)
    for layer, (m, r) in enumerate(zip(masks, ref_routings)):
        assert m.dtype == bool and m.shape == r.mask.shape
        noisy = r.probs if noises is None else r.probs + noises[layer]
        differing, unexplained = mask_disagreement(m, r.mask, noisy, cfg.router.tau, cfg.router.scope)
        assert unexplained == 0 and differing <= 2, (layer, differing, unexplained)


@pytest.mark.parametrize("name", CONFIGS)
def test_forward_parity(bk, name):
    """float32 in training mode (gate noise, Eq. 7; also evaluation mode for Small), float64 in evaluation."""
    cfg = CONFIGS[name]
    params = init_params(cfg, 2)
    x = inputs(cfg, n=256 if cfg.task == "classify" else 64)

    model32 = bk.build_model(cfg, params, "float32")
    for noises in [noises_for(cfg, x)] + ([None] if name == "small-descending" else []):
        ref, ref_routings = reference.forward(params, x, cfg, noises)
        logits, masks = bk.forward(model32, x, noises)
        assert logits.dtype == np.float32 and logits.shape == ref.shape
        assert max_rel_error(logits, ref) <= 1e-5
        check_masks_float32(cfg, masks, ref_routings, noises)

    ref, ref_routings = reference.forward(params, x, cfg)
    logits, masks = bk.forward(bk.build_model(cfg, params, "float64"), x)
    assert logits.dtype == np.float64
    assert max_abs_error(logits, ref) <= 1e-10
    assert len(masks) == len(ref_routings) and all(np.array_equal(m, r.mask) for m, r in zip(masks, ref_routings))


@pytest.mark.parametrize("name, dtype, tol", [("tiny", "float32", 1e-4), ("tiny-lm", "float64", 1e-10)])
def test_gradients_match_torch(bk, bt, name, dtype, tol):
    # The selection is piecewise constant: these inputs have no gate within float32 rounding of a
    # threshold, so both backends select the same experts and their gradients are comparable.
    cfg = ModelConfig(size="tiny") if name == "tiny" else CONFIGS[name]
    params = init_params(cfg, 4)
    x = inputs(cfg, n=64)
    y, noises = labels(cfg, x), noises_for(cfg, x)
    loss, grads = bk.gradients(bk.build_model(cfg, params, dtype), x, y, noises)
    loss_torch, grads_torch = bt.gradients(bt.build_model(cfg, params, dtype), x, y, noises)
    assert list(grads) == list(params)
    assert all(grads[k].dtype == np.dtype(dtype) and grads[k].shape == params[k].shape for k in grads)
    assert abs(loss - loss_torch) <= tol * abs(loss_torch)
    assert loss == pytest.approx(reference.loss(params, x, y, cfg, noises), rel=1e-5 if dtype == "float32" else 1e-12)
    errors = {k: norm_rel_error(grads[k], grads_torch[k]) for k in grads}
    assert max(errors.values()) <= tol, max(errors.items(), key=lambda kv: kv[1])


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-6), ("float64", 1e-15)])
def test_adamw_is_the_spec_formula(bk, dtype, tol):
    import keras

    from backends.keras.layers import float_dtype
    from backends.keras.train import SpecAdamW

    cfg = TrainConfig()
    float_dtype(dtype)  # float64 on JAX needs jax_enable_x64
    p0 = rng.sample_generator(3).standard_normal(5)
    variable = keras.Variable(p0.astype(dtype), dtype=dtype)
    opt = SpecAdamW(cfg, dtype=dtype)
    p, m, v = p0.copy(), np.zeros(5), np.zeros(5)
    for step, lr in enumerate([1e-3, 7e-4, 3e-4], start=1):  # a new learning rate every step
        g = rng.sample_generator(step).standard_normal(5)
        opt.learning_rate_variable.assign(lr)
        opt.apply([keras.ops.convert_to_tensor(g.astype(dtype))], [variable])
        p, m, v = adamw_update(p, g, m, v, step, lr, cfg)
        got = keras.ops.convert_to_numpy(variable.value)
        assert got.dtype == np.dtype(dtype)
        assert max_rel_error(got, p) <= tol, (step, max_rel_error(got, p))


def test_trainer_step_is_adamw_on_the_gradient(bk):
    """One ``Trainer.step`` = ``adamw_update`` applied to the gradient (float64); new learning rates each
    step do not recompile the JAX step. (The MLP: the optimiser does not care, and it compiles fastest.)"""
    cfg = ModelConfig(size="tiny", kind="mlp")
    params = init_params(cfg, 5)
    x = inputs(cfg, n=32)
    y, noises = labels(cfg, x), noises_for(cfg, x)
    # The gradient from the PyTorch backend where installed (equal to this backend's to ~1e-15, see
    # test_gradients_match_torch, and not compiled again on JAX), else from this backend.
    oracle = bk if backends.unavailable_reason("torch") else backends.load("torch")
    _, grads = oracle.gradients(oracle.build_model(cfg, params, "float64"), x, y, noises)
    model = bk.build_model(cfg, params, "float64")
    train = TrainConfig()
    trainer = bk.Trainer(model, train, compile=KERAS_BACKEND == "jax")
    loss = trainer.step(x, y, noises, 7e-4)
    assert bk.to_float(loss) == pytest.approx(reference.loss(params, x, y, cfg, noises), abs=1e-12)
    after = bk.export_params(model)
    for name, value in params.items():
        expected, _, _ = adamw_update(value, grads[name], 0.0, 0.0, 1, 7e-4, train)
        assert max_abs_error(after[name], expected) <= 1e-12, name
    for lr in [5e-4, 2e-4]:
        trainer.step(x, y, noises, lr)
    assert trainer.traces == (1 if trainer.compiled else 3)


def _batches(steps: int):
    """Synthetic clusters: ``steps`` batches of 64 images."""
    gen = rng.sample_generator(5)
    centres = gen.standard_normal((10, 784))
    y = gen.integers(0, 10, 64 * steps)
    x = 0.5 * centres[y] + 0.5 * gen.random((64 * steps, 784))
    return [(x[64 * s : 64 * (s + 1)], y[64 * s : 64 * (s + 1)]) for s in range(steps)]


def _run(backend, steps: int = 20, compile: bool = False):
    """Tiny, batch 64, with the harness's gate noise and cosine learning rate; losses and final params.

    Tiny, not Small: on JAX each run compiles its step (~2 s for Tiny, ~5 s for Small on 2 CPU cores)."""
    cfg, train = ModelConfig(size="tiny"), TrainConfig(batch_size=64)
    model = backend.build_model(cfg, init_params(cfg, 0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # keras-torch: compile=True runs eagerly and says so
        trainer = backend.Trainer(model, train, compile=compile)
    losses = [
        trainer.step(x, y, noises_for(cfg, x, step=s, seed=0), learning_rate(s, steps, train)) for s, (x, y) in enumerate(_batches(steps))
    ]
    return np.array([backend.to_float(v) for v in losses]), backend.export_params(model)


def test_training_run_is_finite_decreasing_reproducible(bk):
    losses, params = _run(bk, compile=True)
    assert np.isfinite(losses).all()
    assert losses[-5:].mean() < 0.5 * losses[:5].mean()
    again, params_again = _run(bk, compile=True)
    assert np.array_equal(losses, again)
    assert all(np.array_equal(params[k], params_again[k]) for k in params)
    if backends.unavailable_reason("torch") is None:
        # Same batches, noise, learning rates and AdamW as the PyTorch backend: the trajectories agree to
        # float32 rounding amplified over 20 steps (measured ~1e-6; a routing flip would show as a jump).
        expected, _ = _run(backends.load("torch"))
        np.testing.assert_allclose(losses, expected, rtol=1e-3)


def test_compile_flag(bk):
    cfg = ModelConfig(size="tiny", kind="mlp")
    model = bk.build_model(cfg, init_params(cfg, 0))
    if KERAS_BACKEND == "jax":
        assert bk.Trainer(model, TrainConfig(), compile=True).compiled
    else:
        with pytest.warns(UserWarning, match="runs eagerly on keras-torch"):
            assert not bk.Trainer(model, TrainConfig(), compile=True).compiled
    assert not bk.Trainer(model, TrainConfig()).compiled


@pytest.mark.parametrize("name", ["tiny-token-scope", "tiny-mlp", "tiny-lm"])
def test_save_load_roundtrip(bk, tmp_path, name):
    import keras

    cfg = {
        "tiny-token-scope": ModelConfig(size="tiny", router=RouterConfig(scope="token")),
        "tiny-mlp": ModelConfig(size="tiny", kind="mlp"),
    }.get(name, CONFIGS["tiny-lm"])
    model = bk.build_model(cfg, init_params(cfg, 3))
    x = inputs(cfg, n=64)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert type(loaded) is type(model) and loaded.cfg == cfg and loaded.get_config() == model.get_config()
    exported, reloaded = bk.export_params(model), bk.export_params(loaded)
    assert list(reloaded) == list(exported) and all(np.array_equal(reloaded[k], exported[k]) for k in exported)
    (a, masks_a), (b, masks_b) = bk.forward(model, x, noises_for(cfg, x)), bk.forward(loaded, x, noises_for(cfg, x))
    assert np.array_equal(a, b) and all(np.array_equal(p, q) for p, q in zip(masks_a, masks_b))


def test_layers_standalone_and_config_roundtrip(bk):
    """``DynaMoE.from_arrays(router, params)`` alone equals ``spec.forward.dynamoe_layer`` in float64
    NumPy (Eq. 1, 4-7); ``get_config``/``from_config`` rebuild the same layer."""
    import keras

    cfg = ModelConfig(size="tiny", router=RouterConfig(k_min=2))
    p = init_params(cfg, 0)
    arrays = under(p, "layers.0.")
    layer = bk.DynaMoE.from_arrays(cfg.router, arrays)
    h, noise = rng.sample_generator(0).standard_normal((24, 64)), rng.gate_noise(0, 0, 0, (24, 8), 0.1)
    h32, noise32 = (keras.ops.convert_to_tensor(a.astype("float32")) for a in (h, noise))
    y = keras.ops.convert_to_numpy(layer(h32, noise=noise32))
    expected, routing = F.dynamoe_layer(NumpyOps(), F.layer_params(p, cfg, 0), h, noise, cfg.router)
    assert max_rel_error(y, expected) <= 1e-5
    assert {k: tuple(v.shape) for k, v in layer.spec_variables().items()} == {n: a.shape for n, a in arrays.items()}

    config = layer.get_config()
    clone = bk.DynaMoE.from_config(config)
    assert clone.get_config() == config and clone.router == cfg.router
    clone.set_arrays(arrays)
    y_clone, r_clone = clone.forward_with_routing(h32, noise32)
    assert np.array_equal(keras.ops.convert_to_numpy(y_clone), y)
    assert np.array_equal(keras.ops.convert_to_numpy(r_clone.mask), routing.mask)

    mlp = init_params(ModelConfig(size="tiny", kind="mlp"), 0)
    ffn = bk.FeedForward.from_arrays(under(mlp, "layers.0."), name="block")
    assert bk.FeedForward.from_config(ffn.get_config()).get_config() == ffn.get_config()
    assert sorted(ffn.spec_variables()) == ["ffn.b1", "ffn.b2", "ffn.w1", "ffn.w2"]
    y = keras.ops.convert_to_numpy(ffn(h32))
    assert max_rel_error(y, F.feed_forward(NumpyOps(), h, *(mlp[f"layers.0.ffn.{n}"] for n in ("w1", "b1", "w2", "b2")))) <= 1e-5


def test_evaluate_batch_matches_the_reference(bk):
    cfg = CONFIGS["tiny-lm"]
    params = init_params(cfg, 6)
    x = inputs(cfg, n=64)
    y = labels(cfg, x)
    loss_sum, correct, counts = bk.evaluate_batch(bk.build_model(cfg, params, "float64"), x, y)
    ref_logits, ref_routings = reference.forward(params, x, cfg)
    assert loss_sum == pytest.approx(reference.loss(params, x, y, cfg) * y.size, rel=1e-12)
    assert correct == float(F.correct_count(NumpyOps(), ref_logits, y))
    assert [c.tolist() for c in counts] == [r.mask.sum(axis=0).tolist() for r in ref_routings]


def test_export_roundtrip_and_shape_errors(bk):
    check_export_roundtrip_and_shape_errors(bk, ModelConfig(size="tiny"))


def test_name_and_runtime_info(bk):
    import keras

    assert bk.NAME == NAME == f"keras-{keras.backend.backend()}"
    info = bk.runtime_info()
    assert info["framework"] == NAME and info["keras"] == keras.__version__ and KERAS_BACKEND in info and info["device"]


@pytest.mark.parametrize("case", ROUTER_CASES)
def test_router_parity(bk, case):
    check_router_parity(bk, case)


@pytest.mark.parametrize("case", LAYER_CASES)
def test_native_layer_parity(bk, case):
    check_layer_parity(bk, case)


def test_moue_export_and_save_load_roundtrip(bk, tmp_path):
    import keras

    cfg = ROUTER_CASES["moue-switch"]
    check_export_roundtrip_and_shape_errors(bk, cfg)
    model = bk.build_model(cfg, init_params(cfg, 3))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert type(loaded) is bk.MoUEModel and loaded.cfg == cfg
    exported, reloaded = bk.export_params(model), bk.export_params(loaded)
    assert list(reloaded) == list(exported) and all(np.array_equal(reloaded[k], exported[k]) for k in exported)
    x = inputs(cfg, n=64)
    (a, masks_a), (b, masks_b) = bk.forward(model, x, step_noises(cfg, 0, 0, 64)), bk.forward(loaded, x, step_noises(cfg, 0, 0, 64))
    assert np.array_equal(a, b) and all(np.array_equal(p, q) for p, q in zip(masks_a, masks_b))


def test_optimizer_state_continues_training_exactly(bk):
    check_optimizer_state_continues_training_exactly(bk, compile=KERAS_BACKEND == "jax")
