"""The Transformer backbone in Keras (``spec.transformer``): a network whose weights are all its own,
under the spec's names, evaluated by the spec's math with ``KerasOps`` (Keras on JAX or on PyTorch);
``build_model`` builds it for ``backbone="transformer"`` and hands every other config to ``model.build_model``."""

from __future__ import annotations

import keras
import numpy as np

from backends.spec import transformer as T
from backends.spec.config import ModelConfig
from backends.spec.init import check_params

from . import model as _model
from .layers import OPS, float_dtype


@keras.saving.register_keras_serializable(package="dynamoe")
class TransformerModel(_model._Network):
    """Embedding, L blocks (attention + ``cfg.kind``'s feed-forward), LayerNorm and head: no blocks of
    its own (like ``MoUEModel``), every weight the network's, named as in the spec."""

    def _layer(self, params: dict, i: int):
        return None


def build_model(cfg: ModelConfig, params: dict[str, np.ndarray], dtype="float32"):
    """The network of ``cfg``: a ``TransformerModel`` for ``backbone="transformer"``, else ``model.build_model``'s."""
    if cfg.backbone != "transformer":
        return _model.build_model(cfg, params, dtype)
    check_params(cfg, {name: np.shape(value) for name, value in params.items()})
    return TransformerModel(cfg, params, dtype=float_dtype(dtype))


def forward_with_probes(model: TransformerModel, x) -> tuple[np.ndarray, list[np.ndarray], dict[str, list[np.ndarray]]]:
    """Evaluation-mode NumPy ``(logits, per-layer masks, record)``: ``record["attention"]`` (B, heads, T, T)
    and ``record["post_attention"]`` (B*T, d) per layer (``spec.transformer.forward_with_probes``)."""
    numpy = keras.ops.convert_to_numpy
    logits, routings, record = T.forward_with_probes(OPS, model.params(), _model.to_tensor(model, x), model.cfg)
    out = {key: [np.asarray(numpy(v)) for v in values] for key, values in record.items()}
    return np.asarray(numpy(logits)), [np.asarray(numpy(r.mask)) for r in routings], out
