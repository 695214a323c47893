"""Keras layers of one DynaMoE layer and one feed-forward block (parameter containers over the spec)."""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np

from backends import common
from backends.spec import forward as F
from backends.spec.config import RouterConfig

from .configs import router_config, to_dict
from .ops import KerasOps

OPS = KerasOps()
DTYPES = ("float32", "float64")


def float_dtype(dtype) -> str:
    """``"float32"`` or ``"float64"``; asking for float64 on JAX switches on ``jax_enable_x64``.

    Keras has no setting of its own for 64-bit floats, and JAX silently makes float32 arrays of float64
    requests until ``jax_enable_x64`` is set (process-wide; float32 models are unaffected, their dtypes
    are explicit). This is the only JAX call in the model code.
    """
    name = getattr(dtype, "name", dtype)
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if name == "float64" and keras.backend.backend() == "jax":
        import jax

        if not jax.config.jax_enable_x64:
            jax.config.update("jax_enable_x64", True)
    return name


class ArrayInitializer(keras.initializers.Initializer):
    """Initialises a weight with a given NumPy array, rounded to the weight's dtype by NumPy (no device
    computation: Keras's random initialisers compile one kernel per shape on JAX, seconds per model)."""

    def __init__(self, value):
        self.value = np.asarray(value)

    def __call__(self, shape, dtype=None):
        if tuple(shape) != self.value.shape:
            raise ValueError(f"initial array of shape {self.value.shape} for a weight of shape {tuple(shape)}")
        return np.array(self.value, dtype=keras.backend.standardize_dtype(dtype))


def keras_name(spec_name: str) -> str:
    """A weight's Keras name: the spec's name with ``_`` for ``.`` (PyTorch refuses dots in parameter
    names, and Keras on PyTorch registers every variable under its path); the spec's names have no ``_``."""
    return spec_name.replace(".", "_")


def spec_name(keras_name: str) -> str:
    return keras_name.replace("_", ".")


class _SpecLayer(keras.layers.Layer):
    """A layer holding given spec arrays as weights named as in the spec (Keras names ``experts_w1``, ...).

    ``NAMES`` are the spec's names inside the layer, in weight order; ``SHORT`` maps the short names of
    ``spec.forward`` (``gate``, ``w1``, ...) to them. The arrays are kept until ``build`` (on the first
    call, or inside the network's ``build``), which makes the weights from them.
    """

    NAMES: tuple[str, ...] = ()
    SHORT: dict[str, str] = {}
    LEADING: tuple[str, ...] = ()  # constructor arguments before ``params`` (kept in ``get_config``)
    SIZES: tuple[str, ...] = ()  # ``get_config``'s sizes, from which ``shapes`` gives the weights' shapes

    def __init__(self, params: Mapping[str, np.ndarray], dtype="float32", **kwargs):
        super().__init__(dtype=dtype, **kwargs)
        self._initial = common.layer_arrays(params, self.NAMES, type(self).__name__)

    @classmethod
    def shapes(cls, **sizes) -> dict[str, tuple[int, ...]]:
        """The weights' shapes from ``get_config``'s sizes."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict):
        """A layer of ``get_config``'s sizes holding zeros (``set_arrays`` puts arrays in)."""
        config = dict(config)
        sizes = {name: config.pop(name) for name in cls.SIZES}
        zeros = {name: np.zeros(shape) for name, shape in cls.shapes(**sizes).items()}
        return cls(*[config.pop(name) for name in cls.LEADING], zeros, **config)

    def build(self, input_shape=None):
        dtype = float_dtype(self.variable_dtype)
        for name, value in self._initial.items():
            self.add_weight(shape=np.shape(value), initializer=ArrayInitializer(value), name=keras_name(name), dtype=dtype)
        self._initial = None

    def spec_variables(self) -> dict:
        """``{spec name inside the layer: keras.Variable}``, e.g. ``{"experts.w1": ...}``."""
        if not self.built:
            self.build()
        return {spec_name(v.name): v for v in self.weights}

    def set_arrays(self, arrays: dict) -> None:
        """Assign NumPy arrays (under spec or short names), rounded to the weights' dtype by NumPy."""
        variables = self.spec_variables()
        for key, value in arrays.items():
            variable = variables[self.SHORT.get(key, key)]
            value = np.asarray(value, dtype=variable.dtype)
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(f"{self.name}: {variable.name!r} has shape {tuple(variable.shape)}, got {value.shape}")
            variable.assign(value)

    def values(self) -> dict:
        """The weights under the short names (inside ``stateless_call``, the values it was handed)."""
        variables = self.spec_variables()
        return {short: variables[name].value for short, name in self.SHORT.items()}

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({name: getattr(self, name) for name in self.SIZES})
        return config

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="dynamoe")
class DynaMoELayer(_SpecLayer):
    """A DynaMoE layer (Eq. 1, 4-7): ``y = sum_{i in S(h)} w_i E_i(h)`` over dynamically selected experts.

    ``router``: a ``RouterConfig`` or its fields as a dict. ``params``: NumPy arrays under the layer's
    spec names (``common.DYNAMOE_LAYER_NAMES``): ``gate.weight`` (d, E) (Eq. 1, no bias), ``experts.w1``
    (E, d, d_h), ``experts.b1`` (E, d_h), ``experts.w2`` (E, d_h, d), ``experts.b2`` (E, d) (e.g.
    ``common.under(spec.init_params(cfg), "layers.0.")``); ``set_arrays`` replaces them. ``call(h,
    noise=None)`` takes tokens (N, d) and returns y (N, d); ``noise`` (N, E) is the training gate noise of
    Eq. 7 (``spec.rng.gate_noise``), ``None`` in evaluation. ``forward_with_routing`` returns ``(y,
    spec.forward.Routing)`` (gate probabilities, selected mask, combine weights). ``get_config`` stores
    the router and the sizes ``num_experts`` E, ``hidden_dim`` d, ``expert_hidden`` d_h.
    """

    NAMES = common.DYNAMOE_LAYER_NAMES
    SHORT = {"gate": "gate.weight", "w1": "experts.w1", "b1": "experts.b1", "w2": "experts.w2", "b2": "experts.b2"}
    LEADING = ("router",)
    SIZES = ("num_experts", "hidden_dim", "expert_hidden")

    def __init__(self, router: RouterConfig | dict, params: Mapping[str, np.ndarray], dtype="float32", **kwargs):
        super().__init__(params, dtype, **kwargs)
        self.router = router_config(router)
        self.num_experts, self.hidden_dim, self.expert_hidden = (int(n) for n in np.shape(self._initial["experts.w1"]))

    @classmethod
    def shapes(cls, num_experts: int, hidden_dim: int, expert_hidden: int) -> dict[str, tuple[int, ...]]:
        e, d, dh = num_experts, hidden_dim, expert_hidden
        shapes = ((d, e), (e, d, dh), (e, dh), (e, dh, d), (e, d))
        return dict(zip(cls.NAMES, shapes))

    def forward_with_routing(self, h, noise=None):
        """``(y, Routing)`` of ``spec.forward.dynamoe_layer`` (gate Eq. 1, selection Eq. 4-5, weights Eq. 6)."""
        return F.dynamoe_layer(OPS, self.values(), h, noise, self.router)

    def call(self, h, noise=None):
        return self.forward_with_routing(h, noise)[0]

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(router=to_dict(self.router))
        return config


@keras.saving.register_keras_serializable(package="dynamoe")
class FeedForwardLayer(_SpecLayer):
    """The MLP baseline's block: ``relu(h W1 + b1) W2 + b2`` (one per layer, replacing the MoE).

    ``params``: ``ffn.w1`` (d, h), ``ffn.b1`` (h,), ``ffn.w2`` (h, d), ``ffn.b2`` (d,) as NumPy arrays;
    ``get_config`` stores the sizes ``hidden_dim`` d and ``mlp_hidden`` h.
    """

    NAMES = common.FEED_FORWARD_NAMES
    SHORT = {"w1": "ffn.w1", "b1": "ffn.b1", "w2": "ffn.w2", "b2": "ffn.b2"}
    SIZES = ("hidden_dim", "mlp_hidden")

    def __init__(self, params: Mapping[str, np.ndarray], dtype="float32", **kwargs):
        super().__init__(params, dtype, **kwargs)
        self.hidden_dim, self.mlp_hidden = (int(n) for n in np.shape(self._initial["ffn.w1"]))

    @classmethod
    def shapes(cls, hidden_dim: int, mlp_hidden: int) -> dict[str, tuple[int, ...]]:
        d, h = hidden_dim, mlp_hidden
        return dict(zip(cls.NAMES, ((d, h), (h,), (h, d), (d,))))

    def call(self, h):
        p = self.values()
        return F.feed_forward(OPS, h, p["w1"], p["b1"], p["w2"], p["b2"])
