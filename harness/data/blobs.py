"""A small, learnable classification set for smoke runs and tests: class-dependent Gaussian blobs.

Drawn from ``backends.spec.rng.sample_generator(seed, purpose=1)``, in this order: the class centres
(uniform in [0.25, 0.75]^input_dim), the labels of all ``n_train + n_test`` samples (uniform over the
classes), then standard normal noise scaled by ``NOISE``. Features are clipped to [0, 1] and stored as
float32 like the image sets; labels are int64. Train = the first ``n_train`` samples, test = the rest.
"""

from __future__ import annotations

import numpy as np

from backends.spec.rng import sample_generator

from .dataset import Dataset

PURPOSE = 1
NOISE = 0.25


def synthetic(seed: int, n_train: int, n_test: int, input_dim: int = 784, num_classes: int = 10) -> Dataset:
    """``n_train`` + ``n_test`` samples of ``num_classes`` Gaussian blobs in ``input_dim`` dimensions."""
    if n_train < 1 or n_test < 0 or input_dim < 1 or num_classes < 2:
        raise ValueError(
            f"need n_train >= 1, n_test >= 0, input_dim >= 1, num_classes >= 2; got {n_train}, {n_test}, {input_dim}, {num_classes}"
        )
    rng = sample_generator(seed, purpose=PURPOSE)
    centres = rng.uniform(0.25, 0.75, size=(num_classes, input_dim))
    labels = rng.integers(0, num_classes, size=n_train + n_test)
    x = np.clip(centres[labels] + NOISE * rng.standard_normal((n_train + n_test, input_dim)), 0.0, 1.0)
    x, y = x.astype(np.float32), labels.astype(np.int64)
    return Dataset(
        name="synthetic",
        task="classify",
        x_train=x[:n_train],
        y_train=y[:n_train],
        x_test=x[n_train:],
        y_test=y[n_train:],
        input_dim=input_dim,
        num_classes=num_classes,
        source=f"backends.spec.rng.sample_generator(seed={seed}, purpose={PURPOSE})",
        notes=f"Gaussian blobs: centres U[0.25, 0.75], noise sd {NOISE}, clipped to [0, 1]; train = first {n_train}.",
    )
