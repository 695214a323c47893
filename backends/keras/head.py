"""The language-model head's sums on JAX (``spec.forward.head_sums`` and ``head_loss_and_grads``): the
spec's chunks of tokens and its per-chunk functions (``head_chunk_sums``, ``head_chunk_grads``), the
equal-sized chunks run by a ``jax.lax.scan``.

Why: an unrolled Python loop over the chunks gives XLA independent chunks, and its CPU scheduler runs
them side by side: every chunk's logits and their gradient were alive at once, 1.67 GB of temporaries
on a Tiny batch (4,096 tokens x 50,257, ``Compiled.memory_analysis``), however small the chunks. A
loop's body runs one chunk at a time, so one chunk's logits are alive. The ragged last chunk (if any)
runs first, outside the loop, and its sums start the loop's carry, so it is never alive beside a chunk
of the loop. The sums are the spec's; only the order of the additions over the chunks differs (the
ragged chunk is added first).
"""

from __future__ import annotations

from backends.spec.forward import head_chunk_grads, head_chunk_sums


def _split(chunks: list[tuple[int, int]]) -> tuple[int, int, int]:
    """``(equal chunks, their rows, start of the ragged rest)`` of ``spec.forward.head_chunks``' spans."""
    size = chunks[0][1] - chunks[0][0]
    equal = sum(1 for start, stop in chunks if stop - start == size)
    return equal, size, equal * size


class ScannedChunks:
    """``Ops.head_blocks`` for Keras on JAX: the spec's chunk functions in a ``jax.lax.scan``."""

    def __init__(self, ops):
        self.ops = ops

    def _stacked(self, x, equal: int, size: int):
        """The first ``equal * size`` rows of ``x`` as ``(equal, size, ...)``: the loop's slices."""
        ops = self.ops
        return ops.reshape(ops.rows(x, 0, equal * size), (equal, size, *ops.shape(x)[1:]))

    def sums(self, h, weight, bias, labels, chunks):
        import jax

        ops = self.ops
        equal, size, rest = _split(chunks)
        total = ops.shape(h)[0]
        carry = (ops.constant(0.0, like=h), ops.constant(0.0, like=h))
        if rest < total:
            carry = head_chunk_sums(ops, ops.rows(h, rest, total), weight, bias, ops.rows(labels, rest, total))

        def body(carry, chunk):
            loss, correct = head_chunk_sums(ops, chunk[0], weight, bias, chunk[1])
            return (carry[0] + loss, carry[1] + correct), None

        (loss, correct), _ = jax.lax.scan(body, carry, (self._stacked(h, equal, size), self._stacked(labels, equal, size)))
        return loss, correct

    def loss_and_grads(self, h, weight, bias, labels, scale: float, chunks):
        import jax

        ops = self.ops
        equal, size, rest = _split(chunks)
        total, d = ops.shape(h)
        if rest < total:
            hr, yr = ops.rows(h, rest, total), ops.rows(labels, rest, total)
            loss, dh_rest, dweight, dbias = head_chunk_grads(ops, hr, weight, bias, yr, scale)
        else:
            loss, dh_rest = ops.constant(0.0, like=h), None
            dweight, dbias = weight * 0.0, bias * 0.0

        def body(carry, chunk):
            part, dh, dweight, dbias = head_chunk_grads(ops, chunk[0], weight, bias, chunk[1], scale)
            return (carry[0] + part, carry[1] + dweight, carry[2] + dbias), dh

        (loss, dweight, dbias), dh = jax.lax.scan(
            body, (loss, dweight, dbias), (self._stacked(h, equal, size), self._stacked(labels, equal, size))
        )
        dh = ops.reshape(dh, (equal * size, d))
        if dh_rest is not None:
            dh = ops.concat([dh, dh_rest], axis=0)
        return loss * scale, (dh, dweight, dbias)
