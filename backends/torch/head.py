"""The language-model head's sums (``spec.forward.head_sums`` and ``head_loss_and_grads``) on vocabulary
blocks: the same chunks of tokens, each chunk's logits held as ``(blocks, rows, width)`` instead of
``(rows, vocabulary)``.

Why: MKL multiplies a chunk of states (rows x d, d = 64 on Tiny) by the whole 64 x 50,257 head at a
third of the rate it reaches on column blocks of 2,048, whose operand and output tiles stay in cache
(measured on the 2-core CPU machine, Tiny, 667-row chunks: logits, the head's gradient and the states'
gradient together 3.6 s row-wise against 2.4 s blocked on one loaded core). The vocabulary is padded to
whole blocks with zero weights and a ``-inf`` bias, whose softmax is exactly 0, so the padding adds
nothing to any sum or gradient. Every sum is the spec's; only the order of the additions over the
vocabulary differs.

Every chunk's logits go into one buffer allocated once per call: a fresh 120 MB tensor per chunk is
new memory each time, and broadcasting the bias into it page-faulted through every page (``copy_``
was a fifth of the Tiny training step in the profiler). Reusing the buffer took the head of a Tiny
step (4,096 tokens, batch 32 x 128) from 1.04 s to 0.84 s of training and from 0.62 s to 0.40 s of
evaluation on the 2-core machine, with the same loss to the last digit.
"""

from __future__ import annotations

import math

import torch


def blocks(weight, bias, width: int):
    """``(W3, B3)``: ``weight`` (d, V) as ``(blocks, d, width)`` and ``bias`` (V,) as ``(blocks, 1, width)``,
    the vocabulary padded to ``blocks * width`` with zero weights and a ``-inf`` bias."""
    d, vocab = weight.shape
    count = math.ceil(vocab / width)
    pad = count * width - vocab
    w = torch.nn.functional.pad(weight, (0, pad))
    b = torch.nn.functional.pad(bias, (0, pad), value=-math.inf)
    return w.reshape(d, count, width).permute(1, 0, 2).contiguous(), b.reshape(count, 1, width)


def _buffer(w3, chunks):
    """One flat buffer for the largest chunk's blocked logits, reused by every chunk."""
    rows = max(stop - start for start, stop in chunks)
    return torch.empty(w3.shape[0] * rows * w3.shape[2], dtype=w3.dtype, device=w3.device)


def _logits(h, w3, b3, buffer):
    """A chunk's blocked logits ``(blocks, rows, width)``, written into ``buffer``."""
    count, _, width = w3.shape
    z = buffer[: count * h.shape[0] * width].view(count, h.shape[0], width)
    return torch.baddbmm(b3, h.expand(count, *h.shape), w3, out=z)


def _exp_pass(z, labels, width: int):
    """One pass over a chunk's blocked logits, in their memory: ``z`` becomes ``exp(z - row max)``.
    Returns ``(picked, index, top, total)``: each row's logit at its label, its (block, row, column)
    index, the row maxima and the rows' sums of the exponentials."""
    index = (torch.div(labels, width, rounding_mode="floor"), torch.arange(z.shape[1], device=z.device), labels % width)
    picked = z[index]
    top = torch.amax(z, dim=(0, 2))
    total = z.sub_(top[None, :, None]).exp_().sum(dim=(0, 2))
    return picked, index, top, total


class VocabularyBlocks:
    """``Ops.head_blocks`` for PyTorch: the head's sums on vocabulary blocks of ``width`` columns."""

    def __init__(self, width: int = 2048):
        self.width = width

    def sums(self, h, weight, bias, labels, chunks):
        """``spec.forward.head_sums`` (summed cross-entropy, top-1 hits) over ``chunks`` of token rows."""
        w3, b3 = blocks(weight, bias, self.width)
        buffer = _buffer(w3, chunks)
        loss = correct = 0.0
        for start, stop in chunks:
            z = _logits(h[start:stop], w3, b3, buffer)
            picked, _, top, total = _exp_pass(z, labels[start:stop], self.width)
            correct = correct + torch.sum(picked >= top, dtype=z.dtype)
            loss = loss + torch.sum(top + torch.log(total) - picked)
        return loss, correct

    def loss_and_grads(self, h, weight, bias, labels, scale: float, chunks):
        """``spec.forward.head_loss_and_grads``: ``scale`` x the summed cross-entropy and its gradients
        ``(d h, d weight, d bias)``, each chunk's logits turned into their gradient in place."""
        w3, b3 = blocks(weight, bias, self.width)
        count, d, width = w3.shape
        dh = torch.empty_like(h)
        dw3 = torch.zeros_like(w3)
        db3 = torch.zeros(count, width, dtype=w3.dtype, device=w3.device)
        buffer = _buffer(w3, chunks)
        loss = 0.0
        for start, stop in chunks:
            hc = h[start:stop]
            z = _logits(hc, w3, b3, buffer)
            picked, index, top, total = _exp_pass(z, labels[start:stop], width)
            loss = loss + torch.sum(top + torch.log(total) - picked)
            z.mul_((scale / total)[None, :, None])
            z[index] -= scale
            torch.sum(torch.bmm(z, w3.transpose(1, 2)), dim=0, out=dh[start:stop])
            dw3.baddbmm_(hc.t().expand(count, d, hc.shape[0]), z)
            db3 += torch.sum(z, dim=1)
        vocab = weight.shape[1]
        dweight = dw3.permute(1, 0, 2).reshape(d, -1)[:, :vocab].contiguous()
        return loss * scale, (dh, dweight, db3.reshape(-1)[:vocab].contiguous())
