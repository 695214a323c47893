"""The array primitives the spec's math is written against (``Ops``) and their NumPy implementation.

Every backend subclasses ``Ops`` once (``backends/<name>/ops.py``), in the manner of einops'
``_backends.py``: the model's math (``spec.dynamic``, ``spec.routers``, ``spec.forward``) is written once
against this interface, so the frameworks differ only in how a primitive is evaluated, never in the formula.
A subclass implements the abstract primitives and overrides a default only where its framework differs.
Arithmetic operators (+, -, *, /, comparisons) and integer indexing of the last axis are used directly;
everything else goes through an ``ops`` object.

Capabilities are declared attributes, never probed:

- ``supports_nonzero``: the class has ``nonzero`` and ``index_add`` (data-dependent shapes, eager
  only), which the sparse expert dispatch needs (``spec.dispatch``).
- ``expert_dispatch``: how expert mixtures are evaluated, a ``spec.dispatch.METHODS`` name or a dict
  from the hidden width d to one; the default is the spec's ``"concat"``.
- ``head_blocks``: ``None``, or an object whose ``sums(h, weight, bias, labels, chunks)`` and
  ``loss_and_grads(h, weight, bias, labels, scale, chunks)`` compute ``spec.forward.head_sums`` and
  ``head_loss_and_grads`` with the framework's own blocking or ordering of the same sums
  (``backends.torch.head``: vocabulary blocks; ``backends.keras.head``: a ``lax.scan`` on JAX;
  ``backends.mlx.head``: each chunk after the one before).
- ``head_chunk_elements``: ``None``, or at most this many logits per chunk of the head where the
  framework's kernels run faster on smaller chunks than ``spec.forward.HEAD_CHUNK_ELEMENTS`` (which still
  caps it).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np


class Ops(ABC):
    """The interface; ``dtype`` is the float type of constants created without ``like``."""

    name = "ops"
    supports_nonzero: bool = False
    expert_dispatch: str | dict = "concat"
    head_blocks = None
    head_chunk_elements: int | None = None

    @abstractmethod
    def constant(self, value, like=None):
        """``value`` as an array of ``like``'s dtype (and device), else of ``self.dtype``."""

    @abstractmethod
    def matmul(self, a, b):
        """``a @ b``, batched over leading axes."""

    @abstractmethod
    def exp(self, x): ...

    @abstractmethod
    def log(self, x): ...

    @abstractmethod
    def sqrt(self, x): ...

    @abstractmethod
    def relu(self, x): ...

    @abstractmethod
    def max(self, x, axis, keepdims=False): ...

    @abstractmethod
    def sum(self, x, axis=None, keepdims=False): ...

    @abstractmethod
    def where(self, cond, a, b): ...

    @abstractmethod
    def sort(self, x, axis=-1):
        """Values sorted ascending along ``axis``."""

    @abstractmethod
    def reshape(self, x, shape): ...

    @abstractmethod
    def expand_dims(self, x, axis): ...

    @abstractmethod
    def squeeze(self, x, axis): ...

    @abstractmethod
    def transpose(self, x, axes): ...

    @abstractmethod
    def logical_and(self, a, b): ...

    @abstractmethod
    def logical_or(self, a, b): ...

    @abstractmethod
    def to_float(self, x, like):
        """``x`` (bool or int) cast to ``like``'s float dtype."""

    @abstractmethod
    def take_rows(self, table, ids):
        """``table[ids]``: embedding lookup of integer ids."""

    @abstractmethod
    def take_along_axis(self, x, indices, axis):
        """``x`` gathered at integer ``indices`` (same rank as ``x``) along ``axis``."""

    @abstractmethod
    def arange(self, n: int, like):
        """``0, 1, ..., n - 1`` as floats of ``like``'s dtype (expert indices: ties broken by them)."""

    @abstractmethod
    def cumsum(self, x, axis):
        """Inclusive running sum along ``axis`` (token positions within an expert's capacity)."""

    @abstractmethod
    def take(self, x, indices, axis):
        """``x`` restricted to the static integer ``indices`` (a tuple) along ``axis`` (a MoUE window)."""

    @abstractmethod
    def concat(self, xs, axis): ...

    @abstractmethod
    def stop_gradient(self, x): ...

    def shape(self, x) -> tuple[int, ...]:
        return tuple(x.shape)

    def mean(self, x, axis=None, keepdims=False):
        """The sum over the static element count."""
        shape = tuple(x.shape)
        axes = range(len(shape)) if axis is None else [axis] if isinstance(axis, int) else axis
        return self.sum(x, axis=axis, keepdims=keepdims) / math.prod([shape[a] for a in axes])

    def logsumexp(self, x, axis=-1):
        """``log(sum(exp(x)))`` along ``axis`` (dropped), shifted by the maximum for stability."""
        top = self.max(x, axis, keepdims=True)
        return self.squeeze(top, axis) + self.log(self.sum(self.exp(x - top), axis=axis))

    def one_hot_pick(self, logp, labels):
        """``logp[..., labels]`` picked per row: the log-probability of each row's label."""
        return self.squeeze(self.take_along_axis(logp, self.expand_dims(labels, -1), -1), -1)

    # --- the chunked language-model head (``spec.forward.linear_cross_entropy``) ---------------------------

    def rows(self, x, start: int, stop: int):
        """Rows ``start:stop`` of ``x`` (a chunk of tokens)."""
        return x[start:stop]

    def one_hot(self, labels, n: int, like):
        """``(len(labels), n)`` floats of ``like``'s dtype: 1 at each row's label, else 0."""
        return self.to_float(self.expand_dims(labels, -1) == self.arange(n, like), like)

    def affine(self, x, w, b):
        """``x @ w + b`` (``b`` broadcast over the rows, or a matrix of the product's shape)."""
        return self.matmul(x, w) + b

    def sum_rows(self, x):
        """``sum(x, axis=0)`` of a 2-D chunk of logits' gradient: the head bias's part (a subclass may compute
        it as a product)."""
        return self.sum(x, axis=0)

    def shifted_exp(self, z, top):
        """``exp(z - top)``: the exponentials of a chunk's logits under their row maxima ``top``, the head's
        one vocabulary-wide exp (a subclass may compute it by a faster route of the same float precision)."""
        return self.exp(z - top)

    def cross_entropy_sums(self, z, labels):
        """``(sum over rows of logsumexp(z) - z_label, number of rows whose label has the top logit)``: a
        chunk's summed cross-entropy and top-1 hits (a subclass may work in ``z``'s memory, which the caller
        no longer reads)."""
        picked = self.one_hot_pick(z, labels)
        top = self.max(z, axis=-1, keepdims=True)
        correct = self.sum(self.to_float(picked >= top[..., 0], z))
        lse = self.squeeze(top, -1) + self.log(self.sum(self.shifted_exp(z, top), axis=-1))
        return self.sum(lse - picked), correct

    def cross_entropy_grad(self, z, labels, scale: float):
        """``(sum over rows of logsumexp(z) - z_label, scale (softmax(z) - one_hot(labels)))``: a chunk's
        summed cross-entropy and its gradient w.r.t. the logits ``z``, from one exp pass (a subclass may
        compute the gradient in ``z``'s memory, which the caller no longer reads)."""
        top = self.max(z, axis=-1, keepdims=True)
        e = self.shifted_exp(z, top)
        total = self.sum(e, axis=-1, keepdims=True)
        loss = self.sum(self.squeeze(top, -1) + self.log(self.squeeze(total, -1)) - self.one_hot_pick(z, labels))
        return loss, self.subtract_at_labels(e * (scale / total), labels, scale)

    def subtract_at_labels(self, x, labels, value: float):
        """``x - value * one_hot(labels)``: ``value`` taken off each row's entry at its label."""
        return x - self.one_hot(labels, self.shape(x)[-1], x) * value

    def with_gradient(self, fn, inputs: tuple, constants: tuple = (), value=None):
        """The scalar ``fn(*inputs, *constants)[0]`` whose gradient w.r.t. ``inputs`` is ``fn``'s own
        ``[1]`` (one array per input, times the incoming cotangent), not recorded by autodiff: a custom
        gradient. ``value(*inputs, *constants)`` (optional) gives the scalar alone, for a framework that
        knows no gradient is wanted. Here (no autodiff): the value."""
        return (value or (lambda *a: fn(*a)[0]))(*inputs, *constants)

    # --- attention (``spec.transformer``) ------------------------------------------------------------------

    MASKED = -1e30
    """The score a masked entry gets before the softmax (finite: ``exp`` of it minus the row's maximum
    is exactly 0 in float32 and float64, and no ``inf - inf`` can arise)."""

    def softmax(self, x, axis: int = -1, mask=None):
        """``exp(x) / sum(exp(x))`` along ``axis``, shifted by the maximum; where the boolean ``mask``
        (broadcast against ``x``) is false the weight is exactly 0 (each row needs one true entry)."""
        if mask is not None:
            x = self.where(mask, x, self.constant(self.MASKED, like=x))
        e = self.exp(x - self.stop_gradient(self.max(x, axis, keepdims=True)))
        return e / self.sum(e, axis=axis, keepdims=True)


class NumpyOps(Ops):
    """NumPy primitives; ``dtype`` is the float type of constants it creates (float64 for the reference)."""

    name = "numpy"

    def __init__(self, dtype: type = np.float64):
        self.dtype = np.dtype(dtype)

    def constant(self, value, like=None):
        dtype = self.dtype if like is None else like.dtype
        return np.asarray(value, dtype=dtype)

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

    def squeeze(self, x, axis):
        return np.squeeze(x, axis)

    def transpose(self, x, axes):
        return np.transpose(x, axes)

    def logical_and(self, a, b):
        return np.logical_and(a, b)

    def logical_or(self, a, b):
        return np.logical_or(a, b)

    def to_float(self, x, like):
        return x.astype(like.dtype)

    def take_rows(self, table, ids):
        return table[ids]

    def take_along_axis(self, x, indices, axis):
        return np.take_along_axis(x, indices, axis=axis)

    def arange(self, n: int, like):
        return np.arange(n, dtype=like.dtype)

    def cumsum(self, x, axis):
        return np.cumsum(x, axis=axis)

    def take(self, x, indices, axis):
        return np.take(x, np.asarray(indices, dtype=np.int64), axis=axis)

    def concat(self, xs, axis):
        return np.concatenate(xs, axis=axis)

    def stop_gradient(self, x):
        return x
