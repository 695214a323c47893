"""The paper's training protocol (its Section 5.3): epochs and batch size per dataset.

These are the harness's defaults for a run of an experiment (``Row.train_config``), not part of the
model spec; ``python -m harness run --epochs`` shortens a protocol, and the report says so.
"""

from __future__ import annotations

from harness.data.registry import TRAINABLE, info

# Epochs per dataset; the language-modelling count is not stated in the paper: 20 chosen.
EPOCHS = {"mnist": 20, "fashion_mnist": 20, "cifar10": 25, "lm": 20}
BATCH_SIZES = {"image": 256, "lm": 32}


def task_of(dataset: str) -> str:
    """``"classify"`` or ``"lm"``; ``ValueError`` naming the datasets a run can use otherwise."""
    if dataset not in TRAINABLE:
        raise ValueError(f"unknown dataset {dataset!r}: choose one of {', '.join(TRAINABLE)}")
    return info(dataset).task


def protocol_epochs(dataset: str) -> int:
    """The paper's epochs for ``dataset`` (language modelling: ``EPOCHS['lm']``)."""
    return EPOCHS["lm"] if task_of(dataset) == "lm" else EPOCHS.get(dataset, EPOCHS["mnist"])


def protocol_batch_size(dataset: str) -> int:
    """The paper's training (and evaluation) batch size for ``dataset``."""
    return BATCH_SIZES["lm" if task_of(dataset) == "lm" else "image"]


def run_protocol(record: dict) -> tuple:
    """``(backend, dataset, epochs, cut, patience)`` of a record's run (cut 0: the whole training set;
    patience ``None``: no early stopping): runs with the same key are comparable, others are not."""
    s = record["spec"]
    return (s["backend"], s["dataset"], s["train"]["epochs"], s["num_samples"] or 0, s["train"].get("patience"))
