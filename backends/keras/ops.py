"""``spec.ops`` primitives in ``keras.ops``: one implementation for Keras on JAX and on PyTorch."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from backends.spec.ops import Ops


def _jax_with_gradient(fn, n_constants: int, value):
    """``Ops.with_gradient`` on JAX: a ``jax.custom_vjp`` whose forward rule is ``fn`` (value and
    gradients at once, the gradients kept as residuals) and whose backward scales them; no cotangent
    for the ``n_constants`` trailing (integer) arguments."""
    import jax

    @jax.custom_vjp
    def f(*args):
        return value(*args) if value is not None else fn(*args)[0]

    def backward(grads, cotangent):
        return (*(g * cotangent for g in grads), *([None] * n_constants))

    f.defvjp(fn, backward)
    return f


class KerasOps(Ops):
    """``spec.ops.Ops`` in ``keras.ops``; ``dtype`` is the float type of constants made without ``like``.

    Every primitive has a static output shape (the routing's dynamic expert count is a mask), so the
    same code runs eagerly and under ``jax.jit``.

    Keras's type promotion (``keras.backend.result_type``) turns float64 into float32 outside TensorFlow
    (keras-team/keras#23223, #23704), and the ops that call it lose float64: ``keras.ops.mean``
    computes in float32 on every backend, ``keras.ops.matmul`` returns float32 on PyTorch, and a Python
    scalar in ``keras.ops.where`` becomes a float32 tensor. So ``matmul`` is an ``einsum`` (same
    contraction, dtype kept; on PyTorch ``torch.matmul``, which keeps it too and runs a 2-D product
    as one ``mm``), ``mean`` is the base class's sum over the static count, and ``where`` makes its
    scalars in the other operand's dtype; the float64 parity tests guard the rest.
    """

    name = "keras"

    def __init__(self, dtype: str = "float32"):
        self.dtype = keras.backend.standardize_dtype(dtype)
        self._torch_matmul = None
        if keras.backend.backend() == "torch":
            import torch

            from backends.torch.head import VocabularyBlocks

            self._torch_matmul = torch.matmul
            self.head_blocks = VocabularyBlocks()  # the tensors are torch's: the torch backend's blocked head
        elif keras.backend.backend() == "jax":
            from .head import ScannedChunks

            self.head_blocks = ScannedChunks(self)
            # 16 MB of float32 logits per chunk: XLA's buffers for the loop's body are fresh memory each
            # step and its logits product is bound by writing them (75 GFLOP/s on a 128 MB chunk); on
            # chunks the cache holds, Tiny LM head alone on the 2-core machine: evaluation 0.73 s -> 0.26-0.31 s,
            # training 1.66 s -> 1.24-1.44 s (2^21 logits no better)
            self.head_chunk_elements = 2**22

    def constant(self, value, like=None):
        dtype = self.dtype if like is None else ops.dtype(like)
        return ops.convert_to_tensor(np.asarray(value), dtype=dtype)

    def matmul(self, a, b):
        if self._torch_matmul is not None:
            return self._torch_matmul(a, b)  # torch's einsum runs a 2-D product as a bmm with copies
        return ops.einsum("...ij,...jk->...ik", a, b)

    def exp(self, x):
        return ops.exp(x)

    def log(self, x):
        return ops.log(x)

    def sqrt(self, x):
        return ops.sqrt(x)

    def relu(self, x):
        return ops.relu(x)

    def max(self, x, axis, keepdims=False):
        return ops.amax(x, axis=axis, keepdims=keepdims)  # = max; Keras's torch ``max`` has an extra isinstance check

    def logsumexp(self, x, axis=-1):
        return ops.logsumexp(x, axis=axis)

    def sum(self, x, axis=None, keepdims=False):
        return ops.sum(x, axis=axis, keepdims=keepdims)

    def sum_rows(self, x):
        """On JAX a product with a row of ones: XLA's CPU reduction over the rows of a chunk's logits took
        longer than the chunk's three matrix products together (Tiny, 83 x 50,257: 25 ms of 34 ms; the
        product 1 ms)."""
        if self._torch_matmul is not None:
            return super().sum_rows(x)
        return self.matmul(ops.ones((1, ops.shape(x)[0]), dtype=ops.dtype(x)), x)[0]

    def where(self, cond, a, b):
        if isinstance(b, (int, float)):
            b = ops.convert_to_tensor(b, dtype=ops.dtype(a))
        if isinstance(a, (int, float)):
            a = ops.convert_to_tensor(a, dtype=ops.dtype(b))
        return ops.where(cond, a, b)

    def sort(self, x, axis=-1):
        return ops.sort(x, axis=axis)

    def reshape(self, x, shape):
        return ops.reshape(x, shape)

    def expand_dims(self, x, axis):
        return ops.expand_dims(x, axis)

    def squeeze(self, x, axis):
        return ops.squeeze(x, axis=axis)

    def transpose(self, x, axes):
        return ops.transpose(x, axes)

    def logical_and(self, a, b):
        return ops.logical_and(a, b)

    def logical_or(self, a, b):
        return ops.logical_or(a, b)

    def to_float(self, x, like):
        return ops.cast(x, ops.dtype(like))

    def take_rows(self, table, ids):
        return ops.take(table, ids, axis=0)

    def take_along_axis(self, x, indices, axis):
        return ops.take_along_axis(x, indices, axis=axis)

    def arange(self, n: int, like):
        return ops.arange(n, dtype=ops.dtype(like))

    def cumsum(self, x, axis):
        return ops.cumsum(x, axis=axis, dtype=ops.dtype(x))

    def take(self, x, indices, axis):
        return ops.take(x, np.asarray(indices, dtype=np.int32), axis=axis)

    def concat(self, xs, axis):
        return ops.concatenate(list(xs), axis=axis)

    def stop_gradient(self, x):
        return ops.stop_gradient(x)

    # --- the chunked language-model head (``spec.forward.linear_cross_entropy``) ---------------------------

    def with_gradient(self, fn, inputs: tuple, constants: tuple = (), value=None):
        """``jax.custom_vjp`` on JAX (the forward rule computes the value and gradients, the primal only
        the value); on PyTorch the torch backend's ``torch.autograd.Function``."""
        if keras.backend.backend() == "jax":
            return _jax_with_gradient(fn, len(constants), value)(*inputs, *constants)
        from backends.torch.ops import TorchOps

        return TorchOps.with_gradient(self, fn, inputs, constants, value)
