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

    def _scan(self, chunk, zeros, h, labels, chunks):
        """``chunk(states, labels) -> (sums, kept)`` over the chunks: the ragged rest first (its sums start the
        carry, else ``zeros()``), then the equal chunks in a ``lax.scan``. Returns the summed carry, the equal
        chunks' ``kept`` stacked, and the rest's ``kept`` (``None`` without a rest)."""
        import jax

        ops = self.ops
        equal, size, rest = _split(chunks)
        total = ops.shape(h)[0]
        carry, rest_kept = (zeros(), None) if rest == total else chunk(ops.rows(h, rest, total), ops.rows(labels, rest, total))

        def body(carry, xs):
            sums, kept = chunk(*xs)
            return tuple(c + s for c, s in zip(carry, sums)), kept

        carry, kept = jax.lax.scan(body, tuple(carry), (self._stacked(h, equal, size), self._stacked(labels, equal, size)))
        return carry, kept, rest_kept

    def sums(self, h, weight, bias, labels, chunks):
        ops = self.ops
        zero = ops.constant(0.0, like=h)
        (loss, correct), _, _ = self._scan(
            lambda hc, y: (head_chunk_sums(ops, hc, weight, bias, y), None), lambda: (zero, zero), h, labels, chunks
        )
        return loss, correct

    def loss_and_grads(self, h, weight, bias, labels, scale: float, chunks):
        ops = self.ops

        def chunk(hc, y):
            part, dh, dweight, dbias = head_chunk_grads(ops, hc, weight, bias, y, scale)
            return (part, dweight, dbias), dh

        def zeros():
            return ops.constant(0.0, like=h), weight * 0.0, bias * 0.0

        (loss, dweight, dbias), dh, dh_rest = self._scan(chunk, zeros, h, labels, chunks)
        dh = ops.reshape(dh, (-1, ops.shape(h)[1]))
        if dh_rest is not None:
            dh = ops.concat([dh, dh_rest], axis=0)
        return loss * scale, (dh, dweight, dbias)
