"""``spec.ops`` primitives in MLX (``mlx.core``)."""

from __future__ import annotations

import math

import mlx.core as mx

from backends.spec.ops import Ops

from .head import SequencedChunks


@mx.compile
def _shifted_exp2(z, top):
    return mx.power(mx.array(2.0, dtype=z.dtype), (z - top) * math.log2(math.e))


class MlxOps(Ops):
    """MLX primitives; ``dtype`` is the float type of constants created without a ``like`` array.

    ``logsumexp`` is the base class's, not ``mx.logsumexp``: its exp loses float64 precision (3e-9
    relative in a loss, measured); see ``exp``.
    """

    name = "mlx"
    # 32 MB of float32 logits per chunk: MLX's one-thread element-wise passes run faster on chunks the
    # cache holds (Tiny LM head alone, 2-core machine: training 2.23 s -> 1.81 s, evaluation 1.61 s -> 1.00 s
    # against the spec's 128 MB; 2^22 and 2^24 logits were slower)
    head_chunk_elements = 2**23

    def __init__(self, dtype: mx.Dtype = mx.float32):
        self.dtype = dtype
        self.head_blocks = SequencedChunks(self)

    def constant(self, value, like=None):
        return mx.array(value, dtype=self.dtype if like is None else like.dtype)

    def matmul(self, a, b):
        return mx.matmul(a, b)

    def exp(self, x):
        # MLX's CPU exp is a float32-accurate approximation even on float64 (relative error ~1e-6);
        # pow goes through the C library and is correct to float64 rounding (checked in the tests).
        if x.dtype == mx.float64:
            return mx.power(mx.array(math.e, dtype=mx.float64), x)
        return mx.exp(x)

    def shifted_exp(self, z, top):
        """float32: ``2 ** ((z - top) log2 e)`` in one compiled kernel, 2.2x faster than MLX's CPU ``exp`` on
        a chunk's logits (30 M of them: 175 ms against 390 ms on one thread of the 2-core machine), and as
        accurate (relative error 1.4e-6 where ``exp(z - top) > 1e-6``, MLX's exp ~1e-6)."""
        if z.dtype == mx.float64:
            return super().shifted_exp(z, top)
        return _shifted_exp2(z, top)

    def log(self, x):
        return mx.log(x)

    def sqrt(self, x):
        return mx.sqrt(x)

    def relu(self, x):
        return mx.maximum(x, 0)

    def max(self, x, axis, keepdims=False):
        return mx.max(x, axis=axis, keepdims=keepdims)

    def sum(self, x, axis=None, keepdims=False):
        return mx.sum(x, axis=axis, keepdims=keepdims)

    def mean(self, x, axis=None, keepdims=False):
        return mx.mean(x, axis=axis, keepdims=keepdims)

    def where(self, cond, a, b):
        return mx.where(cond, a, b)

    def sort(self, x, axis=-1):
        return mx.sort(x, axis=axis)

    def reshape(self, x, shape):
        return mx.reshape(x, shape)

    def expand_dims(self, x, axis):
        return mx.expand_dims(x, axis)

    def squeeze(self, x, axis):
        return mx.squeeze(x, axis)

    def transpose(self, x, axes):
        return mx.transpose(x, axes)

    def logical_and(self, a, b):
        return mx.logical_and(a, b)

    def logical_or(self, a, b):
        return mx.logical_or(a, b)

    def to_float(self, x, like):
        return x.astype(like.dtype)

    def take_rows(self, table, ids):
        return mx.take(table, ids, axis=0)

    def take_along_axis(self, x, indices, axis):
        return mx.take_along_axis(x, indices, axis=axis)

    def arange(self, n: int, like):
        return mx.arange(n, dtype=like.dtype)

    def cumsum(self, x, axis):
        return mx.cumsum(x, axis=axis)

    def take(self, x, indices, axis):
        return mx.take(x, mx.array(list(indices), dtype=mx.int32), axis=axis)

    def concat(self, xs, axis):
        return mx.concatenate(list(xs), axis=axis)

    def stop_gradient(self, x):
        return mx.stop_gradient(x)

    # --- the chunked language-model head (``spec.forward.linear_cross_entropy``) ---------------------------

    def subtract_at_labels(self, x, labels, value: float):
        """A scatter at one entry per row: MLX's CPU element-wise kernels run on one thread (a multiply over a
        chunk's 33 M logits takes ~70 ms on the 2-core machine), so a vocabulary-wide one-hot costs more than
        the head's matmuls."""
        return x.at[mx.arange(x.shape[0]), labels].subtract(value)

    def with_gradient(self, fn, inputs: tuple, constants: tuple = (), value=None):
        """``mx.custom_function``: the function returns the value and its gradients (computed together,
        once), its ``vjp`` scales the gradients by the value's cotangent (zeros for the constants)."""
        n = len(inputs)

        @mx.custom_function
        def f(*args):
            loss, grads = fn(*args)
            return (loss, *grads)

        @f.vjp
        def f_vjp(primals, cotangents, outputs):
            cotangent = cotangents[0]
            return (*(g * cotangent for g in outputs[1:]), *(mx.zeros_like(c) for c in primals[n:]))

        return f(*inputs, *constants)[0]
