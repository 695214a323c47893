"""The backend-neutral training and evaluation loops: every random number from ``backends.spec.rng``.

Step ``s`` (0-based, counted over all epochs) uses the batch ``rng.batches(seed, epoch, n, B)``, the
gate noise ``rng.gate_noise(seed, s, layer, ...)`` of every DynaMoE layer and the learning rate
``optim.learning_rate(s, total_steps)``; the backend only evaluates. Two backends given the same seed
therefore see the same batches, noise and learning rates, and a training stopped after an epoch
continues from a ``Checkpoint`` (parameters, optimiser state, history) exactly as if it had not stopped.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

import backends
from backends.spec import rng
from backends.spec.config import ModelConfig, TrainConfig
from backends.spec.init import init_params
from backends.spec.kinds import layer_widths
from backends.spec.optim import learning_rate
from backends.spec.stats import layer_stats


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    test_loss: float
    test_accuracy: float
    perplexity: float
    seconds: float
    layers: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Checkpoint:
    """A training after ``len(history)`` epochs: what ``train(resume=...)`` needs to continue it bit for bit."""

    history: list[EpochResult]
    params: dict[str, np.ndarray]  # spec names, the model's dtype
    optimizer: dict[str, np.ndarray]  # spec.optim.optimizer_state_names

    @property
    def epoch(self) -> int:
        return len(self.history)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """One flat dict of arrays (``numpy.savez``): ``param.<name>``, ``optimizer.<name>``, ``meta`` (JSON)."""
        meta = json.dumps({"history": [h.as_dict() for h in self.history]})
        return {
            "meta": np.array(meta),
            **{f"param.{k}": v for k, v in self.params.items()},
            **{f"optimizer.{k}": v for k, v in self.optimizer.items()},
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Checkpoint:
        meta = json.loads(str(arrays["meta"]))
        part = lambda prefix: {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}  # noqa: E731
        return cls([EpochResult(**h) for h in meta["history"]], part("param."), part("optimizer."))


def tokens_per_sample(cfg: ModelConfig, x: np.ndarray) -> int:
    """Routing tokens a sample contributes: 1 image, or its sequence length in language modelling."""
    return int(x.shape[1]) if cfg.task == "lm" else 1


def step_noises(cfg: ModelConfig, seed: int, step: int, tokens: int) -> list[np.ndarray] | None:
    """Gate noise of every routed layer at ``step`` (Eq. 7), or ``None`` (MLP, or sigma = 0).

    Every router kind gets it, on the gate probabilities of its selection (``spec.routers``: the noise
    decides the baselines' selection, not their weights); MoUE layers get one column per slot (window
    experts, then local ones: ``spec.kinds.layer_widths``).
    """
    sigma = cfg.router.noise_std
    if cfg.kind == "mlp" or sigma == 0:
        return None
    return [rng.gate_noise(seed, step, layer, (tokens, width), sigma) for layer, width in enumerate(layer_widths(cfg))]


def evaluate(backend, model, cfg: ModelConfig, x: np.ndarray, y: np.ndarray, batch_size: int) -> dict:
    """Loss, accuracy, perplexity and per-layer routing statistics over fixed, in-order batches.

    Batch-scope routing makes a token's experts depend on its batch-mates, so evaluation always uses
    the same batches: ``batch_size`` consecutive samples in dataset order.
    """
    loss_sum = correct = 0.0
    counts: list[np.ndarray] | None = None
    for start in range(0, len(x), batch_size):
        b_loss, b_correct, b_counts = backend.evaluate_batch(model, x[start : start + batch_size], y[start : start + batch_size])
        loss_sum += b_loss
        correct += b_correct
        counts = b_counts if counts is None else [a + b for a, b in zip(counts, b_counts)]
    targets = y.size
    tokens = len(x) * tokens_per_sample(cfg, x)
    loss = loss_sum / targets
    return {
        "loss": loss,
        "accuracy": correct / targets,
        "perplexity": math.exp(min(loss, 700.0)),
        "layers": [layer_stats(c, tokens) for c in counts or []],
    }


def train(
    backend_name: str,
    cfg: ModelConfig,
    train_cfg: TrainConfig,
    data,
    seed: int,
    *,
    compile: bool = False,
    dtype: str = "float32",
    on_epoch: Callable[[EpochResult], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    params: dict | None = None,
    resume: Checkpoint | None = None,
    on_checkpoint: Callable[[Checkpoint], None] | None = None,
) -> tuple[list[EpochResult], object]:
    """Train ``cfg`` on ``data`` (``x_train``, ``y_train``, ``x_test``, ``y_test``) with one backend.

    Returns the per-epoch results (those of ``resume`` first) and the trained model.
    ``on_step(step_in_epoch, steps_per_epoch)`` and ``on_epoch(result)`` report progress. ``params``
    (spec names) replaces the spec's initialisation; ``resume`` continues a checkpointed training
    instead; ``on_checkpoint`` is handed one after every epoch but the last.
    """
    backend = backends.load(backend_name)
    if resume is not None and resume.epoch > train_cfg.epochs:
        raise ValueError(f"the checkpoint is after epoch {resume.epoch}, the run has {train_cfg.epochs} epochs")
    start = resume.params if resume is not None else init_params(cfg, seed) if params is None else params
    model = backend.build_model(cfg, start, dtype)
    trainer = backend.Trainer(model, train_cfg, compile=compile)
    if resume is not None:
        trainer.load_optimizer_state(resume.optimizer)
    n = len(data.x_train)
    steps_per_epoch = math.ceil(n / train_cfg.batch_size)
    total = steps_per_epoch * train_cfg.epochs
    per_sample = tokens_per_sample(cfg, data.x_train)
    history: list[EpochResult] = [] if resume is None else list(resume.history)
    step = len(history) * steps_per_epoch
    for epoch in range(len(history), train_cfg.epochs):
        began = time.perf_counter()
        losses = []
        for i, idx in enumerate(rng.batches(seed, epoch, n, train_cfg.batch_size)):
            noises = step_noises(cfg, seed, step, len(idx) * per_sample)
            losses.append(trainer.step(data.x_train[idx], data.y_train[idx], noises, learning_rate(step, total, train_cfg)))
            step += 1
            if on_step:
                on_step(i + 1, steps_per_epoch)
        train_loss = float(np.mean([backend.to_float(v) for v in losses]))
        seconds = time.perf_counter() - began
        ev = evaluate(backend, model, cfg, data.x_test, data.y_test, train_cfg.eval_batch_size)
        result = EpochResult(epoch + 1, train_loss, ev["loss"], ev["accuracy"], ev["perplexity"], seconds, ev["layers"])
        history.append(result)
        if on_epoch:
            on_epoch(result)
        if stalled(history, train_cfg.patience, cfg.task):
            break
        if on_checkpoint and epoch + 1 < train_cfg.epochs:
            on_checkpoint(Checkpoint(list(history), backend.export_params(model), trainer.optimizer_state()))
    return history, model


def stalled(history: list[EpochResult], patience: int | None, task: str) -> bool:
    """Early stopping (``TrainConfig.patience``): the held-out metric (perplexity in language modelling,
    else accuracy) has not improved on its best for ``patience`` epochs. Ties are no improvement."""
    if not patience or len(history) <= patience:
        return False
    scores = [-r.perplexity if task == "lm" else r.test_accuracy for r in history]
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))  # the first epoch reaching the best
    return len(scores) - 1 - best >= patience
