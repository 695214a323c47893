"""MLX's language-model head (``backends.mlx.head.SequencedChunks``): the spec's chunk functions on two CPU
streams, each chunk after its lane's previous one (``mx.depends``), give the spec's loop's sums and
gradients (float64; the additions over chunks in another order), and the gradient's peak memory is a
chunk's computation per lane where the plain loop's held the whole logits (``mx.get_peak_memory``)."""

from __future__ import annotations

import numpy as np
import pytest

from backends.spec import forward as F
from backends.spec import rng

pytestmark = pytest.mark.mlx
mx = pytest.importorskip("mlx.core")

from backends.mlx.head import cpu_lanes  # noqa: E402
from backends.mlx.ops import MlxOps  # noqa: E402


def _inputs(tokens: int, d: int, vocab: int, dtype):
    gen = rng.sample_generator(11)
    arrays = gen.standard_normal((tokens, d)), gen.standard_normal((d, vocab)) * 0.3, gen.standard_normal(vocab) * 0.1
    return (*(mx.array(a, dtype=dtype) for a in arrays), mx.array(gen.integers(0, vocab, tokens)))


def _loop_ops(dtype) -> MlxOps:
    ops = MlxOps(dtype)
    ops.head_blocks = None  # the spec's plain loop over the chunks
    return ops


@pytest.mark.parametrize(("tokens", "rows"), [(96, 24), (90, 24), (40, 64)], ids=["even", "ragged", "one-chunk"])
def test_sequenced_chunks_equal_the_specs_loop(monkeypatch, tokens, rows):
    vocab = 37
    monkeypatch.setattr(F, "HEAD_CHUNK_ELEMENTS", rows * vocab)
    h, w, b, y = _inputs(tokens, 8, vocab, mx.float64)
    sequenced, loop = MlxOps(mx.float64), _loop_ops(mx.float64)
    assert sequenced.head_blocks is not None
    got = F.head_loss_and_grads(sequenced, h, w, b, y, 1.0 / tokens)
    want = F.head_loss_and_grads(loop, h, w, b, y, 1.0 / tokens)
    assert got[0].item() == pytest.approx(want[0].item(), rel=1e-13)
    for g, r in zip(got[1], want[1]):  # the lanes' sums added at the end: float64 rounding only
        np.testing.assert_allclose(np.array(g), np.array(r), rtol=1e-12, atol=1e-15)
    sums, loop_sums = F.head_sums(sequenced, h, w, b, y), F.head_sums(loop, h, w, b, y)
    assert sums[0].item() == pytest.approx(loop_sums[0].item(), rel=1e-13) and sums[1].item() == loop_sums[1].item()


def test_the_step_holds_about_one_chunks_logits(monkeypatch):
    tokens, d, vocab, rows = 2048, 16, 4096, 64
    monkeypatch.setattr(F, "HEAD_CHUNK_ELEMENTS", rows * vocab)
    chunk_bytes, full_bytes = rows * vocab * 4, tokens * vocab * 4  # 1 MB of float32 logits a chunk, 32 chunks
    h, w, b, y = _inputs(tokens, d, vocab, mx.float32)

    def peak_bytes(ops):
        grad = mx.grad(lambda h, w, b: F.linear_cross_entropy(ops, h, w, b, y), argnums=(0, 1, 2))
        mx.eval(h, w, b, y)
        mx.reset_peak_memory()
        before = mx.get_active_memory()  # what other tests' arrays hold
        mx.eval(grad(h, w, b))
        return mx.get_peak_memory() - before

    sequenced, loop = peak_bytes(MlxOps(mx.float32)), peak_bytes(_loop_ops(mx.float32))
    # uncompiled, each of a chunk's element-wise steps has its own buffer: about 9 chunk-sized ones (measured)
    assert sequenced <= 12 * cpu_lanes() * chunk_bytes, (sequenced, chunk_bytes)
    assert loop >= full_bytes, (loop, full_bytes)  # without the order, the chunks' logits are alive together


def test_float32_shifted_exp_is_as_accurate_as_mlx_exp():
    gen = rng.sample_generator(5)
    z64 = gen.standard_normal((64, 4096)) * 6.0
    top64 = z64.max(axis=1, keepdims=True)
    want = np.exp(z64 - top64)
    ops = MlxOps(mx.float32)
    z, top = mx.array(z64, dtype=mx.float32), mx.array(top64, dtype=mx.float32)
    # against float64 exp of the float32 inputs, where the exponential counts in a sum (> 1e-6)
    z32, top32 = np.array(z).astype(np.float64), np.array(top).astype(np.float64)
    exact = np.exp(z32 - top32)
    kept = exact > 1e-6
    err = np.abs(np.array(ops.shifted_exp(z, top)) - exact) / exact
    mlx_err = np.abs(np.array(mx.exp(z - top)) - exact) / exact
    assert err[kept].max() < 3e-6 and err[kept].max() < 5 * mlx_err[kept].max()
    # float64 keeps the exact route (the C library's pow)
    got64 = MlxOps(mx.float64).shifted_exp(mx.array(z64, dtype=mx.float64), mx.array(top64, dtype=mx.float64))
    np.testing.assert_allclose(np.array(got64), want, rtol=1e-13)


def test_chunks_are_capped_by_the_backends_size(monkeypatch):
    ops = MlxOps(mx.float32)
    assert F._chunk_elements(ops) == ops.head_chunk_elements < F.HEAD_CHUNK_ELEMENTS
    monkeypatch.setattr(F, "HEAD_CHUNK_ELEMENTS", 1000)  # a smaller spec constant (the parity case's) still caps it
    assert F._chunk_elements(ops) == 1000


def test_a_language_models_step_gives_each_lane_one_openblas_thread():
    import subprocess
    import sys

    import backends
    from backends.process_env import find_openblas

    if find_openblas() is None:
        pytest.skip("no system OpenBLAS to preload (Debian: apt-get install libopenblas0-pthread)")
    code = (
        "from backends.mlx.head import _openblas, _streams, blas_threads_per_lane\n"
        "get, set_threads = _openblas()\n"
        "set_threads(2)\n"
        "with blas_threads_per_lane('lm'):\n"
        "    inside = get()\n"
        "with blas_threads_per_lane('classify'):\n"
        "    image = get()\n"
        "print(len(_streams()), inside, image, get())\n"
    )
    env = backends.worker_env("mlx", 0)
    env.pop("OMP_NUM_THREADS", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["2", "1", "2", "2"]  # two lanes, one thread each; the image step and after: two
