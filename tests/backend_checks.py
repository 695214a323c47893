"""Checks every framework backend must pass, called from each backend's test file."""

from __future__ import annotations

import numpy as np
import pytest

from backends.spec import ModelConfig, init_params, rng
from backends.spec.config import TrainConfig
from backends.spec.optim import optimizer_state_names
from harness.parity_cases import LAYER_CASES, ROUTER_CASES, TRANSFORMER_CASES


def check_export_roundtrip_and_shape_errors(backend, cfg: ModelConfig) -> None:
    """Spec arrays go in and come back unchanged (float64), as float32 in a float32 model, and a wrong
    name, shape or dtype is refused with a message naming it."""
    params = init_params(cfg, 0)
    exported = backend.export_params(backend.build_model(cfg, params, "float64"))
    assert list(exported) == list(params) and all(np.array_equal(exported[k], params[k]) for k in params)
    exported32 = backend.export_params(backend.build_model(cfg, params))
    assert all(exported32[k].dtype == np.float32 and np.array_equal(exported32[k], params[k].astype(np.float32)) for k in params)
    bad = dict(params, **{"head.bias": np.zeros(3)})
    with pytest.raises(ValueError, match=r"'head.bias' has shape \(3,\), the config needs \(10,\)"):
        backend.build_model(cfg, bad)
    with pytest.raises(ValueError, match="missing"):
        backend.build_model(cfg, {k: v for k, v in params.items() if k != "norm.beta"})
    with pytest.raises(ValueError, match="unknown dtype 'float16'"):
        backend.build_model(cfg, params, "float16")


# --- every router kind and MoUE, in every backend (spec.routers, spec.moue) -------------------------------
#
# Tolerances: float64 logits to 1e-10 absolute (same formulas, other summation order: ~1e-15 measured);
# float32 logits to 1e-5 of their scale (~1e-6 measured: ten float32 matrix products of width <= 784).
# float64 masks are identical; float32 masks may differ only at tokens whose decision float32 rounding
# may flip (``harness.parity.near_decision_tokens``). The float64 loss (cross-entropy + balance term)
# equals the reference's to 1e-12; float64 gradients equal central differences of the float64 reference
# loss (step 1e-6: truncation ~1e-12, rounding ~1e-10 of a loss ~2.3) to rel 1e-5 / abs 1e-8; float32
# gradients are within 1e-4 (norm-relative) of float64 ones when the float32 selection is the float64 one.
# The cases: ``harness.parity_cases.ROUTER_CASES`` (the parity matrix takes its baselines from them).

_GRAD_PROBES = (
    "layers.0.gate.weight",
    "layers.0.experts.w1",
    "pool.gate.weight",
    "pool.experts.w2",
    "pool.trajectory.weight",
    "input.weight",
)


def check_router_parity(backend, case: str, tokens: int = 128) -> dict:
    """Forward (float64, float32, training and evaluation), masks, loss and gradients of ``ROUTER_CASES[case]``
    against the float64 reference. Returns the measured errors."""
    from backends import reference
    from harness.parity import norm_rel_error
    from harness.training import step_noises

    cfg = ROUTER_CASES[case]
    params = init_params(cfg, 2)
    gen = rng.sample_generator(4)
    x, y = gen.random((tokens, cfg.input_dim)), gen.integers(0, cfg.num_classes, tokens)
    noises = step_noises(cfg, 1, 0, tokens)
    errors = {"f64": 0.0, "f32": 0.0}
    same_selection = True
    models = {dtype: backend.build_model(cfg, params, dtype) for dtype in ("float64", "float32")}
    same_selection &= _check_forwards(backend, models, params, x, cfg, noises, errors, case)
    assert errors["f64"] <= 1e-10 and errors["f32"] <= 1e-5, (case, errors)

    loss, grads = backend.gradients(models["float64"], x, y, noises)
    assert loss == pytest.approx(reference.loss(params, x, y, cfg, noises), rel=1e-12, abs=1e-12)
    assert list(grads) == list(params)
    pick = np.random.default_rng(0)
    for name in (n for n in _GRAD_PROBES if n in params):
        idx = tuple(int(pick.integers(0, s)) for s in params[name].shape)
        plus, minus = dict(params), dict(params)
        plus[name], minus[name] = params[name].copy(), params[name].copy()
        plus[name][idx] += 1e-6
        minus[name][idx] -= 1e-6
        numeric = (reference.loss(plus, x, y, cfg, noises) - reference.loss(minus, x, y, cfg, noises)) / 2e-6
        assert grads[name][idx] == pytest.approx(numeric, rel=1e-5, abs=1e-8), (case, name)
    if same_selection:
        _, grads32 = backend.gradients(models["float32"], x, y, noises)
        # parameters whose gradient is zero but for rounding (top-1's renormalised weight is 1: no gate gradient)
        live = [k for k in grads if np.linalg.norm(grads[k]) > 1e-9]
        errors["grad_f32"] = max(norm_rel_error(grads32[k], grads[k]) for k in live)
        assert errors["grad_f32"] <= 1e-4, (case, errors)
    return errors


def check_optimizer_state_continues_training_exactly(backend, compile: bool = False) -> None:
    """A trainer built afresh from another's exported parameters and optimiser state takes the same
    next steps bit for bit (what resuming a checkpointed run relies on: same ops, same inputs, same
    state, so no tolerance), and a state of another config is refused with a message naming it."""
    from harness.training import step_noises

    cfg, train = ModelConfig(size="tiny", input_dim=20, num_classes=5), TrainConfig(batch_size=16)
    gen = rng.sample_generator(11)
    x, y = gen.standard_normal((16, 20)), gen.integers(0, 5, 16)

    def steps(trainer, first, last):
        return [backend.to_float(trainer.step(x, y, step_noises(cfg, 0, s, 16), 1e-3 / (s + 1))) for s in range(first, last)]

    model = backend.build_model(cfg, init_params(cfg, 0))
    trainer = backend.Trainer(model, train, compile=compile)
    fresh = trainer.optimizer_state()
    assert int(fresh["steps"]) == 0 and list(fresh) == optimizer_state_names(init_params(cfg, 0))
    assert not any(fresh[k].any() for k in fresh)
    steps(trainer, 0, 3)
    saved, params = trainer.optimizer_state(), backend.export_params(model)
    assert int(saved["steps"]) == 3 and saved["v.head.weight"].dtype == np.float32 and saved["v.head.weight"].min() > 0
    copy = backend.Trainer(backend.build_model(cfg, params), train, compile=compile)
    copy.load_optimizer_state(saved)
    assert steps(trainer, 3, 6) == steps(copy, 3, 6)
    a, b = backend.export_params(model), backend.export_params(copy.model)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c, d = trainer.optimizer_state(), copy.optimizer_state()
    assert int(d["steps"]) == 6 and all(np.array_equal(c[k], d[k]) for k in c)
    with pytest.raises(ValueError, match=r"missing \['m.input.weight'"):
        copy.load_optimizer_state({k: v for k, v in saved.items() if k != "m.input.weight"})
    with pytest.raises(ValueError, match=r"'m.head.bias' has shape \(3,\)"):
        copy.load_optimizer_state(dict(saved, **{"m.head.bias": np.zeros(3, np.float32)}))


# --- the Transformer backbone (spec.transformer), in every backend -------------------------------------
#
# The MLP backbone's tolerances (above): float64 logits and the probes' inputs (attention weights,
# post-attention representations) to 1e-10 absolute, float32 to 1e-5 of their scale; masks as above; the
# float64 loss to 1e-12; float64 gradients against central differences of the reference loss; float32
# gradients within 1e-4 of float64 ones. Trajectory: TRAJECTORY_STEPS float64 steps of the backend's
# Trainer equal the steps made from its ``gradients`` and ``spec.optim.adamw_update`` (NumPy) to 1e-8.

_TRANSFORMER_GRAD_PROBES = ("embed.weight", "layers.0.attn.query.weight", "layers.1.attn.out.bias", "layers.0.gate.weight",
                            "layers.1.ffn.w1", "pool.experts.w2", "pool.trajectory.weight", "head.weight")  # fmt: skip
TRAJECTORY_STEPS = 4


def check_transformer_parity(backend, module, case: str, batch: int = 4, steps: int = 12) -> dict:
    """``TRANSFORMER_CASES[case]`` in ``backend`` (built by ``module.build_model``, the backend's
    ``transformer`` module) against the float64 reference. Returns the measured errors."""
    from backends import reference
    from backends.spec.optim import adamw_update, learning_rate
    from harness.parity import max_abs_error, max_rel_error, norm_rel_error
    from harness.training import step_noises

    cfg = TRANSFORMER_CASES[case]
    params = init_params(cfg, 2)
    gen = rng.sample_generator(4)
    x, y = gen.integers(0, cfg.vocab_size, (batch, steps)), gen.integers(0, cfg.vocab_size, (batch, steps))
    noises = step_noises(cfg, 1, 0, batch * steps)
    errors = {"f64": 0.0, "f32": 0.0, "probes_f64": 0.0, "probes_f32": 0.0}
    same_selection = True
    models = {dtype: module.build_model(cfg, params, dtype) for dtype in ("float64", "float32")}
    exported = backend.export_params(models["float64"])
    assert list(exported) == list(params) and all(np.array_equal(exported[k], params[k]) for k in params)
    same_selection &= _check_forwards(backend, models, params, x, cfg, noises, errors, case)
    _, _, ref_record = reference.forward_with_probes(params, x, cfg)
    for dtype, key in (("float64", "probes_f64"), ("float32", "probes_f32")):
        _, _, record = module.forward_with_probes(models[dtype], x)
        for name in ("attention", "post_attention"):
            assert len(record[name]) == cfg.num_layers
            for got, want in zip(record[name], ref_record[name]):
                assert got.shape == want.shape
                err = max_abs_error(got, want) if dtype == "float64" else max_rel_error(got, want)
                errors[key] = max(errors[key], err)
    assert errors["f64"] <= 1e-10 and errors["f32"] <= 1e-5, (case, errors)
    assert errors["probes_f64"] <= 1e-10 and errors["probes_f32"] <= 1e-5, (case, errors)

    loss, grads = backend.gradients(models["float64"], x, y, noises)
    assert loss == pytest.approx(reference.loss(params, x, y, cfg, noises), rel=1e-12, abs=1e-12)
    assert list(grads) == list(params)
    pick = np.random.default_rng(0)
    for name in (n for n in _TRANSFORMER_GRAD_PROBES if n in params):
        idx = tuple(int(pick.integers(0, s)) for s in params[name].shape)
        if name == "embed.weight":
            idx = (int(x[0, 0]), idx[1])  # a row the batch uses
        plus, minus = dict(params), dict(params)
        plus[name], minus[name] = params[name].copy(), params[name].copy()
        plus[name][idx] += 1e-6
        minus[name][idx] -= 1e-6
        numeric = (reference.loss(plus, x, y, cfg, noises) - reference.loss(minus, x, y, cfg, noises)) / 2e-6
        assert grads[name][idx] == pytest.approx(numeric, rel=1e-5, abs=1e-8), (case, name)
    if same_selection:
        _, grads32 = backend.gradients(models["float32"], x, y, noises)
        live = [k for k in grads if np.linalg.norm(grads[k]) > 1e-9]
        errors["grad_f32"] = max(norm_rel_error(grads32[k], grads[k]) for k in live)
        assert errors["grad_f32"] <= 1e-4, (case, errors)

    train = TrainConfig(batch_size=batch)
    trainer = backend.Trainer(module.build_model(cfg, params, "float64"), train)
    current = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(val) for k, val in params.items()}
    errors["trajectory_f64"] = 0.0
    for step in range(TRAJECTORY_STEPS):
        step_noise = step_noises(cfg, 0, step, batch * steps)
        lr = learning_rate(step, TRAJECTORY_STEPS, train)
        backend.to_float(trainer.step(x, y, step_noise, lr))
        _, g = backend.gradients(module.build_model(cfg, current, "float64"), x, y, step_noise)
        for k in current:
            current[k], m[k], v[k] = adamw_update(current[k], g[k], m[k], v[k], step + 1, lr, train)
        got = backend.export_params(trainer.model)
        errors["trajectory_f64"] = max(errors["trajectory_f64"], max(norm_rel_error(got[k], current[k]) for k in current))
    assert errors["trajectory_f64"] <= 1e-8, (case, errors)
    return errors


def check_lm_head_parity(backend) -> dict:
    """The chunked language-model head (``spec.forward.linear_cross_entropy``, in chunks with a ragged
    last one: ``harness.parity_cases.HEAD_CASE``): loss and gradients w.r.t. the states, head weight and
    bias against the float64 full-logits formula, within the parity matrix's bounds (float64: loss and
    gradients 1e-10; float32: loss 1e-5, gradients 1e-4, relative)."""
    from harness.parity import head_errors, head_reference
    from harness.parity_worker import head_case

    ref = head_reference()
    errors = {dtype: head_errors(*head_case(backend, dtype), ref) for dtype in ("float64", "float32")}
    assert errors["float64"]["loss_rel"] <= 1e-10 and errors["float64"]["grad_rel"] <= 1e-10, errors
    assert errors["float32"]["loss_rel"] <= 1e-5 and errors["float32"]["grad_rel"] <= 1e-4, errors
    return errors


def check_layer_parity(backend, case: str) -> dict:
    """The native layer of ``harness.parity_cases.LAYER_CASES[case]`` (``from_arrays`` on the spec's arrays)
    against the float64 reference, as the parity matrix measures it (``harness.parity.layer_errors``):
    outputs and masks in float32 and float64, training mode with the given noise and evaluation without,
    within the matrix's forward and mask bounds; float64 gradients w.r.t. the input and every parameter
    against central differences of the reference (``parity.CENTRAL_DIFFERENCE``), float32 ones within
    1e-4 of float64 where the selection is the same. Returns the measured errors."""
    from harness.parity import layer_errors, layer_failures
    from harness.parity_worker import DTYPES, layer_case

    results = {key: value for dtype in DTYPES for key, value in layer_case(backend, case, dtype).items()}
    errors = layer_errors(results, case)
    kind = LAYER_CASES[case][0]
    assert layer_failures(f"{case} ({kind})", errors) == [], errors
    assert "layers_gradient_float32_rel" in errors, (kind, errors)  # the float32 selection is the float64 one here
    return errors


def _check_forwards(backend, models, params, x, cfg, noises, errors, case) -> bool:
    """Both dtypes' forwards, with ``noises`` and without, against the float64 reference: the largest float64
    absolute and float32 relative errors into ``errors``, float64 masks identical, every float32 mask
    difference explained by float32 rounding at the threshold; whether every selection was the same."""
    from backends import reference
    from harness.parity import max_abs_error, max_rel_error, routing_disagreement

    same_selection = True
    for noise in (noises, None):
        ref, ref_routings = reference.forward(params, x, cfg, noise)
        logits, masks = backend.forward(models["float64"], x, noise)
        errors["f64"] = max(errors["f64"], max_abs_error(logits, ref))
        assert len(masks) == len(ref_routings) and all(np.array_equal(m, r.mask) for m, r in zip(masks, ref_routings)), case
        logits, masks = backend.forward(models["float32"], x, noise)
        assert logits.dtype == np.float32
        errors["f32"] = max(errors["f32"], max_rel_error(logits, ref))
        for layer, (m, r) in enumerate(zip(masks, ref_routings)):
            noisy = r.probs if noise is None else r.probs + noise[layer]
            differing, unexplained = routing_disagreement(m, r.mask, noisy, cfg.router)
            assert unexplained == 0, (case, layer, differing)
            same_selection &= differing == 0
    return same_selection
