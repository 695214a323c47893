"""The names every framework backend exposes (``backends.torch``, ``backends.keras``, ``backends.mlx``).

Each backend is thin: parameter containers, its autodiff and optimiser, and an ``ops`` class; the math is
``backends.spec.forward`` and ``backends.spec.routing``. Arrays cross the boundary as NumPy.

``OPS``
    the backend's implementation of ``spec.ops`` primitives.
``DynaMoELayer``, ``FeedForwardLayer``, ``DynaMoEModel``, ``MLPModel``
    the framework's module types; ``DynaMoELayer(router, weights)`` is usable on its own.
``build_model(cfg, params, dtype="float32") -> model``
    a model of ``cfg`` holding ``params`` (the spec's NumPy arrays, e.g. ``spec.init_params``).
``export_params(model) -> dict[str, np.ndarray]``
    the parameters back as NumPy, under the spec's names.
``forward(model, x, noises=None) -> (logits, masks)``
    NumPy logits and per-layer selected masks; ``noises`` = per-layer gate noise (training mode).
``gradients(model, x, y, noises=None) -> (loss, dict[str, np.ndarray])``
    loss and the gradient of the mean cross-entropy with respect to every parameter.
``Trainer(model, train_cfg, compile=False)``
    ``.step(x, y, noises, lr)`` runs one AdamW step (spec's formula) and returns the loss as a
    framework scalar (no host sync); ``to_float(loss)`` converts it.
    ``.optimizer_state()`` gives AdamW's state as NumPy (``spec.optim.optimizer_state_names``: ``steps``,
    ``m.<name>``, ``v.<name>``); ``.load_optimizer_state(state)`` continues from it, so that a trainer
    built from exported parameters and state takes the same steps bit for bit (checkpoints).
``evaluate_batch(model, x, y) -> (loss_sum, correct, counts)``
    summed loss and correct predictions over the batch's targets (float), and per-layer selection
    counts (NumPy (E_l,)), computed on the device; the harness sums batches.
``runtime_info() -> dict``
    framework versions and the device, for the results' environment fingerprint.
"""
