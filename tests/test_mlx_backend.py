"""MLX backend against the float64 reference and the PyTorch backend, and its own guarantees.

Tolerances (the same reasoning as ``test_torch_backend``):

- float64 logits: the spec's formulas in another summation order agree to ~1e-15; 1e-10 leaves five
  orders of margin (MLX's float64 ``exp`` is only float32-accurate, hence ``MlxOps.exp`` uses ``power``,
  checked below).
- float32 logits: ~6e-8 relative rounding per operation through about ten matrix products of width
  <= 784 gives ~1e-6 of the logits' scale (max|a - ref| / max|ref|); 1e-5 bounds it with margin.
- selected sets: may differ only for tokens with a gate within 1e-6 of the threshold (or of a tie),
  where float32 rounding legitimately decides; those are counted and must be few.
- gradients vs PyTorch, float32: both carry ~1e-6 relative rounding, amplified by the softmax and
  log-softmax backward; ||g_mlx - g_torch|| / ||g_torch|| <= 1e-4 per parameter. float64: 1e-10.
- AdamW: float64 parameters equal the spec's update to 1e-14 absolute (measured ~3e-17); float32 to
  the rounding of the parameters themselves (rtol 1e-6, ~8 ulp, atol 1e-9 for elements near zero).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from backends import reference
from backends.common import under
from backends.spec import ModelConfig, TrainConfig, init_params, rng
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
from tests.test_reference import CONFIGS, inputs

pytestmark = pytest.mark.mlx


@pytest.fixture(scope="module")
def bm():
    return backend_or_skip("mlx")


def noises_for(cfg, x, step=0, seed=1):
    """Training-mode gate noise (Eq. 7, sigma 0.1) of every DynaMoE layer, ``None`` for the MLP."""
    if cfg.kind != "dynamoe":
        return None
    tokens = x.size if cfg.task == "lm" else len(x)
    return [rng.gate_noise(seed, step, l, (tokens, e), 0.1) for l, e in enumerate(cfg.experts_per_layer())]


def labels_for(cfg, x, seed=9):
    shape = x.shape if cfg.task == "lm" else (len(x),)
    return rng.sample_generator(seed).integers(0, cfg.output_dim, size=shape)


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("training", [False, True])
def test_forward_parity(bm, name, training):
    cfg = CONFIGS[name]
    params = init_params(cfg, 2)
    x = inputs(cfg, n=256 if cfg.task == "classify" else 64)
    noises = noises_for(cfg, x) if training else None
    ref, ref_routings = reference.forward(params, x, cfg, noises)

    logits64, masks64 = bm.forward(bm.build_model(cfg, params, "float64"), x, noises)
    assert logits64.dtype == np.float64
    assert max_abs_error(logits64, ref) <= 1e-10
    assert all(np.array_equal(m, r.mask) for m, r in zip(masks64, ref_routings))

    logits32, masks32 = bm.forward(bm.build_model(cfg, params, "float32"), x, noises)
    assert logits32.dtype == np.float32
    assert max_rel_error(logits32, ref) <= 1e-5
    assert len(masks32) == len(ref_routings)
    for layer, (m, r) in enumerate(zip(masks32, ref_routings)):
        noisy = r.probs if noises is None else r.probs + noises[layer]
        differing, unexplained = mask_disagreement(m, r.mask, noisy, cfg.router.tau, cfg.router.scope)
        assert unexplained == 0 and differing <= 2, (layer, differing)


def test_float64_exp_is_float64_accurate(bm):
    import mlx.core as mx

    x = np.linspace(-80.0, 20.0, 1001)
    got = np.array(bm.OPS.exp(mx.array(x, dtype=mx.float64)))
    assert got.dtype == np.float64
    assert np.max(np.abs(got - np.exp(x)) / np.exp(x)) <= 1e-13  # mx.exp alone: ~1e-6


def test_layers_on_their_own(bm):
    import mlx.core as mx

    cfg = ModelConfig(size="tiny")
    p = init_params(cfg, 0)
    h = rng.sample_generator(0).standard_normal((24, 64))
    noise = rng.gate_noise(0, 0, 0, (24, 8), 0.1)
    layer = bm.DynaMoE.from_arrays(cfg.router, under(p, "layers.0."), dtype="float64")
    h64, noise64 = mx.array(h, dtype=mx.float64), mx.array(noise, dtype=mx.float64)
    y, routing = layer.forward_with_routing(h64, noise64)
    expected, ref_routing = F.dynamoe_layer(NumpyOps(), F.layer_params(p, cfg, 0), h, noise, cfg.router)
    assert max_abs_error(np.array(y), expected) <= 1e-12
    assert np.array_equal(np.array(routing.mask), ref_routing.mask)
    assert np.array_equal(np.array(layer(h64, noise64)), np.array(y))

    mlp = ModelConfig(size="tiny", kind="mlp")
    q = init_params(mlp, 0)
    block = bm.FeedForward.from_arrays(under(q, "layers.0."))
    expected = F.feed_forward(NumpyOps(), h, *(q[f"layers.0.ffn.{k}"] for k in ("w1", "b1", "w2", "b2")))
    assert max_rel_error(np.array(block(mx.array(h, dtype=mx.float32))), expected) <= 1e-5


def test_parameter_paths_are_the_spec_names(bm):
    from mlx.utils import tree_flatten

    for name in ("small-descending", "small-mlp", "tiny-lm"):
        cfg = CONFIGS[name]
        model = bm.build_model(cfg, init_params(cfg, 0))
        assert [k for k, _ in tree_flatten(model.trainable_parameters())] == list(init_params(cfg, 0))


@pytest.mark.parametrize("name", ["small-descending", "small-logits-kmin2", "small-mlp", "tiny-lm"])
def test_gradients_match_torch(bm, name):
    bt = backend_or_skip("torch")
    cfg = CONFIGS[name]
    params = init_params(cfg, 3)
    x = inputs(cfg, n=64)
    y, noises = labels_for(cfg, x), noises_for(cfg, x)
    for dtype, tol in (("float32", 1e-4), ("float64", 1e-10)):
        loss_m, grads_m = bm.gradients(bm.build_model(cfg, params, dtype), x, y, noises)
        loss_t, grads_t = bt.gradients(bt.build_model(cfg, params, dtype), x, y, noises)
        assert loss_m == pytest.approx(loss_t, rel=tol)
        assert list(grads_m) == list(grads_t)
        errors = {k: norm_rel_error(grads_m[k], grads_t[k]) for k in grads_t}
        assert max(errors.values()) <= tol, (dtype, max(errors.items(), key=lambda kv: kv[1]))
    assert loss_m == pytest.approx(reference.loss(params, x, y, cfg, noises), abs=1e-12)  # the float64 loss


@pytest.mark.parametrize(("dtype", "rtol", "atol"), [("float64", 0.0, 1e-14), ("float32", 1e-6, 1e-9)])
def test_adamw_step_is_the_spec_formula(bm, dtype, rtol, atol):
    # One and three steps with changing learning rates; the spec update is fed the backend's gradients.
    cfg, train = ModelConfig(size="tiny"), TrainConfig()
    model = bm.build_model(cfg, init_params(cfg, 0), dtype)
    trainer = bm.Trainer(model, train)
    gen = rng.sample_generator(4)
    x, y = gen.random((96, 784)), gen.integers(0, 10, 96)
    p = {k: v.astype(np.float64) for k, v in bm.export_params(model).items()}
    m, v = ({k: np.zeros_like(a) for k, a in p.items()} for _ in range(2))
    for step, lr in enumerate((1e-3, 7e-4, 3e-4), start=1):
        xs, ys, noises = x[32 * (step - 1) : 32 * step], y[32 * (step - 1) : 32 * step], noises_for(cfg, x[:32], step)
        _, grads = bm.gradients(model, xs, ys, noises)
        trainer.step(xs, ys, noises, lr)
        got = bm.export_params(model)
        for k in p:
            p[k], m[k], v[k] = adamw_update(p[k], grads[k].astype(np.float64), m[k], v[k], step, lr, train)
            np.testing.assert_allclose(got[k], p[k], rtol=rtol, atol=atol, err_msg=f"{k} at step {step}")


def _short_run(bm, compile=False, steps=20, seed=0):
    """``steps`` AdamW steps of Small on a learnable synthetic task, batches and noise as the harness draws them."""
    cfg, train = ModelConfig(), TrainConfig(batch_size=64)
    gen = rng.sample_generator(seed, 1)
    x = gen.standard_normal((256, 784))
    y = np.argmax(x @ gen.standard_normal((784, 10)), axis=1)  # a random linear teacher
    model = bm.build_model(cfg, init_params(cfg, seed))
    trainer = bm.Trainer(model, train, compile=compile)
    losses = []
    for step in range(steps):
        idx = rng.batches(seed, step // 4, len(x), 64)[step % 4]
        losses.append(trainer.step(x[idx], y[idx], step_noises(cfg, seed, step, 64), learning_rate(step, steps, train)))
    return np.array([bm.to_float(v) for v in losses]), bm.export_params(model), trainer


def test_training_learns_and_is_bit_reproducible(bm):
    import mlx.core as mx

    a, pa, trainer = _short_run(bm)
    b, pb, _ = _short_run(bm)
    assert np.isfinite(a).all()
    assert a[-5:].mean() < 0.6 * a[:5].mean()
    assert np.array_equal(a, b)
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)
    assert isinstance(trainer.optimizer.state["learning_rate"], mx.array)


@pytest.mark.slow  # a cold run JIT-compiles ~50 fused CPU kernels with g++ (~1 s each; cached in $TMPDIR/mlx)
def test_compiled_training_matches_eager_without_recompiling(bm):
    eager, _, _ = _short_run(bm, compile=False)
    compiled, params, trainer = _short_run(bm, compile=True)
    # The learning rate changes every step yet is an input of the compiled step: traced once.
    assert trainer.traces == 1
    np.testing.assert_allclose(compiled, eager, rtol=1e-5)
    again, params_again, _ = _short_run(bm, compile=True)
    assert np.array_equal(compiled, again)
    assert all(np.array_equal(params[k], params_again[k]) for k in params)


def test_harness_trains_the_mlx_backend(bm):
    from harness.training import train

    cfg, gen = ModelConfig(size="tiny"), rng.sample_generator(2)
    x = gen.random((96, 784))
    data = SimpleNamespace(x_train=x[:64], y_train=gen.integers(0, 10, 64), x_test=x[64:], y_test=gen.integers(0, 10, 32))
    history, _ = train("mlx", cfg, TrainConfig(batch_size=32, epochs=1, eval_batch_size=16), data, seed=0)
    assert len(history) == 1 and np.isfinite(history[0].train_loss) and np.isfinite(history[0].test_loss)
    assert [layer["experts"] for layer in history[0].layers] == cfg.experts_per_layer()


@pytest.mark.parametrize("name", ["small-descending", "tiny-lm"])
def test_evaluate_batch_matches_the_reference(bm, name):
    cfg = CONFIGS[name]
    params = init_params(cfg, 5)
    x = inputs(cfg, n=64)
    y = labels_for(cfg, x)
    loss_sum, correct, counts = bm.evaluate_batch(bm.build_model(cfg, params, "float64"), x, y)
    logits, routings = reference.forward(params, x, cfg)
    assert loss_sum == pytest.approx(reference.loss(params, x, y, cfg) * y.size, rel=1e-12)
    assert correct == float((np.argmax(logits, axis=-1) == y).sum())
    assert all(np.array_equal(c, r.mask.sum(axis=0)) for c, r in zip(counts, routings))


@pytest.mark.parametrize(("dtype", "suffix"), [("float32", ".safetensors"), ("float32", ".npz"), ("float64", ".npz")])
def test_save_load_roundtrip(bm, tmp_path, dtype, suffix):
    cfg = CONFIGS["small-descending"]
    x = inputs(cfg, n=64)
    model = bm.build_model(cfg, init_params(cfg, 0), dtype)
    path = tmp_path / f"weights{suffix}"
    bm.save_weights(model, path)
    other = bm.load_weights(bm.build_model(cfg, init_params(cfg, 1), dtype), path)
    assert all(np.array_equal(a, b) for a, b in zip(bm.export_params(model).values(), bm.export_params(other).values()))
    (la, ma), (lb, mb) = bm.forward(model, x), bm.forward(other, x)
    assert np.array_equal(la, lb) and all(np.array_equal(a, b) for a, b in zip(ma, mb))
    with pytest.raises(ValueError, match="missing"):
        bm.load_weights(bm.build_model(CONFIGS["small-mlp"], init_params(CONFIGS["small-mlp"], 0), dtype), path)


def test_float64_safetensors_is_refused(bm, tmp_path):
    cfg = ModelConfig(size="tiny")
    with pytest.raises(ValueError, match="no float64"):
        bm.save_weights(bm.build_model(cfg, init_params(cfg, 0), "float64"), tmp_path / "w.safetensors")


def test_export_roundtrip_and_shape_errors(bm):
    check_export_roundtrip_and_shape_errors(bm, ModelConfig())


def test_runtime_info(bm):
    import mlx.core as mx

    info = bm.runtime_info()
    assert bm.NAME == "mlx" and info["framework"] == "mlx" and info["mlx"] == mx.__version__
    assert info["device"] in ("cpu", "gpu") and isinstance(info["metal"], bool) and isinstance(info["cuda"], bool)


@pytest.mark.parametrize("case", ROUTER_CASES)
def test_router_parity(bm, case):
    check_router_parity(bm, case)


@pytest.mark.parametrize("case", LAYER_CASES)
def test_native_layer_parity(bm, case):
    check_layer_parity(bm, case)


def test_moue_export_roundtrip(bm):
    check_export_roundtrip_and_shape_errors(bm, ROUTER_CASES["moue"])


def test_optimizer_state_continues_training_exactly(bm):
    check_optimizer_state_continues_training_exactly(bm, compile=True)
