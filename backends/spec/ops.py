"""The array primitives the spec's math is written against, and their NumPy implementation.

Every backend provides one small class with these names (``backends/<name>/ops.py``), in the manner of
einops' ``_backends.py``: the model's math (``spec.routing``, ``spec.forward``) is written once against
this interface, so the frameworks differ only in how a primitive is evaluated, never in the formula.
Arithmetic operators (+, -, *, /, comparisons) and integer indexing of the last axis are used directly;
everything else goes through an ``ops`` object.
"""

from __future__ import annotations

import numpy as np


class NumpyOps:
    """NumPy primitives; ``dtype`` is the float type of constants it creates (float64 for the reference)."""

    name = "numpy"

    def __init__(self, dtype: type = np.float64):
        self.dtype = np.dtype(dtype)

    def constant(self, value, like=None):
        dtype = self.dtype if like is None else like.dtype
        return np.asarray(value, dtype=dtype)

    def shape(self, x) -> tuple[int, ...]:
        return tuple(x.shape)

    def matmul(self, a, b):
        return np.matmul(a, b)

    def exp(self, x):
        return np.exp(x)

    def log(self, x):
        return np.log(x)

    def sqrt(self, x):
        return np.sqrt(x)

    def relu(self, x):
        return np.maximum(x, 0)

    def max(self, x, axis, keepdims=False):
        return np.max(x, axis=axis, keepdims=keepdims)

    def logsumexp(self, x, axis=-1):
        """``log(sum(exp(x)))`` along ``axis`` (dropped), shifted by the maximum for stability."""
        top = np.max(x, axis=axis, keepdims=True)
        return np.squeeze(top, axis) + np.log(np.sum(np.exp(x - top), axis=axis))

    def sum(self, x, axis=None, keepdims=False):
        return np.sum(x, axis=axis, keepdims=keepdims)

    def mean(self, x, axis=None, keepdims=False):
        return np.mean(x, axis=axis, keepdims=keepdims)

    def where(self, cond, a, b):
        return np.where(cond, a, b)

    def sort(self, x, axis=-1):
        return np.sort(x, axis=axis)

    def reshape(self, x, shape):
        return np.reshape(x, shape)

    def expand_dims(self, x, axis):
        return np.expand_dims(x, axis)

    def transpose(self, x, axes):
        return np.transpose(x, axes)

    def logical_and(self, a, b):
        return np.logical_and(a, b)

    def logical_or(self, a, b):
        return np.logical_or(a, b)

    def to_float(self, x, like):
        return x.astype(like.dtype)

    def take_rows(self, table, ids):
        """``table[ids]``: embedding lookup of integer ids."""
        return table[ids]

    def arange(self, n: int, like):
        """``0, 1, ..., n - 1`` as floats of ``like``'s dtype (expert indices: ties broken by them)."""
        return np.arange(n, dtype=like.dtype)

    def one_hot_pick(self, logp, labels):
        """``logp[..., labels]`` picked per row: the log-probability of each row's label."""
        return np.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]

    def cumsum(self, x, axis):
        """Inclusive running sum along ``axis`` (token positions within an expert's capacity)."""
        return np.cumsum(x, axis=axis)

    def take(self, x, indices, axis):
        """``x`` restricted to the static integer ``indices`` (a tuple) along ``axis`` (a MoUE window)."""
        return np.take(x, np.asarray(indices, dtype=np.int64), axis=axis)

    def concat(self, xs, axis):
        return np.concatenate(xs, axis=axis)

    def stop_gradient(self, x):
        return x
