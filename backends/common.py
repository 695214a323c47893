"""Glue the framework backends share: the spec's dotted parameter names as module trees, the arrays one
layer holds, and weight files (``.npz`` under the spec's names, readable by every backend and NumPy)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from backends.spec.config import ModelConfig
from backends.spec.init import check_params

DYNAMOE_LAYER_NAMES = ("gate.weight", "experts.w1", "experts.b1", "experts.w2", "experts.b2")
FEED_FORWARD_NAMES = ("ffn.w1", "ffn.b1", "ffn.w2", "ffn.b2")
WEIGHTS_SUFFIX = ".npz"


def under(params: Mapping, prefix: str) -> dict:
    """The entries of ``params`` whose names start with ``prefix``, named without it (``layers.0.`` ->
    ``gate.weight``, ...)."""
    return {name[len(prefix) :]: value for name, value in params.items() if name.startswith(prefix)}


def group_names(params: Mapping) -> dict[str, dict]:
    """``{module path: {leaf: value}}`` of dotted names: ``experts.w1`` -> ``{"experts": {"w1": ...}}``."""
    groups: dict[str, dict] = {}
    for name, value in params.items():
        module, _, leaf = name.rpartition(".")
        groups.setdefault(module, {})[leaf] = value
    return groups


def param_tree(params: Mapping, group: Callable[[dict], object], node: Callable[[], object]):
    """Nested modules whose parameter paths are the dotted names of ``params``: ``group(leaves)`` makes the
    module holding one path's arrays, ``node()`` an empty one; children are attached with ``setattr``
    (which registers them in PyTorch and MLX alike)."""
    root = node()
    made = {"": root}
    for module, leaves in group_names(params).items():
        parent, path = root, ""
        *parents, last = module.split(".")
        for part in parents:
            path = f"{path}.{part}" if path else part
            if path not in made:
                made[path] = node()
                setattr(parent, part, made[path])
            parent = made[path]
        made[module] = group(leaves)
        setattr(parent, last, made[module])
    return root


def layer_arrays(params: Mapping, names: tuple[str, ...], layer: str) -> dict[str, np.ndarray]:
    """``params`` in the order of ``names``, which must be exactly its keys (the names inside one layer)."""
    if set(params) != set(names):
        raise ValueError(
            f"{layer} holds {', '.join(names)}: missing {sorted(set(names) - set(params))}, unexpected {sorted(set(params) - set(names))}"
        )
    return {name: params[name] for name in names}


def _weights_path(path) -> Path:
    path = Path(path)
    if path.suffix != WEIGHTS_SUFFIX:
        raise ValueError(f"weights are written as {WEIGHTS_SUFFIX} files, not {path.name!r}")
    return path


def write_weights(params: Mapping[str, np.ndarray], path) -> None:
    """Write ``export_params``'s arrays to the ``.npz`` file ``path`` under the spec's names."""
    with open(_weights_path(path), "wb") as file:
        np.savez(file, **params)


def read_weights(cfg: ModelConfig, path) -> dict[str, np.ndarray]:
    """The arrays of a weights file, checked against ``cfg`` (names and shapes, ``spec.init.check_params``)."""
    with np.load(_weights_path(path)) as file:
        params = {name: file[name] for name in file.files}
    check_params(cfg, {name: value.shape for name, value in params.items()})
    return params
