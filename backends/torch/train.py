"""Training and evaluation in PyTorch: AdamW (``torch.optim.AdamW``, tested equal to ``spec.optim``'s
update in ``tests/test_spec_optim.py``), the learning rate handed in each step from ``spec.optim.learning_rate``."""

from __future__ import annotations

import platform

import numpy as np
import torch

from backends.spec import forward as F
from backends.spec.config import TrainConfig
from backends.spec.init import param_shapes
from backends.spec.losses import evaluation_sums, model_loss
from backends.spec.optim import check_optimizer_state

from .layers import OPS
from .model import _Network, default_device, labels_tensor, noise_tensors, to_tensor


def _loss(model: _Network, x, y, noises):
    """The training loss: cross-entropy + ``balance_weight`` x balancing loss (``spec.losses.model_loss``:
    a language model's head chunk by chunk, with its own gradient)."""
    return model_loss(OPS, dict(model.named_parameters()), x, y, model.cfg, noises)


class Trainer:
    """One AdamW step at a time; ``compile=True`` wraps the loss in ``torch.compile``."""

    def __init__(self, model: _Network, cfg: TrainConfig, compile: bool = False):
        self.model = model
        self.cfg = cfg
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay, fused=True
        )
        self._loss = torch.compile(_loss, dynamic=False) if compile else _loss

    def step(self, x, y, noises, lr: float) -> torch.Tensor:
        """One optimiser step on batch (x, y) with per-layer gate noise; returns the loss (no host sync)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        model = self.model
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(model, to_tensor(model, x), labels_tensor(model, y), noise_tensors(model, noises))
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """AdamW's state as NumPy under ``spec.optim.optimizer_state_names`` (zeros before the first step)."""
        out, steps = {}, 0
        for name, p in self.model.named_parameters():
            state = self.optimizer.state.get(p)
            if state:
                steps = int(state["step"])
            for moment, slot in (("m", "exp_avg"), ("v", "exp_avg_sq")):
                out[f"{moment}.{name}"] = (state[slot] if state else torch.zeros_like(p)).detach().cpu().numpy().copy()
        return {"steps": np.array(steps, dtype=np.int64), **out}

    def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        """Continue from ``optimizer_state()``'s arrays (through ``load_state_dict``, which moves them to
        each parameter's device and dtype)."""
        check_optimizer_state(state, param_shapes(self.model.cfg))
        saved, steps = self.optimizer.state_dict(), torch.tensor(float(state["steps"]))
        saved["state"] = {
            i: {"step": steps.clone(), "exp_avg": torch.from_numpy(state[f"m.{name}"]), "exp_avg_sq": torch.from_numpy(state[f"v.{name}"])}
            for i, (name, _) in enumerate(self.model.named_parameters())
        }
        self.optimizer.load_state_dict(saved)


def to_float(value) -> float:
    return float(value)


def forward(model: _Network, x, noises=None) -> tuple[np.ndarray, list[np.ndarray]]:
    """NumPy logits and per-layer selected masks."""
    with torch.no_grad():
        logits, routings = model.forward_with_routing(to_tensor(model, x), noise_tensors(model, noises))
    return logits.cpu().numpy(), [r.mask.cpu().numpy() for r in routings]


def gradients(model: _Network, x, y, noises=None) -> tuple[float, dict[str, np.ndarray]]:
    """The training loss (mean cross-entropy, + ``balance_weight`` x the balancing loss when > 0) and its
    gradient with respect to every parameter (spec names)."""
    model.zero_grad(set_to_none=True)
    loss = _loss(model, to_tensor(model, x), labels_tensor(model, y), noise_tensors(model, noises))
    loss.backward()
    grads = {
        name: (torch.zeros_like(p) if p.grad is None else p.grad).detach().cpu().numpy().copy() for name, p in model.named_parameters()
    }
    model.zero_grad(set_to_none=True)
    return float(loss.detach()), grads


def evaluate_batch(model: _Network, x, y) -> tuple[float, float, list[np.ndarray]]:
    """Summed cross-entropy (no balancing term) and correct predictions over the batch's targets, and
    per-layer selection counts (per expert; MoUE: per window slot, ``spec.moue.pool_usage`` maps them).
    The head chunk by chunk (``spec.losses.evaluation_sums``): no tokens x vocabulary logits."""
    with torch.no_grad():
        params = dict(model.named_parameters())
        loss_sum, correct, routings = evaluation_sums(OPS, params, to_tensor(model, x), labels_tensor(model, y), model.cfg)
        counts = [r.mask.sum(dim=0) for r in routings]
        return float(loss_sum), float(correct), [c.cpu().numpy() for c in counts]


HEAD_GRADIENT_NAMES = ("h", "head.weight", "head.bias")


def head_gradients(h, weight, bias, labels, dtype: str = "float32") -> tuple[float, dict[str, np.ndarray]]:
    """The chunked head's mean cross-entropy (``spec.forward.linear_cross_entropy``) on NumPy states ``h``
    (N, d) and its gradients w.r.t. ``h``, ``head.weight`` and ``head.bias`` through this framework's
    autodiff (the parity matrix's head case)."""
    dt = {"float32": torch.float32, "float64": torch.float64}[dtype]
    leaves = [torch.tensor(np.asarray(a), dtype=dt, requires_grad=True) for a in (h, weight, bias)]
    loss = F.linear_cross_entropy(OPS, *leaves, torch.as_tensor(np.asarray(labels), dtype=torch.int64))
    grads = torch.autograd.grad(loss, leaves)
    return float(loss.detach()), {k: g.numpy().copy() for k, g in zip(HEAD_GRADIENT_NAMES, grads)}


def runtime_info() -> dict:
    """Framework version and device of this backend."""
    info = {
        "framework": "torch",
        "torch": torch.__version__,
        "device": default_device().type,
        "device_name": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info.update(cuda=torch.version.cuda, cuda_device=torch.cuda.get_device_name(0))
    return info
