"""Every random number of the project, drawn from NumPy's PCG64 with a documented stream layout.

A run is defined by one integer ``seed``. Each purpose draws from its own independent stream,
``Generator(PCG64(SeedSequence(seed, spawn_key=(STREAM, *key))))``, so that adding a tensor, an epoch
or a layer never shifts the numbers of any other purpose. The layout:

============  ===========================  =====================================================
stream        key                          what it draws
============  ===========================  =====================================================
PARAMS = 1    (crc32(tensor name),)        one parameter tensor (distribution: ``spec.init``)
DATA_ORDER=2  (epoch,)                     the permutation of training samples for that epoch
GATE_NOISE=3  (step, layer)                standard normals of one layer's gate noise (Eq. 7)
SPLIT = 4     ()                           the held-out split of a dataset without one
SAMPLE = 5    (purpose,)                   synthetic data and test inputs
============  ===========================  =====================================================

Backends receive the arrays, never the generator: they differ only by floating-point order.
"""

from __future__ import annotations

import zlib

import numpy as np

PARAMS = 1
DATA_ORDER = 2
GATE_NOISE = 3
SPLIT = 4
SAMPLE = 5


def generator(seed: int, stream: int, *key: int) -> np.random.Generator:
    """The generator of one stream; ``key`` selects the sub-stream (see the module table)."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed), spawn_key=(stream, *map(int, key)))))


def name_key(name: str) -> int:
    """Stable integer key of a parameter name (crc32), independent of Python's hash seed."""
    return zlib.crc32(name.encode("utf-8"))


def data_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order in which the ``n`` training samples are visited in ``epoch`` (0-based)."""
    return generator(seed, DATA_ORDER, epoch).permutation(n)


def batches(seed: int, epoch: int, n: int, batch_size: int) -> list[np.ndarray]:
    """Index arrays of the training batches of one epoch; the last batch keeps the remainder."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = data_order(seed, epoch, n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def gate_noise(seed: int, step: int, layer: int, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian gate noise ``eps ~ N(0, sigma^2)`` of Eq. 7 for one layer at one training step (float64)."""
    return sigma * generator(seed, GATE_NOISE, step, layer).standard_normal(shape)


def split_indices(seed: int, n: int, held_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` into (kept, held-out) index arrays, both sorted, ``held_out`` samples held out."""
    if not 0 <= held_out <= n:
        raise ValueError(f"held_out must be in [0, {n}], got {held_out}")
    perm = generator(seed, SPLIT).permutation(n)
    return np.sort(perm[held_out:]), np.sort(perm[:held_out])


def sample_generator(seed: int, purpose: int = 0) -> np.random.Generator:
    """Generator for synthetic data and test inputs (stream SAMPLE)."""
    return generator(seed, SAMPLE, purpose)
