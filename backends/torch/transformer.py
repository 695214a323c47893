"""The Transformer backbone in PyTorch (``spec.transformer``): one module holding the spec's arrays under
their names, evaluated by the spec's math with ``TorchOps``; ``build_model`` builds it for
``backbone="transformer"`` and hands every other config to ``model.build_model``."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from backends import common
from backends.spec import transformer as T
from backends.spec.config import ModelConfig
from backends.spec.init import check_params, param_shapes

from . import model as _model
from .ops import TorchOps

OPS = TorchOps()
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


class _Leaves(nn.Module):
    def __init__(self, arrays: Mapping[str, np.ndarray], dtype: torch.dtype, device):
        super().__init__()
        for name, value in arrays.items():
            self.register_parameter(name, nn.Parameter(torch.as_tensor(np.asarray(value), dtype=dtype, device=device).clone()))


class TransformerModel(_model.SpecModel):
    """Embedding, L blocks (attention + ``cfg.kind``'s feed-forward), LayerNorm and head; the parameter
    paths are the spec's names (``layers.0.attn.query.weight``, ...), in ``param_shapes`` order."""

    def __init__(self, cfg: ModelConfig, params: Mapping[str, np.ndarray], dtype="float32", device=None):
        super().__init__()
        self.cfg = cfg
        tree = common.param_tree(params, lambda leaves: _Leaves(leaves, _dtype(dtype), device), nn.Module)
        for name, child in tree.named_children():
            self.add_module(name, child)


def build_model(cfg: ModelConfig, params: dict[str, np.ndarray], dtype="float32", device=None):
    """The network of ``cfg``: a ``TransformerModel`` for ``backbone="transformer"``, else ``model.build_model``'s."""
    if cfg.backbone != "transformer":
        return _model.build_model(cfg, params, dtype, device)
    check_params(cfg, {name: np.shape(value) for name, value in params.items()})
    _dtype(dtype)
    return TransformerModel(cfg, {name: params[name] for name in param_shapes(cfg)}, dtype, device or _model.default_device())


def forward_with_probes(model: TransformerModel, x) -> tuple[np.ndarray, list[np.ndarray], dict[str, list[np.ndarray]]]:
    """Evaluation-mode NumPy ``(logits, per-layer masks, record)``: ``record["attention"]`` (B, heads, T, T)
    and ``record["post_attention"]`` (B*T, d) per layer (``spec.transformer.forward_with_probes``)."""
    with torch.no_grad():
        ids = torch.as_tensor(np.asarray(x), dtype=torch.int64, device=model.device)
        logits, routings, record = T.forward_with_probes(OPS, dict(model.named_parameters()), ids, model.cfg)
    out = {key: [v.cpu().numpy() for v in values] for key, values in record.items()}
    return logits.cpu().numpy(), [r.mask.cpu().numpy() for r in routings], out
