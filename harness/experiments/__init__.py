"""The experiment registry: every table (``table1``-``table7``) and figure (``figure1``-``figure11``) of
the DynaMoE paper, plus the extra experiments of this project (baselines, ablations, MoUE against MoE),
by name (``python -m harness list``).

- ``experiment``: what an experiment is (:class:`Experiment`, :class:`Row`, :class:`Metric`);
- ``run``: what one run is (:class:`RunConfig`, keyed by a hash of its config);
- ``protocol``: the paper's epochs and batch sizes;
- ``tables``, ``figures``, ``baselines``: the experiments themselves.

The datasets they run on are those of ``harness.data.registry``.
"""

from __future__ import annotations

from .baselines import EXPERIMENTS as EXTRAS
from .experiment import Experiment, Metric, Row
from .figures import FIGURES
from .protocol import BATCH_SIZES, EPOCHS, protocol_epochs
from .run import RunConfig
from .tables import TABLES
from .transformer import EXPERIMENTS as TRANSFORMER

REGISTRY: dict[str, Experiment] = {}


def register(*experiments: Experiment) -> None:
    for e in experiments:
        if e.name in REGISTRY:
            raise ValueError(f"experiment {e.name!r} is registered twice")
        REGISTRY[e.name] = e


register(*TABLES, *FIGURES, *EXTRAS, *TRANSFORMER)


def get(name: str) -> Experiment:
    if name not in REGISTRY:
        raise ValueError(f"unknown experiment {name!r}: choose one of {', '.join(REGISTRY)} (python -m harness list)")
    return REGISTRY[name]


def run_source(experiment: Experiment) -> Experiment | None:
    """The experiment whose runs feed ``experiment`` (itself for a table; ``None`` for spec-only)."""
    if experiment.rows:
        return experiment
    return get(experiment.source) if experiment.source else None


__all__ = [
    "BATCH_SIZES",
    "EPOCHS",
    "Experiment",
    "Metric",
    "REGISTRY",
    "Row",
    "RunConfig",
    "get",
    "protocol_epochs",
    "register",
    "run_source",
]
