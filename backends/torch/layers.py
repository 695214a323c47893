"""PyTorch modules of one DynaMoE layer and one feed-forward block (parameter containers over the spec)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from backends import common
from backends.spec import forward as F
from backends.spec.config import RouterConfig

from .ops import TorchOps

OPS = TorchOps()
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def torch_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


class ParamGroup(nn.Module):
    """Parameters named as in the spec, created from NumPy arrays."""

    def __init__(self, arrays: dict[str, np.ndarray], dtype="float32", device=None):
        super().__init__()
        for name, value in arrays.items():
            tensor = torch.as_tensor(np.asarray(value), dtype=torch_dtype(dtype), device=device)
            self.register_parameter(name, nn.Parameter(tensor.clone()))


def param_tree(arrays: Mapping[str, np.ndarray], dtype="float32", device=None) -> nn.Module:
    """Nested modules whose parameter paths are the dotted names of ``arrays`` (e.g. ``experts.w1``)."""
    return common.param_tree(arrays, lambda leaves: ParamGroup(leaves, dtype, device), nn.Module)


class DynaMoELayer(nn.Module):
    """A DynaMoE layer (Eq. 1, 4-7): ``y = sum_{i in S(h)} w_i E_i(h)`` over dynamically selected experts.

    ``params``: NumPy arrays under the layer's spec names (``common.DYNAMOE_LAYER_NAMES``):
    ``gate.weight`` (d, E), ``experts.w1`` (E, d, d_h), ``experts.b1`` (E, d_h), ``experts.w2`` (E, d_h, d),
    ``experts.b2`` (E, d) (e.g. ``common.under(spec.init_params(cfg), "layers.0.")``). ``forward(h, noise=None)``
    takes tokens (N, d); ``noise`` (N, E) is the training gate noise of Eq. 7 (``spec.rng.gate_noise``),
    ``None`` in evaluation.
    """

    def __init__(self, router: RouterConfig, params: Mapping[str, np.ndarray], dtype="float32", device=None):
        super().__init__()
        self.router = router
        groups = common.group_names(common.layer_arrays(params, common.DYNAMOE_LAYER_NAMES, "DynaMoELayer"))
        self.gate = ParamGroup(groups["gate"], dtype, device)
        self.experts = ParamGroup(groups["experts"], dtype, device)

    def weights(self) -> dict:
        e = self.experts
        return {"gate": self.gate.weight, "w1": e.w1, "b1": e.b1, "w2": e.w2, "b2": e.b2}

    def forward_with_routing(self, h, noise=None):
        return F.dynamoe_layer(OPS, self.weights(), h, noise, self.router)

    def forward(self, h, noise=None):
        return self.forward_with_routing(h, noise)[0]


class FeedForwardLayer(nn.Module):
    """The MLP baseline's block: ``relu(h W1 + b1) W2 + b2`` (one per layer, replacing the MoE).

    ``params``: ``ffn.w1`` (d, h), ``ffn.b1`` (h,), ``ffn.w2`` (h, d), ``ffn.b2`` (d,) as NumPy arrays.
    """

    def __init__(self, params: Mapping[str, np.ndarray], dtype="float32", device=None):
        super().__init__()
        arrays = common.layer_arrays(params, common.FEED_FORWARD_NAMES, "FeedForwardLayer")
        self.ffn = ParamGroup(common.under(arrays, "ffn."), dtype, device)

    def forward(self, h):
        f = self.ffn
        return F.feed_forward(OPS, h, f.w1, f.b1, f.w2, f.b2)
