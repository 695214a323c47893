"""The Transformer backbone in Keras (``spec.transformer``): a network whose weights are all its own (no
stack of native layers: attention interleaves with the feed-forward),
under the spec's names, evaluated by the spec's math with ``KerasOps`` (Keras on JAX or on PyTorch);
``build_model`` builds it for ``backbone="transformer"`` and hands every other config to ``model.build_model``."""

from __future__ import annotations

import keras
import numpy as np

from backends.spec import transformer as T
from backends.spec.config import ModelConfig
from backends.spec.init import check_params, param_shapes

from . import model as _model
from .configs import model_config
from .layers import OPS, ArrayInitializer, float_dtype, keras_name


@keras.saving.register_keras_serializable(package="dynamoe")
class TransformerModel(_model.SpecModel):
    """Embedding, L blocks (attention + ``cfg.kind``'s feed-forward), LayerNorm and head: every weight the
    network's own (Keras name: the spec's with ``_`` for ``.``), built at once from the spec's arrays.
    ``cfg`` is a ``ModelConfig`` or its ``configs.to_dict`` form (what ``get_config`` stores)."""

    def __init__(self, cfg: ModelConfig | dict, params: dict[str, np.ndarray], dtype="float32", **kwargs):
        super().__init__(dtype=dtype, **kwargs)
        self.cfg = model_config(cfg)
        self._variables = {
            name: self.add_weight(
                shape=np.shape(params[name]), initializer=ArrayInitializer(params[name]), name=keras_name(name), dtype=float_dtype(dtype)
            )
            for name in param_shapes(self.cfg)
        }
        self.built = True

    def build_from_config(self, config):
        pass  # built in ``__init__``

    def spec_variables(self) -> dict:
        """``{spec name: keras.Variable}`` in ``spec.init.param_shapes`` order."""
        return dict(self._variables)


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
