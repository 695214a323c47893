"""``spec.ops`` primitives in PyTorch."""

from __future__ import annotations

import torch

from backends.spec.ops import Ops

from .head import VocabularyBlocks


class _WithGradient(torch.autograd.Function):
    """``Ops.with_gradient``: the forward computes the value and its gradients at once (no graph), the
    backward scales the stored gradients by the incoming cotangent."""

    @staticmethod
    def forward(ctx, fn, n_inputs, *args):
        value, grads = fn(*args)
        ctx.n_constants = len(args) - n_inputs
        ctx.save_for_backward(*grads)
        return value

    @staticmethod
    def backward(ctx, cotangent):
        return (None, None, *(g * cotangent for g in ctx.saved_tensors), *([None] * ctx.n_constants))


class TorchOps(Ops):
    """PyTorch primitives; eager PyTorch has the data-dependent ``nonzero`` the sparse dispatch needs."""

    name = "torch"
    supports_nonzero = True
    head_blocks = VocabularyBlocks()

    def __init__(self, dtype: torch.dtype = torch.float32):
        self.dtype = dtype

    def constant(self, value, like=None):
        if like is None:
            return torch.as_tensor(value, dtype=self.dtype)
        return torch.as_tensor(value, dtype=like.dtype, device=like.device)

    def matmul(self, a, b):
        return torch.matmul(a, b)

    def exp(self, x):
        return torch.exp(x)

    def log(self, x):
        return torch.log(x)

    def sqrt(self, x):
        return torch.sqrt(x)

    def relu(self, x):
        return torch.relu(x)

    def max(self, x, axis, keepdims=False):
        return torch.amax(x, dim=axis, keepdim=keepdims)

    def logsumexp(self, x, axis=-1):
        return torch.logsumexp(x, dim=axis)

    def sum(self, x, axis=None, keepdims=False):
        return torch.sum(x) if axis is None else torch.sum(x, dim=axis, keepdim=keepdims)

    def mean(self, x, axis=None, keepdims=False):
        return torch.mean(x) if axis is None else torch.mean(x, dim=axis, keepdim=keepdims)

    def where(self, cond, a, b):
        return torch.where(cond, a, b)

    def sort(self, x, axis=-1):
        return torch.sort(x, dim=axis).values

    def reshape(self, x, shape):
        return torch.reshape(x, shape)

    def expand_dims(self, x, axis):
        return torch.unsqueeze(x, axis)

    def squeeze(self, x, axis):
        return torch.squeeze(x, axis)

    def transpose(self, x, axes):
        return x.permute(*axes)

    def logical_and(self, a, b):
        return torch.logical_and(a, b)

    def logical_or(self, a, b):
        return torch.logical_or(a, b)

    def to_float(self, x, like):
        return x.to(like.dtype)

    def take_rows(self, table, ids):
        return torch.nn.functional.embedding(ids, table)

    def arange(self, n: int, like):
        return torch.arange(n, dtype=like.dtype, device=like.device)

    def nonzero(self, x):
        """Indices (1-D int64) where ``x`` is true: a data-dependent shape (eager only; ``spec.dispatch``)."""
        return torch.nonzero(x).squeeze(-1)

    def index_add(self, x, index, values):
        """``x`` with ``values[i]`` added to row ``index[i]`` (out of place)."""
        return torch.index_add(x, 0, index, values)

    def take_along_axis(self, x, indices, axis):
        return torch.gather(x, axis, indices)

    def cumsum(self, x, axis):
        return torch.cumsum(x, dim=axis)

    def take(self, x, indices, axis):
        return torch.index_select(x, axis, torch.as_tensor(indices, dtype=torch.int64, device=x.device))

    def concat(self, xs, axis):
        return torch.cat(list(xs), dim=axis)

    def stop_gradient(self, x):
        return x.detach()

    # --- the chunked language-model head (``spec.forward.linear_cross_entropy``) ---------------------------

    def affine(self, x, w, b):
        return torch.addmm(b, x, w) if x.dim() == 2 else torch.matmul(x, w) + b

    def with_gradient(self, fn, inputs: tuple, constants: tuple = (), value=None):
        if value is not None and not (torch.is_grad_enabled() and any(t.requires_grad for t in inputs)):
            return value(*inputs, *constants)
        return _WithGradient.apply(fn, len(inputs), *inputs, *constants)
