"""DynaMoE in Keras 3: thin layers over ``backends.spec`` (names: ``backends.api``), one code path in
``keras.ops`` for Keras's JAX and PyTorch backends (``NAME`` is ``keras-jax`` or ``keras-torch``).

Keras reads ``KERAS_BACKEND`` once per process, at its first import; ``backends.load("keras-jax")``
sets it. Imported directly with it unset, this package picks ``jax`` (Keras's own default, TensorFlow,
is not a backend of this project).
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402

if keras.backend.backend() not in ("jax", "torch"):
    raise ImportError(f"backends.keras runs Keras on jax or torch, not {keras.backend.backend()!r}: set KERAS_BACKEND=jax or torch")

from .layers import OPS, DynaMoE, DynaMoEStack, FeedForward, MoUEStack, TransformerBlock  # noqa: E402
from .model import (  # noqa: E402
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
from .train import Trainer, evaluate_batch, forward, gradients, runtime_info, to_float  # noqa: E402
from .transformer import build_model  # noqa: E402, F811  (backbone='transformer': spec.transformer; else model.build_model)

NAME = f"keras-{keras.backend.backend()}"

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
