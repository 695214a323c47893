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
