"""DynaMoE in PyTorch: thin modules over ``backends.spec`` (names: ``backends.api``). The layers a PyTorch
model can hold: ``DynaMoE``, ``FeedForward``, ``DynaMoEStack``, ``MoUEStack``, ``TransformerBlock`` (``layers``)."""

from .layers import OPS, DynaMoE, DynaMoEStack, FeedForward, MoUEStack, TransformerBlock
from .model import (
    DynaMoEModel,
    MLPModel,
    MoUEModel,
    build_model,
    export_params,
    labels_tensor,
    load_weights,
    noise_tensors,
    save_weights,
    to_tensor,
)
from .train import Trainer, evaluate_batch, forward, gradients, runtime_info, to_float
from .transformer import build_model  # noqa: F811  (backbone='transformer': spec.transformer; else model.build_model)

NAME = "torch"

__all__ = [
    "NAME",
    "OPS",
    "DynaMoE",
    "DynaMoEModel",
    "DynaMoEStack",
    "FeedForward",
    "MLPModel",
    "MoUEModel",
    "MoUEStack",
    "Trainer",
    "TransformerBlock",
    "build_model",
    "evaluate_batch",
    "export_params",
    "forward",
    "gradients",
    "labels_tensor",
    "load_weights",
    "noise_tensors",
    "runtime_info",
    "save_weights",
    "to_float",
    "to_tensor",
]
