"""PyTorch networks of the spec (Section 3.4): DynaMoE, MoUE and the MLP baseline, built from spec arrays
out of the modules of ``layers`` (``DynaMoE``, ``FeedForward``, the stacks' modules)."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from backends import common
from backends.spec import forward as F
from backends.spec.config import ModelConfig
from backends.spec.init import check_params, param_shapes

from .layers import OPS, ParamGroup, stack_modules, torch_dtype

DEVICE_ENV = "DYNAMOE_TORCH_DEVICE"  # e.g. "cpu", "cuda:1"; unset: CUDA when there is one


def default_device() -> torch.device:
    """Where models are built unless told: ``$DYNAMOE_TORCH_DEVICE``, else the first GPU, else the CPU."""
    name = os.environ.get(DEVICE_ENV) or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"{DEVICE_ENV}={name!r} is not a torch device ({exc}): use e.g. cpu or cuda:0") from None


class SpecModel(nn.Module):
    """What every network of the spec shares: ``cfg``, parameters under the spec's names, and its forward
    (``spec.forward.model_forward``, ``model_hidden``) over them."""

    cfg: ModelConfig

    @property
    def dtype(self) -> torch.dtype:
        return self.norm.gamma.dtype

    @property
    def device(self) -> torch.device:
        return self.norm.gamma.device

    def forward_with_routing(self, x, noises=None):
        """``(logits, routings)`` via ``spec.forward.model_forward``."""
        return F.model_forward(OPS, dict(self.named_parameters()), x, self.cfg, noises)

    def hidden(self, x, noises=None):
        """``(LayerNorm(h_L) (N, d), routings)``: the normalised states the head reads (``lm``: N = B*T)."""
        return F.model_hidden(OPS, dict(self.named_parameters()), x, self.cfg, noises)

    def forward(self, x, noises=None):
        return self.forward_with_routing(x, noises)[0]


class _Network(SpecModel):
    """Input projection or embedding, the kind's stack (``layers.<i>``: ``DynaMoE`` or ``FeedForward``
    modules, MoUE's ``pool`` and local experts; ``norm``: the final LayerNorm; ``layers.stack_modules``,
    the modules ``DynaMoEStack`` and ``MoUEStack`` hold) and the head; names follow the spec."""

    def __init__(self, cfg: ModelConfig, params: dict[str, np.ndarray], dtype="float32", device=None):
        super().__init__()
        self.cfg = cfg
        group = common.group_names(params)
        if cfg.task == "lm":
            self.embed = ParamGroup(group["embed"], dtype, device)
        else:
            self.input = ParamGroup(group["input"], dtype, device)
        stack = {name: params[name] for name in common.stack_shapes(cfg)}
        for name, module in stack_modules(cfg, stack, dtype, device).items():
            setattr(self, name, module)
        self.head = ParamGroup(group["head"], dtype, device)


class DynaMoEModel(_Network):
    """DynaMoE network: L residual ``DynaMoE`` layers with E_l experts from the schedule."""


class MoUEModel(_Network):
    """MoUE network (``spec.moue``): ``pool`` holds the universal experts, router and trajectory
    embedding; ``layers.<i>`` hold each layer's local experts (empty without them)."""


class MLPModel(_Network):
    """The dense MLP baseline: one ``FeedForward`` block per layer."""


def build_model(cfg: ModelConfig, params: dict[str, np.ndarray], dtype="float32", device=None) -> _Network:
    """The network of ``cfg`` holding ``params`` (spec names and shapes; checked)."""
    check_params(cfg, {name: np.shape(value) for name, value in params.items()})
    expected = param_shapes(cfg)
    cls = {"dynamoe": DynaMoEModel, "moue": MoUEModel, "mlp": MLPModel}[cfg.kind]
    torch_dtype(dtype)
    return cls(cfg, {name: params[name] for name in expected}, dtype, device or default_device())


def export_params(model: _Network) -> dict[str, np.ndarray]:
    """The model's parameters as NumPy arrays under the spec's names (in the model's dtype)."""
    return {name: p.detach().cpu().numpy().copy() for name, p in model.named_parameters()}


def save_weights(model: _Network, path) -> None:
    """Write the parameters to the ``.npz`` file ``path`` under the spec's names (``common.write_weights``)."""
    common.write_weights(export_params(model), path)


def load_weights(model: _Network, path) -> _Network:
    """Load a weights file of any backend into ``model`` (names and shapes checked; the model's dtype kept)."""
    params = common.read_weights(model.cfg, path)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.as_tensor(params[name], dtype=p.dtype))
    return model


def to_tensor(model: _Network, x) -> torch.Tensor:
    """Inputs as tensors on the model's device: token ids as int64, features in the model's dtype."""
    if model.cfg.task == "lm":
        return torch.as_tensor(np.asarray(x), dtype=torch.int64, device=model.device)
    return torch.as_tensor(np.asarray(x), dtype=model.dtype, device=model.device)


def noise_tensors(model: _Network, noises):
    if noises is None:
        return None
    return [torch.as_tensor(np.asarray(n), dtype=model.dtype, device=model.device) for n in noises]


def labels_tensor(model: _Network, y) -> torch.Tensor:
    return torch.as_tensor(np.asarray(y), dtype=torch.int64, device=model.device)
