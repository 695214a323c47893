"""The Transformer backbone in MLX (``spec.transformer``): one module tree holding the spec's arrays
under their names, evaluated by the spec's math with ``MlxOps``; ``build_model`` builds it for
``backbone="transformer"`` and hands every other config to ``model.build_model``."""

from __future__ import annotations

from collections.abc import Mapping

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from backends import common
from backends.spec import transformer as T
from backends.spec.config import ModelConfig
from backends.spec.init import check_params, param_shapes

from . import model as _model
from .ops import MlxOps

OPS = MlxOps()
DTYPES = {"float32": mx.float32, "float64": mx.float64}


def _dtype(dtype) -> mx.Dtype:
    if isinstance(dtype, mx.Dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


class _Leaves(nn.Module):
    def __init__(self, arrays: Mapping[str, np.ndarray], dtype: mx.Dtype):
        super().__init__()
        for name, value in arrays.items():
            setattr(self, name, mx.array(np.asarray(value, dtype=np.float64 if dtype == mx.float64 else np.float32), dtype=dtype))


class TransformerModel(_model.SpecModel):
    """Embedding, L blocks (attention + ``cfg.kind``'s feed-forward), LayerNorm and head; the parameter
    paths are the spec's names (``layers.0.attn.query.weight``, ...)."""

    def __init__(self, cfg: ModelConfig, params: Mapping[str, np.ndarray], dtype="float32"):
        super().__init__()
        self.cfg = cfg
        tree = common.param_tree(params, lambda leaves: _Leaves(leaves, _dtype(dtype)), nn.Module)
        for name, child in tree.children().items():  # the layers as a list: MLX's trees index them by integer
            setattr(self, name, [child[str(i)] for i in range(cfg.num_layers)] if name == "layers" else child)


def build_model(cfg: ModelConfig, params: dict[str, np.ndarray], dtype="float32"):
    """The network of ``cfg``: a ``TransformerModel`` for ``backbone="transformer"``, else ``model.build_model``'s."""
    if cfg.backbone != "transformer":
        return _model.build_model(cfg, params, dtype)
    check_params(cfg, {name: np.shape(value) for name, value in params.items()})
    _dtype(dtype)
    return TransformerModel(cfg, {name: params[name] for name in param_shapes(cfg)}, dtype)


def forward_with_probes(model: TransformerModel, x) -> tuple[np.ndarray, list[np.ndarray], dict[str, list[np.ndarray]]]:
    """Evaluation-mode NumPy ``(logits, per-layer masks, record)``: ``record["attention"]`` (B, heads, T, T)
    and ``record["post_attention"]`` (B*T, d) per layer (``spec.transformer.forward_with_probes``)."""
    logits, routings, record = T.forward_with_probes(OPS, model.named_parameters(), _model.to_tensor(model, x), model.cfg)
    out = {key: [np.array(v) for v in values] for key, values in record.items()}
    return np.array(logits), [np.array(r.mask) for r in routings], out
