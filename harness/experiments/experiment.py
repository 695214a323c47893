"""What an experiment is: a paper table or figure as data (:class:`Experiment`), its configurations
(:class:`Row`) and columns (:class:`Metric`); ``Experiment.runs`` expands it into runs (:class:`RunConfig`).

An :class:`Experiment` holds its rows (model configurations), the dataset and epochs of its protocol
(``harness.experiments.protocol``), and the paper's numbers for each row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backends.spec.config import ModelConfig, RouterConfig, ScheduleConfig, TrainConfig
from harness.data.registry import info

from .protocol import protocol_batch_size, protocol_epochs, task_of
from .run import RunConfig


@dataclass(frozen=True)
class Row:
    """One configuration of an experiment: the labels it is shown under and how it differs from the
    defaults. ``model``: ``ModelConfig`` fields; ``schedule``/``router``: fields of those configs;
    ``train``: ``TrainConfig`` fields (e.g. the learning rate of Table 7); ``dataset``: a fixed dataset
    (Table 4's rows), else the experiment's; ``init_from``: a row whose trained run (same backend, data,
    seed and epochs) this one starts from."""

    labels: dict[str, str]
    model: dict[str, Any] = field(default_factory=dict)
    schedule: dict[str, Any] = field(default_factory=dict)
    router: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    dataset: str | None = None
    init_from: Row | None = None

    def model_config(self, dataset: str) -> ModelConfig:
        task, d = task_of(dataset), info(dataset)
        dims = {"task": task, "input_dim": d.input_dim}
        dims.update({"vocab_size": d.outputs} if task == "lm" else {"num_classes": d.outputs})
        return ModelConfig(**dims, schedule=ScheduleConfig(**self.schedule), router=RouterConfig(**self.router), **self.model)

    def train_config(self, dataset: str, epochs: int, patience: int | None = None) -> TrainConfig:
        batch = protocol_batch_size(dataset)
        return TrainConfig(**{"batch_size": batch, "eval_batch_size": batch, "epochs": epochs, "patience": patience, **self.train})


@dataclass(frozen=True)
class Metric:
    """A column: ``name`` in the run summary, its heading, and how the paper prints it."""

    name: str
    heading: str
    fmt: str = "{:.2f}"
    scale: float = 1.0  # measured value x scale = the paper's unit (e.g. accuracy 0..1 -> %)
    exact: bool = False  # fixed by the config (a parameter count): the same for every seed, printed without spread


@dataclass(frozen=True)
class Experiment:
    """A table or figure of the paper as data.

    ``rows``: the configurations it trains (empty for what the spec alone computes: Table 1, Figures
    1-2). ``dataset``: the paper's dataset (a row's own ``dataset`` wins). ``paper``: the paper's numbers,
    one dict per row with the row's labels and metric names. ``source``: for a figure, the experiment
    whose runs feed it; ``beside``: a second experiment whose runs of the same backend and dataset it draws
    beside them. ``plot``: the function of ``harness.plots`` that draws it (figures only).
    ``analysis``: what the report prints after the tables (a test across runs, e.g. a prediction).
    """

    name: str
    title: str
    paper_ref: str
    description: str
    rows: tuple[Row, ...] = ()
    dataset: str = "mnist"
    metrics: tuple[Metric, ...] = ()
    paper: tuple[dict, ...] = ()
    source: str | None = None
    beside: str | None = None
    plot: str | None = None  # name of the drawing function in harness.plots
    notes: str = ""
    verdict_metric: str | None = None  # the metric the verdict judges (default: the first with a paper value)
    analysis: Callable[[list[dict]], list[str]] | None = None  # Markdown lines after the tables, from the store's records

    @property
    def kind(self) -> str:
        return "figure" if self.name.startswith("figure") else "table" if self.name.startswith("table") else "extra"

    @property
    def label_keys(self) -> list[str]:
        return list(self.rows[0].labels) if self.rows else []

    def datasets(self, override: str | None = None) -> list[str]:
        fixed = [r.dataset for r in self.rows if r.dataset]
        if fixed:
            names = list(dict.fromkeys(fixed))
            if override is None:
                return names
            if override not in names:
                raise ValueError(f"{self.name} runs on {', '.join(names)}; --dataset {override} is not one of them")
            return [override]
        if override is not None and task_of(override) != task_of(self.dataset):
            raise ValueError(f"{self.name} is a {task_of(self.dataset)} experiment; --dataset {override} is a {task_of(override)} dataset")
        return [override or self.dataset]

    def runs(
        self,
        backend: str,
        seeds: list[int],
        epochs: int | None = None,
        dataset: str | None = None,
        num_samples: int | None = None,
        dtype: str = "float32",
        patience: int | None = None,
    ) -> list[tuple[Row, RunConfig]]:
        """Every (row, run) of this experiment for one backend: rows x seeds on the chosen dataset(s);
        ``patience``: early stopping (``TrainConfig.patience``)."""
        out = []
        chosen = self.datasets(dataset)
        for row in self.rows:
            names = [row.dataset] if row.dataset else chosen
            for name in names:
                if name not in chosen:
                    continue
                ep = epochs or protocol_epochs(name)
                for seed in seeds:
                    out.append((row, self._run(row, backend, name, seed, ep, num_samples, dtype, patience)))
        return out

    @classmethod
    def _run(cls, row: Row, backend, dataset, seed, epochs, num_samples, dtype, patience=None) -> RunConfig:
        """``row``'s run, with its ``init_from`` row's run (same backend, data, seed, epochs, patience) as the source."""
        source = None if row.init_from is None else cls._run(row.init_from, backend, dataset, seed, epochs, num_samples, dtype, patience)
        train = row.train_config(dataset, epochs, patience)
        return RunConfig(backend, dataset, seed, row.model_config(dataset), train, num_samples, dtype, source)

    def paper_row(self, row: Row, layer: int | None = None) -> dict | None:
        """The paper's entry for ``row`` (and ``layer``, in Table 6's per-layer rows), or ``None``."""
        for entry in self.paper:
            if all(entry.get(k) == v for k, v in row.labels.items()) and (layer is None or entry.get("layer") == layer):
                return entry
        return None
