"""The :class:`Dataset` every loader returns: plain NumPy arrays shared by all backends."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset ready for training: arrays plus what they are and where they came from.

    ``task`` is "classify" (``x``: float32 ``(n, input_dim)`` in [0, 1], ``y``: int64 class ids) or "lm"
    (``x``: int64 token ids ``(n, 128)``, ``y``: the same windows shifted by one token). ``input_dim`` is
    the feature size (784, 3072) or the sequence length (128); ``num_classes`` is 10 or the vocabulary
    size (50,257). ``source`` names the files used, ``notes`` how the splits were formed.
    """

    name: str
    task: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    input_dim: int
    num_classes: int
    source: str
    notes: str

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, task={self.task!r}, train={self.x_train.shape}, test={self.x_test.shape}, "
            f"input_dim={self.input_dim}, num_classes={self.num_classes})"
        )


def keep_first(dataset: Dataset, num_samples: int | None) -> Dataset:
    """``dataset`` with only its first ``num_samples`` training samples (all of them for ``None``)."""
    if num_samples is None:
        return dataset
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    kept = min(num_samples, len(dataset.x_train))
    note = f" Training set cut to its first {kept} samples (num_samples={num_samples})."
    return replace(
        dataset,
        x_train=dataset.x_train[:kept],
        y_train=dataset.y_train[:kept],
        notes=dataset.notes + note,
    )
