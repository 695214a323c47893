"""The torch backend's head on vocabulary blocks (``backends.torch.head``) against the spec's chunked head
in float64 NumPy: a vocabulary that is not a whole number of blocks (the padding's ``-inf`` bias must
give it no probability), labels in every block including the padded last one, ragged token chunks, and
logits with a clear top-1 so the hit count is not trivially zero."""

from __future__ import annotations

import numpy as np
import pytest

from backends.spec import forward as F
from backends.spec.ops import NumpyOps

torch = pytest.importorskip("torch", reason="the torch backend's head needs PyTorch")
head = pytest.importorskip("backends.torch.head")

pytestmark = pytest.mark.torch

TOKENS, DIM, VOCAB, WIDTH = 70, 8, 301, 64  # 5 blocks, the last 45 columns wide plus 19 of padding


def _inputs():
    gen = np.random.default_rng(11)
    h = gen.normal(size=(TOKENS, DIM))
    w = gen.normal(size=(DIM, VOCAB)) * 0.7
    b = gen.normal(size=VOCAB) * 0.3
    y = np.concatenate([np.arange(VOCAB - 10, VOCAB), gen.integers(0, VOCAB, TOKENS - 10)])  # the last block too
    y[:5] = np.argmax(h[:5] @ w + b, axis=-1)  # some rows predicted right
    return h, w, b, y


def _chunks():
    return F.head_chunks(TOKENS, VOCAB, elements=17 * VOCAB)  # 5 chunks, the last ragged


def test_blocked_head_equals_the_spec_in_float64():
    h, w, b, y = _inputs()
    scale = 1.0 / TOKENS
    ref_loss, ref_grads = F.head_loss_and_grads(NumpyOps(), h, w, b, y, scale)
    t = [torch.tensor(a) for a in (h, w, b)]
    loss, grads = head.VocabularyBlocks(WIDTH).loss_and_grads(*t, torch.tensor(y), scale, _chunks())
    assert float(loss) == pytest.approx(ref_loss, rel=1e-13)
    for got, want, name in zip(grads, ref_grads, ("h", "weight", "bias")):
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-11, atol=1e-15, err_msg=name)
    total, correct = head.VocabularyBlocks(WIDTH).sums(*t, torch.tensor(y), _chunks())
    ref_total, ref_correct = F.head_sums(NumpyOps(), h, w, b, y)
    assert float(total) == pytest.approx(ref_total, rel=1e-13)
    assert float(correct) == float(ref_correct) >= 5


def test_padding_gets_no_probability():
    """With a zero bias in the padding the padded columns would take softmax mass and the loss would grow."""
    h, w, b, y = _inputs()
    w3, b3 = head.blocks(torch.tensor(w), torch.tensor(b), WIDTH)
    assert w3.shape == (5, DIM, WIDTH) and b3.shape == (5, 1, WIDTH)
    assert torch.isneginf(b3.reshape(-1)[VOCAB:]).all() and (w3.permute(1, 0, 2).reshape(DIM, -1)[:, VOCAB:] == 0).all()
    assert torch.equal(b3.reshape(-1)[:VOCAB], torch.tensor(b))


def test_the_torch_ops_use_the_blocks_in_the_training_head():
    from backends.torch.ops import TorchOps

    h, w, b, y = _inputs()
    tensors = [torch.tensor(a, requires_grad=True) for a in (h, w, b)]
    loss = F.linear_cross_entropy(TorchOps(), *tensors, torch.tensor(y))
    loss.backward()
    ref_loss, ref_grads = F.head_loss_and_grads(NumpyOps(), h, w, b, y, 1.0 / TOKENS)
    assert float(loss) == pytest.approx(ref_loss, rel=1e-12)
    for t, want in zip(tensors, ref_grads):
        np.testing.assert_allclose(t.grad.numpy(), want, rtol=1e-10, atol=1e-14)
