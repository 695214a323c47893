"""``spec.ops`` primitives in MLX (``mlx.core``)."""

from __future__ import annotations

import math

import mlx.core as mx


class MlxOps:
    """MLX primitives; ``dtype`` is the float type of constants created without a ``like`` array."""

    name = "mlx"

    def __init__(self, dtype: mx.Dtype = mx.float32):
        self.dtype = dtype

    def constant(self, value, like=None):
        return mx.array(value, dtype=self.dtype if like is None else like.dtype)

    def shape(self, x) -> tuple[int, ...]:
        return tuple(x.shape)

    def matmul(self, a, b):
        return mx.matmul(a, b)

    def exp(self, x):
        # MLX's CPU exp is a float32-accurate approximation even on float64 (relative error ~1e-6);
        # pow goes through the C library and is correct to float64 rounding (checked in the tests).
        if x.dtype == mx.float64:
            return mx.power(mx.array(math.e, dtype=mx.float64), x)
        return mx.exp(x)

    def log(self, x):
        return mx.log(x)

    def sqrt(self, x):
        return mx.sqrt(x)

    def relu(self, x):
        return mx.maximum(x, 0)

    def max(self, x, axis, keepdims=False):
        return mx.max(x, axis=axis, keepdims=keepdims)

    def logsumexp(self, x, axis=-1):
        # Not mx.logsumexp: its exp loses float64 precision (3e-9 relative in a loss, measured); see exp.
        top = mx.max(x, axis=axis, keepdims=True)
        return mx.squeeze(top, axis) + mx.log(mx.sum(self.exp(x - top), axis=axis))

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

    def transpose(self, x, axes):
        return mx.transpose(x, axes)

    def logical_and(self, a, b):
        return mx.logical_and(a, b)

    def logical_or(self, a, b):
        return mx.logical_or(a, b)

    def to_float(self, x, like):
        return x.astype(like.dtype)

    def take_rows(self, table, ids):
        """``table[ids]``: embedding lookup of integer ids."""
        return mx.take(table, ids, axis=0)

    def arange(self, n: int, like):
        return mx.arange(n, dtype=like.dtype)

    def one_hot_pick(self, logp, labels):
        """``logp[..., labels]`` picked per row: the log-probability of each row's label."""
        return mx.squeeze(mx.take_along_axis(logp, mx.expand_dims(labels, -1), axis=-1), -1)

    def cumsum(self, x, axis):
        return mx.cumsum(x, axis=axis)

    def take(self, x, indices, axis):
        return mx.take(x, mx.array(list(indices), dtype=mx.int32), axis=axis)

    def concat(self, xs, axis):
        return mx.concatenate(list(xs), axis=axis)

    def stop_gradient(self, x):
        return mx.stop_gradient(x)
