"""PyTorch modules of one DynaMoE layer and one feed-forward block (parameter containers over the spec)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

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


def param_tree(arrays: dict[str, np.ndarray], dtype="float32", device=None) -> nn.Module:
    """Nested modules whose parameter paths are the dotted names of ``arrays`` (e.g. ``experts.w1``)."""
    groups: dict[str, dict] = {}
    for name, value in arrays.items():
        module, _, leaf = name.rpartition(".")
        groups.setdefault(module, {})[leaf] = value
    root = nn.Module()
    for module, leaves in groups.items():
        parent = root
        *path, last = module.split(".")
        for part in path:
            if not hasattr(parent, part):
                parent.add_module(part, nn.Module())
            parent = getattr(parent, part)
        parent.add_module(last, ParamGroup(leaves, dtype, device))
    return root


class DynaMoELayer(nn.Module):
    """A DynaMoE layer (Eq. 1, 4-7): ``y = sum_{i in S(h)} w_i E_i(h)`` over dynamically selected experts.

    ``gate`` (d, E), ``w1`` (E, d, d_h), ``b1`` (E, d_h), ``w2`` (E, d_h, d), ``b2`` (E, d) are NumPy arrays
    (e.g. from ``spec.init_params``). ``forward(h, noise=None)`` takes tokens (N, d); ``noise`` (N, E) is
    the training gate noise of Eq. 7 (``spec.rng.gate_noise``), ``None`` in evaluation.
    """

    def __init__(self, router: RouterConfig, gate, w1, b1, w2, b2, dtype="float32", device=None):
        super().__init__()
        self.router = router
        self.gate = ParamGroup({"weight": gate}, dtype, device)
        self.experts = ParamGroup({"w1": w1, "b1": b1, "w2": w2, "b2": b2}, dtype, device)

    def weights(self) -> dict:
        e = self.experts
        return {"gate": self.gate.weight, "w1": e.w1, "b1": e.b1, "w2": e.w2, "b2": e.b2}

    def forward_with_routing(self, h, noise=None):
        return F.dynamoe_layer(OPS, self.weights(), h, noise, self.router)

    def forward(self, h, noise=None):
        return self.forward_with_routing(h, noise)[0]


class FeedForwardLayer(nn.Module):
    """The MLP baseline's block: ``relu(h W1 + b1) W2 + b2`` (one per layer, replacing the MoE)."""

    def __init__(self, w1, b1, w2, b2, dtype="float32", device=None):
        super().__init__()
        self.ffn = ParamGroup({"w1": w1, "b1": b1, "w2": w2, "b2": b2}, dtype, device)

    def forward(self, h):
        f = self.ffn
        return F.feed_forward(OPS, h, f.w1, f.b1, f.w2, f.b2)
