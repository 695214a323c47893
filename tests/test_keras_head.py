"""Keras on JAX's language-model head (``backends.keras.head.ScannedChunks``): the spec's chunk functions
in a ``jax.lax.scan`` give the spec's loop's sums and gradients (float64, chunks that divide the tokens,
a ragged last chunk, a single chunk), and the compiled gradient holds one chunk's logits where the
unrolled loop held them all (``Compiled.memory_analysis``)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from backends.spec import forward as F
from backends.spec import rng
from tests.conftest import backend_or_skip

pytestmark = pytest.mark.keras_jax
if os.environ.get("KERAS_BACKEND", "jax") != "jax":
    pytest.skip("Keras runs on another backend in this process (KERAS_BACKEND); this is JAX's head", allow_module_level=True)


@pytest.fixture(scope="module")
def keras_ops():
    """``KerasOps`` on JAX, float64 switched on (``jax_enable_x64``)."""
    backend = backend_or_skip("keras-jax")
    backend.layers.float_dtype("float64")
    from backends.keras.ops import KerasOps

    return KerasOps


def _inputs(tokens: int, d: int, vocab: int, dtype="float64"):
    gen = rng.sample_generator(11)
    h = gen.standard_normal((tokens, d)).astype(dtype)
    w = (gen.standard_normal((d, vocab)) * 0.3).astype(dtype)
    b = (gen.standard_normal(vocab) * 0.1).astype(dtype)
    return h, w, b, gen.integers(0, vocab, tokens)


def _loop_ops(keras_ops, dtype: str):
    ops = keras_ops(dtype)
    ops.head_blocks = None  # the spec's Python loop over the chunks
    return ops


@pytest.mark.parametrize(("tokens", "rows"), [(96, 24), (90, 24), (40, 64)], ids=["even", "ragged", "one-chunk"])
def test_scanned_chunks_equal_the_specs_loop(keras_ops, monkeypatch, tokens, rows):
    vocab = 37
    monkeypatch.setattr(F, "HEAD_CHUNK_ELEMENTS", rows * vocab)
    h, w, b, y = _inputs(tokens, 8, vocab)
    scanned, loop = keras_ops("float64"), _loop_ops(keras_ops, "float64")
    assert scanned.head_blocks is not None
    got = F.head_loss_and_grads(scanned, h, w, b, y, 1.0 / tokens)
    want = F.head_loss_and_grads(loop, h, w, b, y, 1.0 / tokens)
    assert float(got[0]) == pytest.approx(float(want[0]), rel=1e-13)
    for g, r in zip(got[1], want[1]):  # the additions over chunks in another order: float64 rounding only
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-12, atol=1e-15)
    sums, loop_sums = F.head_sums(scanned, h, w, b, y), F.head_sums(loop, h, w, b, y)
    assert float(sums[0]) == pytest.approx(float(loop_sums[0]), rel=1e-13) and float(sums[1]) == float(loop_sums[1])


def test_the_compiled_gradient_holds_one_chunks_logits(keras_ops, monkeypatch):
    import jax

    tokens, d, vocab, rows = 2048, 16, 4096, 64
    monkeypatch.setattr(F, "HEAD_CHUNK_ELEMENTS", rows * vocab)
    chunk_bytes, full_bytes = rows * vocab * 4, tokens * vocab * 4  # 1 MB, 32 MB
    h, w, b, y = _inputs(tokens, d, vocab, "float32")

    def temp_bytes(ops):
        def loss(h, w, b):
            return F.linear_cross_entropy(ops, h, w, b, y)

        return jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(h, w, b).compile().memory_analysis().temp_size_in_bytes

    scanned, unrolled = temp_bytes(keras_ops("float32")), temp_bytes(_loop_ops(keras_ops, "float32"))
    assert scanned <= 4 * chunk_bytes, (scanned, chunk_bytes)  # a chunk's logits and their gradient, and the gradients
    assert unrolled >= full_bytes, (unrolled, full_bytes)  # XLA's CPU scheduler runs the unrolled chunks side by side
