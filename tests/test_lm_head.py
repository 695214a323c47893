"""The language model's head chunk by chunk (``spec.forward.linear_cross_entropy``, ``head_sums``): the
spec's formula against the full logits in NumPy, and every backend's custom gradient (loss, gradients of
the states, head weight and bias, float32 and float64) against the float64 full-logits formula within the
parity matrix's bounds; a backend's LM training loss and evaluation sums equal the definition's.

Keras runs on the backend of ``KERAS_BACKEND`` (unset: jax), as in ``tests/test_keras_backend.py``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from backends import reference
from backends.spec import ModelConfig, init_params, rng
from backends.spec import forward as F
from backends.spec.ops import NumpyOps
from harness.parity import head_errors, head_reference
from harness.parity_cases import HEAD_CASE
from harness.parity_worker import head_inputs
from harness.training import step_noises
from tests.backend_checks import check_lm_head_parity
from tests.conftest import backend_or_skip

KERAS = "keras-" + os.environ.get("KERAS_BACKEND", "jax")
BACKENDS = [
    pytest.param("torch", marks=pytest.mark.torch),
    pytest.param(KERAS, marks=pytest.mark.keras_jax if KERAS == "keras-jax" else pytest.mark.keras_torch),
    pytest.param("mlx", marks=pytest.mark.mlx),
]


def test_chunks_cover_the_tokens_evenly():
    assert F.head_chunks(4096, 50_257) == [(i * 586, min(4096, (i + 1) * 586)) for i in range(7)]
    assert F.head_chunks(10, 5) == [(0, 10)]
    assert F.head_chunks(7, 10, elements=10) == [(i, i + 1) for i in range(7)]
    spans = F.head_chunks(HEAD_CASE["tokens"], HEAD_CASE["vocab"], HEAD_CASE["chunk_elements"])
    assert len(spans) > 1 and spans[-1][1] - spans[-1][0] < spans[0][1] - spans[0][0]  # the case has a ragged chunk


def test_spec_head_equals_the_full_logits_formula(monkeypatch):
    monkeypatch.setattr(F, "HEAD_CHUNK_ELEMENTS", HEAD_CASE["chunk_elements"])
    ops = NumpyOps()
    h, w, b, y = head_inputs()
    loss, grads = F.head_loss_and_grads(ops, h, w, b, y, 1.0 / len(y))
    errors = head_errors(loss, dict(zip(("h", "head.weight", "head.bias"), grads)), head_reference())
    assert errors["loss_rel"] <= 1e-13 and errors["grad_rel"] <= 1e-13, errors
    total, correct = F.head_sums(ops, h, w, b, y)
    z = h @ w + b
    assert total / len(y) == pytest.approx(F.cross_entropy(ops, z, y), rel=1e-13)
    assert correct == F.correct_count(ops, z, y) and F.linear_cross_entropy(ops, h, w, b, y) == pytest.approx(total / len(y), rel=1e-15)


@pytest.mark.parametrize("name", BACKENDS)
def test_backend_head_parity(name):
    check_lm_head_parity(backend_or_skip(name))


@pytest.mark.parametrize("name", BACKENDS)
def test_backend_lm_loss_and_evaluation_equal_the_definition(name, monkeypatch):
    """Training loss (with gradients, float64) and evaluation sums of a Tiny LM, the head in several chunks."""
    backend = backend_or_skip(name)
    monkeypatch.setattr(F, "HEAD_CHUNK_ELEMENTS", 97 * 24)
    cfg = ModelConfig(size="tiny", task="lm", vocab_size=97)
    params = init_params(cfg, 3)
    gen = rng.sample_generator(5)
    x, y = gen.integers(0, 97, (4, 16)), gen.integers(0, 97, (4, 16))
    noises = step_noises(cfg, 0, 0, x.size)
    model = backend.build_model(cfg, params, "float64")
    loss, grads = backend.gradients(model, x, y, noises)
    assert loss == pytest.approx(reference.loss(params, x, y, cfg, noises), rel=1e-12)
    idx = (5,)
    plus, minus = dict(params), dict(params)
    plus["head.bias"], minus["head.bias"] = params["head.bias"].copy(), params["head.bias"].copy()
    plus["head.bias"][idx] += 1e-6
    minus["head.bias"][idx] -= 1e-6
    numeric = (reference.loss(plus, x, y, cfg, noises) - reference.loss(minus, x, y, cfg, noises)) / 2e-6
    assert grads["head.bias"][idx] == pytest.approx(numeric, rel=1e-5, abs=1e-8)
    loss_sum, correct, _ = backend.evaluate_batch(model, x, y)
    logits, _ = reference.forward(params, x, cfg)
    ops = NumpyOps()
    assert loss_sum == pytest.approx(F.cross_entropy(ops, logits, y) * y.size, rel=1e-12)
    assert correct == F.correct_count(ops, logits, y)
    assert np.isfinite(loss_sum)
