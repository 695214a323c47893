"""The Transformer backbone in Keras (``spec.transformer``): a network whose weights are all its own (no
stack of native layers: attention interleaves with the feed-forward),
under the spec's names, evaluated by the spec's math with ``KerasOps`` (Keras on JAX or on PyTorch);
``build_model`` builds it for ``backbone="transformer"`` and hands every other config to ``model.build_model``."""

from __future__ import annotations

import keras
import numpy as np

from backends.spec import forward as F
from backends.spec import transformer as T
from backends.spec.config import ModelConfig
from backends.spec.init import check_params, param_shapes

from . import model as _model
from .configs import model_config, to_dict
from .layers import OPS, ArrayInitializer, float_dtype, keras_name


@keras.saving.register_keras_serializable(package="dynamoe")
class TransformerModel(keras.Model):
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

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        cfg = model_config(config.pop("cfg"))
        return cls(cfg, {name: np.zeros(shape) for name, shape in param_shapes(cfg).items()}, **config)

    def build_from_config(self, config):
        pass  # built in ``__init__``

    def spec_variables(self) -> dict:
        """``{spec name: keras.Variable}`` in ``spec.init.param_shapes`` order."""
        return dict(self._variables)

    def set_params(self, params: dict) -> None:
        for name, variable in self._variables.items():
            variable.assign(np.asarray(params[name], dtype=variable.dtype))

    def params(self) -> dict:
        """``{spec name: current value}`` (inside ``stateless_call``, the values it was handed)."""
        return {name: v.value for name, v in self._variables.items()}

    def forward_with_routing(self, x, noises=None):
        """``(logits, routings)`` via ``spec.forward.model_forward``."""
        return F.model_forward(OPS, self.params(), x, self.cfg, noises)

    def hidden(self, x, noises=None):
        """``(LayerNorm(h_L) (B*T, d), routings)``: the normalised states the head reads."""
        return F.model_hidden(OPS, self.params(), x, self.cfg, noises)

    def call(self, x, noises=None, with_routings=False):
        logits, routings = self.forward_with_routing(x, noises)
        return (logits, routings) if with_routings else logits

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(cfg=to_dict(self.cfg), dtype=self.dtype_policy.name)
        return config


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
