"""MLX modules of one DynaMoE layer and one feed-forward block (parameter containers over the spec)."""

from __future__ import annotations

from collections.abc import Mapping

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from backends import common
from backends.spec import forward as F
from backends.spec.config import RouterConfig

from .ops import MlxOps

OPS = MlxOps()
DTYPES = {"float32": (mx.float32, np.float32), "float64": (mx.float64, np.float64)}
_NAMES = {mx.float32: "float32", mx.float64: "float64"}


def dtype_name(dtype) -> str:
    """``"float32"`` or ``"float64"`` for a name or an ``mx.Dtype``; float64 only on MLX's CPU device."""
    name = _NAMES.get(dtype, str(dtype)) if isinstance(dtype, mx.Dtype) else dtype
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if name == "float64" and mx.default_device().type != mx.cpu:
        raise ValueError(
            f"dtype 'float64' needs MLX's CPU device (the default device is {mx.default_device()}): MLX's "
            "Metal and CUDA back ends have no float64; call mx.set_default_device(mx.cpu) first or use float32"
        )
    return name


def to_mlx(value, dtype) -> mx.array:
    """A NumPy array as an MLX array of float type ``dtype`` (rounded by NumPy, to nearest).

    The dtype is passed explicitly: ``mx.array`` turns a float64 NumPy array into float32 by default.
    """
    mx_type, np_type = DTYPES[dtype_name(dtype)]
    return mx.array(np.asarray(value, dtype=np_type), dtype=mx_type)


class ParamGroup(nn.Module):
    """Parameters named as in the spec, created from NumPy arrays."""

    def __init__(self, arrays: dict[str, np.ndarray], dtype="float32"):
        super().__init__()
        for name, value in arrays.items():
            setattr(self, name, to_mlx(value, dtype))


def param_tree(arrays: Mapping[str, np.ndarray], dtype="float32") -> nn.Module:
    """Nested modules whose parameter paths are the dotted names of ``arrays`` (e.g. ``experts.w1``)."""
    return common.param_tree(arrays, lambda leaves: ParamGroup(leaves, dtype), nn.Module)


class DynaMoELayer(nn.Module):
    """A DynaMoE layer (Eq. 1, 4-7): ``y = sum_{i in S(h)} w_i E_i(h)`` over dynamically selected experts.

    ``params``: NumPy arrays under the layer's spec names (``common.DYNAMOE_LAYER_NAMES``):
    ``gate.weight`` (d, E), ``experts.w1`` (E, d, d_h), ``experts.b1`` (E, d_h), ``experts.w2`` (E, d_h, d),
    ``experts.b2`` (E, d) (e.g. ``common.under(spec.init_params(cfg), "layers.0.")``). ``__call__(h, noise=None)``
    takes tokens (N, d); ``noise`` (N, E) is the training gate noise of Eq. 7 (``spec.rng.gate_noise``),
    ``None`` in evaluation.
    """

    def __init__(self, router: RouterConfig, params: Mapping[str, np.ndarray], dtype="float32"):
        super().__init__()
        self.router = router
        groups = common.group_names(common.layer_arrays(params, common.DYNAMOE_LAYER_NAMES, "DynaMoELayer"))
        self.gate = ParamGroup(groups["gate"], dtype)
        self.experts = ParamGroup(groups["experts"], dtype)

    def weights(self) -> dict:
        e = self.experts
        return {"gate": self.gate.weight, "w1": e.w1, "b1": e.b1, "w2": e.w2, "b2": e.b2}

    def forward_with_routing(self, h, noise=None):
        """``(y, Routing)`` of ``spec.forward.dynamoe_layer`` (gate Eq. 1, selection Eq. 4-5, weights Eq. 6)."""
        return F.dynamoe_layer(OPS, self.weights(), h, noise, self.router)

    def __call__(self, h, noise=None):
        return self.forward_with_routing(h, noise)[0]


class FeedForwardLayer(nn.Module):
    """The MLP baseline's block: ``relu(h W1 + b1) W2 + b2`` (one per layer, replacing the MoE).

    ``params``: ``ffn.w1`` (d, h), ``ffn.b1`` (h,), ``ffn.w2`` (h, d), ``ffn.b2`` (d,) as NumPy arrays.
    """

    def __init__(self, params: Mapping[str, np.ndarray], dtype="float32"):
        super().__init__()
        arrays = common.layer_arrays(params, common.FEED_FORWARD_NAMES, "FeedForwardLayer")
        self.ffn = ParamGroup(common.under(arrays, "ffn."), dtype)

    def __call__(self, h):
        f = self.ffn
        return F.feed_forward(OPS, h, f.w1, f.b1, f.w2, f.b2)
