"""Keras networks of the spec (Section 3.4): DynaMoE, MoUE and the MLP baseline, built from spec arrays."""

from __future__ import annotations

import keras
import numpy as np

from backends import common
from backends.spec import forward as F
from backends.spec.config import ModelConfig
from backends.spec.init import check_params, param_shapes

from .configs import model_config, to_dict
from .layers import OPS, ArrayInitializer, DynaMoEStack, MoUEStack, _Stack, float_dtype, keras_name, spec_name


class SpecModel(keras.Model):
    """What every network of the spec shares: ``cfg``, its weights under the spec's names
    (``spec_variables``, each subclass's own), and its forward (``spec.forward.model_forward``,
    ``model_hidden``) over their values; saved and loaded with its ``cfg``."""

    cfg: ModelConfig

    def spec_variables(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict):
        # ``keras.saving.load_model`` assigns every weight right after: zeros from NumPy instead of Keras's
        # random initialisers, which compile a kernel per shape on JAX.
        config = dict(config)
        cfg = model_config(config.pop("cfg"))
        return cls(cfg, {name: np.zeros(shape) for name, shape in param_shapes(cfg).items()}, **config)

    def set_params(self, params: dict) -> None:
        """Assign the spec's NumPy arrays (all of them, spec names), rounded to the model's dtype by NumPy."""
        for name, variable in self.spec_variables().items():
            variable.assign(np.asarray(params[name], dtype=variable.dtype))

    def params(self) -> dict:
        """``{spec name: current value}`` (inside ``stateless_call``, the values it was handed)."""
        return {name: v.value for name, v in self.spec_variables().items()}

    def forward_with_routing(self, x, noises=None):
        """``(logits, routings)`` via ``spec.forward.model_forward``."""
        return F.model_forward(OPS, self.params(), x, self.cfg, noises)

    def hidden(self, x, noises=None):
        """``(LayerNorm(h_L) (N, d), routings)``: the normalised states the head reads (``lm``: N = B*T)."""
        return F.model_hidden(OPS, self.params(), x, self.cfg, noises)

    def call(self, x, noises=None, with_routings=False):
        """Logits, or ``(logits, routings)`` with ``with_routings`` (what the training loss needs)."""
        logits, routings = self.forward_with_routing(x, noises)
        return (logits, routings) if with_routings else logits

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(cfg=to_dict(self.cfg), dtype=self.dtype_policy.name)
        return config


class _Network(SpecModel):
    """Input projection or embedding, the kind's stack, and the head, evaluated by ``spec.forward``.

    ``cfg`` is a ``ModelConfig`` or its ``configs.to_dict`` form (what ``get_config`` stores). The
    network's own weights are named as in the spec (``input.weight``, ``head.bias``, ...); ``stack`` is the
    kind's ``DynaMoEStack``, ``MoUEStack`` (or the MLP's stack of ``FeedForward`` blocks), holding
    ``layers.<i>.*``, ``pool.*`` and ``norm.*``. The network is built at once from ``params`` (the spec's
    NumPy arrays, e.g. ``spec.init_params``). ``call(x, noises=None)`` returns the logits.
    """

    def __init__(self, cfg: ModelConfig | dict, params: dict[str, np.ndarray], dtype="float32", **kwargs):
        super().__init__(dtype=dtype, **kwargs)
        self.cfg = model_config(cfg)
        stack_names = common.stack_shapes(self.cfg)
        stack_cls = {"dynamoe": DynaMoEStack, "moue": MoUEStack}.get(self.cfg.kind, _Stack)
        self.stack = stack_cls.from_arrays(self.cfg, {name: params[name] for name in stack_names}, float_dtype(dtype), name="stack")
        self._initial = {name: value for name, value in params.items() if name not in stack_names}
        self.build(self.input_shape_of(self.cfg))
        self._initial = None

    def build_from_config(self, config):
        pass  # built in ``__init__`` (``from_config`` hands it zeros)

    @staticmethod
    def input_shape_of(cfg: ModelConfig) -> tuple:
        return (None, None) if cfg.task == "lm" else (None, cfg.input_dim)

    def build(self, input_shape=None):
        dtype = float_dtype(self.variable_dtype)
        for name, value in self._initial.items():
            self.add_weight(shape=np.shape(value), initializer=ArrayInitializer(value), name=keras_name(name), dtype=dtype)

    def spec_variables(self) -> dict:
        """``{spec name: keras.Variable}`` in ``spec.init.param_shapes`` order."""
        own = {spec_name(v.name): v for v in self._trainable_variables}  # input/embed and head
        own.update(self.stack.spec_variables())
        return {name: own[name] for name in param_shapes(self.cfg)}


@keras.saving.register_keras_serializable(package="dynamoe")
class DynaMoEModel(_Network):
    """DynaMoE network: a ``DynaMoEStack`` of L residual ``DynaMoE`` layers with E_l experts from the schedule."""


@keras.saving.register_keras_serializable(package="dynamoe")
class MoUEModel(_Network):
    """MoUE network (``spec.moue``): a ``MoUEStack`` holding the universal pool (``pool.*``) and any local
    experts (``layers.<i>.*``) under the spec's names."""


@keras.saving.register_keras_serializable(package="dynamoe")
class MLPModel(_Network):
    """The dense MLP baseline: one ``FeedForward`` block per layer."""


def build_model(cfg: ModelConfig, params: dict[str, np.ndarray], dtype="float32") -> _Network:
    """The network of ``cfg`` holding ``params`` (spec names and shapes; checked)."""
    check_params(cfg, {name: np.shape(value) for name, value in params.items()})
    cls = {"dynamoe": DynaMoEModel, "moue": MoUEModel, "mlp": MLPModel}[cfg.kind]
    return cls(cfg, params, dtype=float_dtype(dtype))


def export_params(model: _Network) -> dict[str, np.ndarray]:
    """The model's parameters as NumPy arrays under the spec's names (in the model's dtype)."""
    return {name: np.array(keras.ops.convert_to_numpy(v.value)) for name, v in model.spec_variables().items()}


def save_weights(model: _Network, path) -> None:
    """Write the parameters to the ``.npz`` file ``path`` under the spec's names (``common.write_weights``)."""
    common.write_weights(export_params(model), path)


def load_weights(model: _Network, path) -> _Network:
    """Load a weights file of any backend into ``model`` (names and shapes checked; the model's dtype kept)."""
    model.set_params(common.read_weights(model.cfg, path))
    return model


def to_tensor(model: _Network, x):
    """Inputs as tensors: token ids as int32, features in the model's dtype (rounded by NumPy)."""
    if model.cfg.task == "lm":
        return keras.ops.convert_to_tensor(np.asarray(x, dtype=np.int32))
    return keras.ops.convert_to_tensor(np.asarray(x, dtype=model.compute_dtype))


def noise_tensors(model: _Network, noises):
    if noises is None:
        return None
    return [keras.ops.convert_to_tensor(np.asarray(n, dtype=model.compute_dtype)) for n in noises]


def labels_tensor(model: _Network, y):
    return keras.ops.convert_to_tensor(np.asarray(y, dtype=np.int32))
