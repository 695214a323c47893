"""Training and evaluation in MLX: AdamW (``AdamW`` below evaluates ``spec.optim.adamw_step``), the
learning rate handed in each step from ``spec.optim.learning_rate``."""

from __future__ import annotations

import platform
from functools import partial

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten

from backends.spec import forward as F
from backends.spec.config import TrainConfig
from backends.spec.init import param_shapes
from backends.spec.losses import evaluation_sums, model_loss
from backends.spec.optim import adamw_step, bias_corrections, check_optimizer_state

from .head import blas_threads_per_lane
from .layers import OPS
from .model import _Network, labels_tensor, noise_tensors, to_tensor


def _loss(model: _Network, x, y, noises):
    """The training loss: cross-entropy + ``balance_weight`` x balancing loss (``spec.losses.model_loss``:
    a language model's head chunk by chunk, with its own gradient)."""
    return model_loss(OPS, model.named_parameters(), x, y, model.cfg, noises)


class AdamW(optim.Optimizer):
    """``spec.optim.adamw_step`` with ``MlxOps`` on MLX's optimiser machinery (state trees, ``update``).

    ``mlx.optimizers.AdamW(bias_correction=True)`` is the same formula but evaluates ``b2^t`` from ``b2``
    rounded to float32 (0.999 -> 0.99900001), so ``1 - b2^t`` is off by 1.3e-5 and every step by 6e-6
    relative. Here ``lr`` and the corrections ``1 - b^t`` are computed on the host in double precision by
    ``begin_step`` (``spec.optim.bias_corrections``) and held in the state as arrays of the model's dtype:
    inputs of a compiled step, so new values each step cause no recompilation.
    """

    def __init__(self, cfg: TrainConfig, dtype: mx.Dtype = mx.float32):
        super().__init__()
        self.cfg = cfg
        self.dtype = dtype
        self.steps = 0  # host-side count t of the steps begun
        self._set_scalars(cfg.lr, 1.0, 1.0)

    def _set_scalars(self, lr: float, c1: float, c2: float) -> None:
        for key, value in (("learning_rate", lr), ("bias_correction1", c1), ("bias_correction2", c2)):
            self.state[key] = mx.array(value, dtype=self.dtype)

    def begin_step(self, lr: float) -> None:
        """Set the learning rate and the bias corrections of the next step (``t = steps + 1``)."""
        self.steps += 1
        self._set_scalars(lr, *bias_corrections(self.steps, self.cfg))

    def init_single(self, parameter: mx.array, state: dict) -> None:
        state["m"] = mx.zeros_like(parameter)
        state["v"] = mx.zeros_like(parameter)

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        lr, corrections = self.state["learning_rate"], (self.state["bias_correction1"], self.state["bias_correction2"])
        parameter, state["m"], state["v"] = adamw_step(OPS, parameter, gradient, state["m"], state["v"], lr, corrections, self.cfg)
        return parameter


class Trainer:
    """One AdamW step at a time; ``compile=True`` compiles the whole step (loss, gradients, update).

    The compiled step captures the model's and the optimiser's state as implicit inputs and outputs
    (MLX's documented pattern), so it is traced once per input structure and shape; ``traces`` counts
    the traces (eager: one per step).
    """

    def __init__(self, model: _Network, cfg: TrainConfig, compile: bool = False):
        self.model = model
        self.cfg = cfg
        self.optimizer = AdamW(cfg, model.dtype)
        self.optimizer.init(model.trainable_parameters())  # the state's structure is fixed before compiling
        self.traces = 0
        self._state = [model.state, self.optimizer.state]
        self._grad = nn.value_and_grad(model, _loss)
        self._step = partial(mx.compile, inputs=self._state, outputs=self._state)(self._update) if compile else self._update

    def _update(self, x, y, noises):
        self.traces += 1  # Python side effect: runs only while MLX traces a compiled step
        loss, grads = self._grad(self.model, x, y, noises or None)
        self.optimizer.update(self.model, grads)
        return loss

    def step(self, x, y, noises, lr: float) -> mx.array:
        """One optimiser step on batch (x, y) with per-layer gate noise; returns the loss (no host sync).

        The updated state is evaluated (``mx.eval``) so that the lazy graph does not grow across steps.
        """
        model = self.model
        self.optimizer.begin_step(lr)
        loss = self._step(to_tensor(model, x), labels_tensor(model, y), noise_tensors(model, noises) or [])
        with blas_threads_per_lane(model.cfg.task):
            mx.eval(loss, self._state)
        return loss

    def _slots(self) -> dict[str, dict]:
        """``{spec name: the optimiser's state dict of that parameter}`` (``m``, ``v``), found by walking
        the state tree along the parameter's path; assigning into these dicts keeps the compiled step's
        captured state."""
        slots = {}
        for name in param_shapes(self.model.cfg):
            node = self.optimizer.state
            for part in name.split("."):
                node = node[int(part)] if isinstance(node, list) else node[part]
            slots[name] = node
        return slots

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """AdamW's state as NumPy under ``spec.optim.optimizer_state_names``."""
        out = {"steps": np.array(self.optimizer.steps, dtype=np.int64)}
        for name, slot in self._slots().items():
            out[f"m.{name}"], out[f"v.{name}"] = np.array(slot["m"]), np.array(slot["v"])
        return out

    def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        """Continue from ``optimizer_state()``'s arrays (checked against the model's parameters)."""
        check_optimizer_state(state, param_shapes(self.model.cfg))
        self.optimizer.steps = int(state["steps"])
        self.optimizer.state["step"] = mx.array(int(state["steps"]), mx.uint64)
        for name, slot in self._slots().items():
            slot["m"] = mx.array(np.asarray(state[f"m.{name}"]), dtype=self.model.dtype)
            slot["v"] = mx.array(np.asarray(state[f"v.{name}"]), dtype=self.model.dtype)


def to_float(value) -> float:
    return float(value.item()) if isinstance(value, mx.array) else float(value)


def forward(model: _Network, x, noises=None) -> tuple[np.ndarray, list[np.ndarray]]:
    """NumPy logits and per-layer selected masks."""
    logits, routings = model.forward_with_routing(to_tensor(model, x), noise_tensors(model, noises))
    masks = [r.mask for r in routings]
    mx.eval(logits, masks)
    return np.array(logits), [np.array(m) for m in masks]


def gradients(model: _Network, x, y, noises=None) -> tuple[float, dict[str, np.ndarray]]:
    """The training loss (mean cross-entropy, + ``balance_weight`` x the balancing loss when > 0) and its
    gradient with respect to every parameter (spec names, spec order)."""
    loss, grads = nn.value_and_grad(model, _loss)(model, to_tensor(model, x), labels_tensor(model, y), noise_tensors(model, noises))
    flat = dict(tree_flatten(grads))
    mx.eval(loss, flat)
    return float(loss.item()), {name: np.array(flat[name]) for name in param_shapes(model.cfg)}


def evaluate_batch(model: _Network, x, y) -> tuple[float, float, list[np.ndarray]]:
    """Summed cross-entropy (no balancing term) and correct predictions over the batch's targets, and
    per-layer selection counts (per expert; MoUE: per window slot, ``spec.moue.pool_usage`` maps them)."""
    loss_sum, correct, routings = evaluation_sums(OPS, model.named_parameters(), to_tensor(model, x), labels_tensor(model, y), model.cfg)
    counts = [mx.sum(r.mask, axis=0) for r in routings]
    with blas_threads_per_lane(model.cfg.task):
        mx.eval(loss_sum, correct, counts)
    return float(loss_sum.item()), float(correct.item()), [np.array(c) for c in counts]


HEAD_GRADIENT_NAMES = ("h", "head.weight", "head.bias")


def head_gradients(h, weight, bias, labels, dtype: str = "float32") -> tuple[float, dict[str, np.ndarray]]:
    """The chunked head's mean cross-entropy (``spec.forward.linear_cross_entropy``) on NumPy states ``h``
    (N, d) and its gradients w.r.t. ``h``, ``head.weight`` and ``head.bias`` through this framework's
    autodiff (the parity matrix's head case)."""
    dt = {"float32": mx.float32, "float64": mx.float64}[dtype]
    y = mx.array(np.asarray(labels, dtype=np.int32))
    fn = mx.value_and_grad(lambda h, w, b: F.linear_cross_entropy(OPS, h, w, b, y), argnums=(0, 1, 2))
    loss, grads = fn(*(mx.array(np.asarray(a), dtype=dt) for a in (h, weight, bias)))
    mx.eval(loss, grads)
    return float(loss.item()), {k: np.array(g) for k, g in zip(HEAD_GRADIENT_NAMES, grads)}


def runtime_info() -> dict:
    """Framework version and device of this backend."""
    device = mx.default_device()
    return {
        "framework": "mlx",
        "mlx": mx.__version__,
        "device": "gpu" if device.type == mx.gpu else "cpu",
        "device_name": platform.processor() or platform.machine(),
        "metal": bool(mx.metal.is_available()),
        "cuda": bool(hasattr(mx, "cuda") and mx.cuda.is_available()),
    }
