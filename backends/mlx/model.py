"""MLX networks of the spec (Section 3.4): DynaMoE, MoUE and the MLP baseline, built from spec arrays."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from backends import common
from backends.spec import forward as F
from backends.spec.config import ModelConfig
from backends.spec.init import check_params, param_shapes

from .layers import OPS, ParamGroup, dtype_name, stack_modules, to_mlx

SAFETENSORS = ".safetensors"


class SpecModel(nn.Module):
    """What every network of the spec shares: ``cfg``, parameters under the spec's names, and its forward
    (``spec.forward.model_forward``, ``model_hidden``) over them."""

    cfg: ModelConfig

    @property
    def dtype(self) -> mx.Dtype:
        return self.norm.gamma.dtype

    def named_parameters(self) -> dict[str, mx.array]:
        """Every parameter under its spec name (``layers.0.gate.weight``, ...)."""
        return dict(tree_flatten(self.parameters()))

    def forward_with_routing(self, x, noises=None):
        """``(logits, routings)`` via ``spec.forward.model_forward``."""
        return F.model_forward(OPS, self.named_parameters(), x, self.cfg, noises)

    def hidden(self, x, noises=None):
        """``(LayerNorm(h_L) (N, d), routings)``: the normalised states the head reads (``lm``: N = B*T)."""
        return F.model_hidden(OPS, self.named_parameters(), x, self.cfg, noises)

    def __call__(self, x, noises=None):
        return self.forward_with_routing(x, noises)[0]


class _Network(SpecModel):
    """Input projection or embedding, the kind's stack (``layers.<i>``: ``DynaMoE`` or ``FeedForward``
    modules, MoUE's ``pool`` and local experts; ``norm``: the final LayerNorm; ``layers.stack_modules``,
    the modules ``DynaMoEStack`` and ``MoUEStack`` hold) and the head; parameter paths are the spec's names."""

    def __init__(self, cfg: ModelConfig, params: dict[str, np.ndarray], dtype="float32"):
        super().__init__()
        self.cfg = cfg
        group = common.group_names(params)
        if cfg.task == "lm":
            self.embed = ParamGroup(group["embed"], dtype)
        else:
            self.input = ParamGroup(group["input"], dtype)
        stack = {name: params[name] for name in common.stack_shapes(cfg)}
        for name, module in stack_modules(cfg, stack, dtype).items():
            setattr(self, name, module)
        self.head = ParamGroup(group["head"], dtype)


class DynaMoEModel(_Network):
    """DynaMoE network: L residual ``DynaMoE`` layers with E_l experts from the schedule."""


class MoUEModel(_Network):
    """MoUE network (``spec.moue``): ``pool`` holds the universal experts, router and trajectory
    embedding; ``layers.<i>`` hold each layer's local experts (empty without them)."""


class MLPModel(_Network):
    """The dense MLP baseline: one ``FeedForward`` block per layer."""


def build_model(cfg: ModelConfig, params: dict[str, np.ndarray], dtype="float32") -> _Network:
    """The network of ``cfg`` holding ``params`` (spec names and shapes; checked)."""
    check_params(cfg, {name: np.shape(value) for name, value in params.items()})
    dtype_name(dtype)
    cls = {"dynamoe": DynaMoEModel, "moue": MoUEModel, "mlp": MLPModel}[cfg.kind]
    return cls(cfg, {name: params[name] for name in param_shapes(cfg)}, dtype)


def export_params(model: _Network) -> dict[str, np.ndarray]:
    """The model's parameters as NumPy arrays under the spec's names (in the model's dtype, spec order)."""
    named = model.named_parameters()
    return {name: np.array(named[name]) for name in param_shapes(model.cfg)}


def save_weights(model: _Network, path) -> None:
    """Write the parameters to ``path`` under the spec's names: ``.npz`` (``common.write_weights``, read by
    every backend), or MLX's ``.safetensors`` for float32."""
    if Path(path).suffix != SAFETENSORS:
        return common.write_weights(export_params(model), path)
    if model.dtype == mx.float64:
        raise ValueError("MLX's safetensors writer has no float64: save a float64 model as .npz")
    model.save_weights(str(path))


def load_weights(model: _Network, path) -> _Network:
    """Load a weights file (``.npz`` of any backend, or ``.safetensors``) into ``model`` (names and shapes
    checked; the model's dtype kept)."""
    if Path(path).suffix == SAFETENSORS:
        loaded = mx.load(str(path))
        check_params(model.cfg, {name: value.shape for name, value in loaded.items()})
        weights = [(name, value.astype(model.dtype)) for name, value in loaded.items()]
    else:
        weights = [(name, to_mlx(value, model.dtype)) for name, value in common.read_weights(model.cfg, path).items()]
    model.load_weights(weights, strict=True)
    mx.eval(model.parameters())
    return model


def to_tensor(model: _Network, x) -> mx.array:
    """Inputs as MLX arrays: token ids as int32, features in the model's dtype."""
    if model.cfg.task == "lm":
        return mx.array(np.asarray(x, dtype=np.int32))
    return to_mlx(x, model.dtype)


def noise_tensors(model: _Network, noises) -> list[mx.array] | None:
    return None if noises is None else [to_mlx(n, model.dtype) for n in noises]


def labels_tensor(model: _Network, y) -> mx.array:
    return mx.array(np.asarray(y, dtype=np.int32))
