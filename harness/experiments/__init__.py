"""The experiment registry: every table (``table1``-``table7``) and figure (``figure1``-``figure11``) of
the DynaMoE paper, plus the extra experiments of this project, by name (``python -m harness list``)."""

from __future__ import annotations

import importlib
import importlib.util

from .figures import FIGURES
from .spec import DATASET_SHAPES, Experiment, Metric, Row, RunSpec, protocol_epochs
from .tables import TABLES

REGISTRY: dict[str, Experiment] = {}


def register(*experiments: Experiment) -> None:
    for e in experiments:
        if e.name in REGISTRY:
            raise ValueError(f"experiment {e.name!r} is registered twice")
        REGISTRY[e.name] = e


register(*TABLES, *FIGURES)
if importlib.util.find_spec(f"{__name__}.baselines") is not None:  # the baseline and MoUE experiments (issue 6)
    register(*importlib.import_module(f"{__name__}.baselines").EXPERIMENTS)


def get(name: str) -> Experiment:
    if name not in REGISTRY:
        raise ValueError(f"unknown experiment {name!r}: choose one of {', '.join(REGISTRY)} (python -m harness list)")
    return REGISTRY[name]


def run_source(experiment: Experiment) -> Experiment | None:
    """The experiment whose runs feed ``experiment`` (itself for a table; ``None`` for spec-only)."""
    if experiment.rows:
        return experiment
    return get(experiment.source) if experiment.source else None


__all__ = ["DATASET_SHAPES", "Experiment", "Metric", "REGISTRY", "Row", "RunSpec", "get", "protocol_epochs", "register", "run_source"]
