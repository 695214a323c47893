"""One backend's side of the parity matrix, run in its own process (Keras picks its backend per process).

``python -m harness.parity_worker BACKEND STEPS OUT.npz [DEVICE]`` evaluates, on the spec's weights and
inputs, the forward (float32 and float64, evaluation and training mode), the selected masks, the
gradients of every parameter (of the training loss, balancing term included), the language-model
head's chunked loss and its gradients w.r.t. states, weight and bias (``HEAD_CASE``), and ``STEPS``-step training
trajectories (``TRAJECTORIES``) in float32 and in float64, and saves them, with the backend's runtime and
the BLAS that served it. The cases (``CONFIGS``, ``TRAJECTORIES``) are ``harness.parity_cases``'.
"""

from __future__ import annotations

import json
import sys

import numpy as np

import backends
from backends.spec import ModelConfig, TrainConfig, init_params, rng
from backends.spec import forward as F
from backends.spec.optim import learning_rate
from harness.parity_cases import CONFIGS, HEAD_CASE, TRAJECTORIES
from harness.training import step_noises

TRAJECTORY_BATCH = 64
DTYPES = ("float32", "float64")


def case_inputs(cfg: ModelConfig):
    """Inputs, labels and training-mode gate noise of a parity case (all from the spec's streams)."""
    gen = rng.sample_generator(11)
    if cfg.task == "lm":
        x = gen.integers(0, cfg.vocab_size, size=(16, 16))
        y = gen.integers(0, cfg.vocab_size, size=(16, 16))
    else:
        x, y = gen.random((256, cfg.input_dim)), gen.integers(0, cfg.num_classes, 256)
    return x, y, step_noises(cfg, 11, 0, x.size if cfg.task == "lm" else len(x))


def head_inputs(case: dict = HEAD_CASE):
    """States (N, d), head weight and bias, and labels of the head case (the spec's sample stream)."""
    gen = rng.sample_generator(13)
    n, d, v = case["tokens"], case["hidden"], case["vocab"]
    return gen.standard_normal((n, d)), gen.standard_normal((d, v)) * 0.3, gen.standard_normal(v) * 0.1, gen.integers(0, v, n)


def head_case(backend, dtype: str, case: dict = HEAD_CASE) -> tuple[float, dict[str, np.ndarray]]:
    """The backend's chunked head loss and gradients on ``head_inputs`` in chunks of ``case["chunk_elements"]``."""
    saved, F.HEAD_CHUNK_ELEMENTS = F.HEAD_CHUNK_ELEMENTS, case["chunk_elements"]
    try:
        return backend.train.head_gradients(*head_inputs(case), dtype)
    finally:
        F.HEAD_CHUNK_ELEMENTS = saved


def trajectory_data(steps: int):
    from harness.data import synthetic

    data = synthetic(0, TRAJECTORY_BATCH * 16, 64)
    batches = [b for epoch in range(steps) for b in rng.batches(0, epoch, len(data.x_train), TRAJECTORY_BATCH)][:steps]
    return data, batches


def run(name: str, steps: int, device: str | None = None) -> dict[str, np.ndarray]:
    backend = backends.load(name)
    out: dict[str, np.ndarray] = {}
    for case, cfg in CONFIGS.items():
        x, y, noises = case_inputs(cfg)
        params = init_params(cfg, 7)
        for dtype in DTYPES:
            model = backend.build_model(cfg, params, dtype)
            for mode, noise in (("eval", None), ("train", noises)):
                logits, masks = backend.forward(model, x, noise)
                out[f"{case}/{dtype}/{mode}/logits"] = logits
                for layer, mask in enumerate(masks):
                    out[f"{case}/{dtype}/{mode}/mask{layer}"] = mask
            loss, grads = backend.gradients(model, x, y, noises)
            out[f"{case}/{dtype}/loss"] = np.array(loss)
            for pname, grad in grads.items():
                out[f"{case}/{dtype}/grad/{pname}"] = grad
    for dtype in DTYPES:
        loss, grads = head_case(backend, dtype)
        out[f"lm-head/{dtype}/loss"] = np.array(loss)
        for key, grad in grads.items():
            out[f"lm-head/{dtype}/headgrad/{key}"] = grad
    data, batches = trajectory_data(steps)
    train_cfg = TrainConfig(batch_size=TRAJECTORY_BATCH)
    for key, cfg in TRAJECTORIES.items():
        for dtype in DTYPES:
            model = backend.build_model(cfg, init_params(cfg, 7), dtype)
            trainer = backend.Trainer(model, train_cfg, compile=name == "keras-jax")
            losses = []
            for step, idx in enumerate(batches):
                noises = step_noises(cfg, 0, step, len(idx))
                losses.append(trainer.step(data.x_train[idx], data.y_train[idx], noises, learning_rate(step, steps, train_cfg)))
            out[f"{key}/{dtype}/losses"] = np.array([backend.to_float(v) for v in losses])
    out["runtime"] = np.array(json.dumps({**backend.runtime_info(), "blas": backends.blas_in_use(name)}))
    return out


def main(argv: list[str]) -> int:
    name, steps, path = argv[0], int(argv[1]), argv[2]
    np.savez(path, **run(name, steps, argv[3] if len(argv) > 3 else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
