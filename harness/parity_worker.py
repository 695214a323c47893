"""One backend's side of the parity matrix, run in its own process (Keras picks its backend per process).

``python -m harness.parity_worker BACKEND STEPS OUT.npz [DEVICE]`` evaluates, on the spec's weights and
inputs, the forward (float32 and float64, evaluation and training mode), the selected masks, the
gradients of every parameter (of the training loss, balancing term included), the language-model
head's chunked loss and its gradients w.r.t. states, weight and bias (``HEAD_CASE``), the native layers
(``LAYER_CASES``: outputs, masks, gradients w.r.t. input and parameters; ``layer_case``), and ``STEPS``-step training
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
from harness.parity_cases import CONFIGS, HEAD_CASE, LAYER_CASES, TRAJECTORIES
from harness.training import step_noises, tokens_per_sample

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


# --- the native layers (``LAYER_CASES``) -------------------------------------------------------------

LAYER_TOKENS = 128


def layer_inputs(case: str):
    """``(kind, cfg, arrays, h, noises, probe)`` of a layer case: the spec arrays the layer holds (its names),
    tokens ``h`` (N, d), the per-layer training noise and the fixed ``probe`` (N, d) of the gradients'
    scalar ``sum(y * probe) / N + balancing term`` (all from the spec's streams)."""
    from backends import common

    kind, cfg = LAYER_CASES[case]
    params = init_params(cfg, 7)
    one = kind in ONE_LAYER
    arrays = common.under(params, "layers.0.") if one else {k: params[k] for k in common.stack_shapes(cfg)}
    gen = rng.sample_generator(17)
    shape = (LAYER_TOKENS // BLOCK_STEPS, BLOCK_STEPS, cfg.hidden_dim) if kind == "TransformerBlock" else (LAYER_TOKENS, cfg.hidden_dim)
    h, probe = gen.standard_normal(shape), gen.standard_normal(shape)
    noises = step_noises(cfg, 11, 0, LAYER_TOKENS)
    return kind, cfg, arrays, h, (noises[:1] if one else noises), probe


ONE_LAYER = ("DynaMoE", "TransformerBlock")  # cases holding layer 0's arrays, given layer 0's noise alone
BLOCK_STEPS = 16  # the TransformerBlock case's sequence length: LAYER_TOKENS // 16 sequences


def _spec_name(kind: str, name: str) -> str:
    """A native layer's parameter path as the spec's name (a ``TransformerBlock``'s feed-forward sits under
    ``feed_forward.``)."""
    return name.removeprefix("feed_forward.") if kind == "TransformerBlock" else name


def _from_arrays(backend, kind, cfg, arrays, dtype):
    return getattr(backend, kind).from_arrays(cfg.router if kind == "DynaMoE" else cfg, arrays, dtype=dtype)


def _layer_torch(backend, kind, cfg, arrays, dtype, h, noises, probe):
    import torch

    layer = _from_arrays(backend, kind, cfg, arrays, dtype)
    dt = backend.layers.DTYPES[dtype]
    x, c = torch.as_tensor(h, dtype=dt), torch.as_tensor(probe, dtype=dt)
    noise = [torch.as_tensor(n, dtype=dt) for n in noises]
    arg = noise[0] if kind in ONE_LAYER else noise
    out = {}
    with torch.no_grad():
        for mode in ("eval", "train"):
            layer.train(mode == "train")
            y, routing = layer.forward_with_routing(x, arg if mode == "train" else None)
            out[mode] = (y.numpy().copy(), [r.mask.numpy().copy() for r in (routing if isinstance(routing, list) else [routing])])
    leaves = dict(layer.named_parameters())
    x.requires_grad_(True)
    y = layer(x, arg)
    loss = (y * c).sum() / len(h) + layer.aux_loss
    grads = torch.autograd.grad(loss, [x, *leaves.values()])
    return out, float(loss.detach()), {_spec_name(kind, name): g.numpy().copy() for name, g in zip(["input", *leaves], grads)}


def _layer_keras(backend, kind, cfg, arrays, dtype, h, noises, probe):
    # through ``stateless_call`` / ``StatelessScope``, compiled on JAX (op by op, each small op compiles on
    # its first shape: ~20x slower)
    import keras
    from keras import ops

    from backends.keras.train import compile_fn, value_and_grad

    layer = _from_arrays(backend, kind, cfg, arrays, dtype)
    dt = backend.layers.float_dtype(dtype)
    x, c = ops.convert_to_tensor(np.asarray(h, dtype=dt)), ops.convert_to_tensor(np.asarray(probe, dtype=dt))
    noise = [ops.convert_to_tensor(np.asarray(n, dtype=dt)) for n in noises]
    arg = noise[0] if kind in ONE_LAYER else noise
    trainable, non_trainable = [v.value for v in layer.trainable_variables], [v.value for v in layer.non_trainable_variables]

    def forward(trainable, x, arg):
        mapping = [*zip(layer.trainable_variables, trainable), *zip(layer.non_trainable_variables, non_trainable)]
        with keras.StatelessScope(state_mapping=mapping):
            y, routing = layer.forward_with_routing(x, arg, training=arg is not None)
        return y, [r.mask for r in (routing if isinstance(routing, list) else [routing])]

    def loss(values, c):
        y, _, losses = layer.stateless_call(values[:-1], non_trainable, values[-1], arg, training=True, return_losses=True)
        return ops.sum(y * c) / len(h) + sum(losses)

    out = {}
    for mode in ("eval", "train"):
        y, masks = compile_fn(forward)(trainable, x, arg if mode == "train" else None)
        out[mode] = (np.array(ops.convert_to_numpy(y)), [np.array(ops.convert_to_numpy(m)) for m in masks])
    value, grads = compile_fn(value_and_grad(loss))([*trainable, x], c)
    spec_of = {id(v): name for name, v in layer.spec_variables().items()}
    grads = dict(zip([*(spec_of[id(v)] for v in layer.trainable_variables), "input"], (np.array(ops.convert_to_numpy(g)) for g in grads)))
    return out, float(ops.convert_to_numpy(value)), {"input": grads.pop("input"), **{k: grads[k] for k in layer.spec_variables()}}


def _layer_mlx(backend, kind, cfg, arrays, dtype, h, noises, probe):
    import mlx.core as mx
    from mlx.utils import tree_flatten

    layer = _from_arrays(backend, kind, cfg, arrays, dtype)
    dt = {"float32": mx.float32, "float64": mx.float64}[dtype]
    x, c = mx.array(np.asarray(h), dtype=dt), mx.array(np.asarray(probe), dtype=dt)
    noise = [mx.array(np.asarray(n), dtype=dt) for n in noises]
    arg = noise[0] if kind in ONE_LAYER else noise
    out = {}
    for mode in ("eval", "train"):
        layer.train(mode == "train")
        y, routing = layer.forward_with_routing(x, arg if mode == "train" else None)
        out[mode] = (np.array(y), [np.array(r.mask) for r in (routing if isinstance(routing, list) else [routing])])

    def loss(params, x):
        layer.update(params)
        return (layer(x, arg) * c).sum() / len(h) + layer.aux_loss

    params = layer.trainable_parameters()
    value, (gp, gx) = mx.value_and_grad(loss, argnums=(0, 1))(params, x)
    mx.eval(value, gp, gx)
    layer.update(params)
    return out, float(value.item()), {"input": np.array(gx), **{_spec_name(kind, k): np.array(g) for k, g in tree_flatten(gp)}}


_LAYER_RUNNERS = {"backends.torch": _layer_torch, "backends.keras": _layer_keras, "backends.mlx": _layer_mlx}


def layer_case(backend, case: str, dtype: str) -> dict[str, np.ndarray]:
    """The native layer of ``LAYER_CASES[case]`` in ``backend`` (its module): outputs and masks in
    evaluation (no noise) and training mode (the given noise), the gradients' scalar and its gradients
    (training mode, given noise) w.r.t. the input (``grad/input``) and every parameter (spec names), as
    the matrix's keys ``{case}/{dtype}/...``."""
    kind, cfg, arrays, h, noises, probe = layer_inputs(case)
    modes, loss, grads = _LAYER_RUNNERS[backend.__name__](backend, kind, cfg, arrays, dtype, h, noises, probe)
    out = {f"{case}/{dtype}/loss": np.array(loss)}
    for mode, (y, masks) in modes.items():
        out[f"{case}/{dtype}/{mode}/out"] = y
        for layer, mask in enumerate(masks):
            out[f"{case}/{dtype}/{mode}/mask{layer}"] = mask
    out.update({f"{case}/{dtype}/grad/{name}": g for name, g in grads.items()})
    return out


def trajectory_data(cfg: ModelConfig, steps: int):
    """``(x, y, batches)`` of a trajectory: synthetic images, or for a language model random windows of 16
    tokens (their next tokens as labels), drawn in the spec's batch order."""
    if cfg.task == "lm":
        tokens = rng.sample_generator(0).integers(0, cfg.vocab_size, size=(TRAJECTORY_BATCH * 4, 17))
        x, y = tokens[:, :-1], tokens[:, 1:]
    else:
        from harness.data import synthetic

        data = synthetic(0, TRAJECTORY_BATCH * 16, 64)
        x, y = data.x_train, data.y_train
    batches = [b for epoch in range(steps) for b in rng.batches(0, epoch, len(x), TRAJECTORY_BATCH)][:steps]
    return x, y, batches


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
    for case in LAYER_CASES:
        for dtype in DTYPES:
            out.update(layer_case(backend, case, dtype))
    for dtype in DTYPES:
        loss, grads = head_case(backend, dtype)
        out[f"lm-head/{dtype}/loss"] = np.array(loss)
        for key, grad in grads.items():
            out[f"lm-head/{dtype}/headgrad/{key}"] = grad
    train_cfg = TrainConfig(batch_size=TRAJECTORY_BATCH)
    for key, cfg in TRAJECTORIES.items():
        x, y, batches = trajectory_data(cfg, steps)
        per_sample = tokens_per_sample(cfg, x)
        for dtype in DTYPES:
            model = backend.build_model(cfg, init_params(cfg, 7), dtype)
            trainer = backend.Trainer(model, train_cfg, compile=name == "keras-jax")
            losses = []
            for step, idx in enumerate(batches):
                noises = step_noises(cfg, 0, step, len(idx) * per_sample)
                losses.append(trainer.step(x[idx], y[idx], noises, learning_rate(step, steps, train_cfg)))
            out[f"{key}/{dtype}/losses"] = np.array([backend.to_float(v) for v in losses])
    out["runtime"] = np.array(json.dumps({**backend.runtime_info(), "blas": backends.blas_in_use(name)}))
    return out


def main(argv: list[str]) -> int:
    name, steps, path = argv[0], int(argv[1]), argv[2]
    np.savez(path, **run(name, steps, argv[3] if len(argv) > 3 else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
