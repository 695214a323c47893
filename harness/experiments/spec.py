"""What one run is (:class:`RunSpec`, keyed by a hash of its whole config) and what an experiment is.

A :class:`RunSpec` names everything that decides a run's numbers: backend, dataset, training-set cut,
seed, dtype and the full model and training configs. Its ``key`` is the SHA-256 of that, as canonical
JSON; the results store files a run under its key, so the same run requested by two experiments is
trained once, and a change of any config field (a new default included) gives a new key.

An :class:`Experiment` is a paper table or figure as data: its rows (model configurations), the
dataset and epochs of its protocol, and the paper's numbers for each row.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from backends.spec.config import BATCH_SIZES, EPOCHS, ModelConfig, RouterConfig, ScheduleConfig, TrainConfig

# Feature size, classes and task of each dataset (what ``harness.data.load`` returns), so that a run's
# full config and key are known before its data are read.
DATASET_SHAPES = {
    "mnist": ("classify", 784, 10),
    "fashion_mnist": ("classify", 784, 10),
    "cifar10": ("classify", 3072, 10),
    "synthetic": ("classify", 784, 10),
    "wikitext2": ("lm", 128, 50_257),
    "recycling_the_web_1k": ("lm", 128, 50_257),
}
DATASET_TITLES = {
    "mnist": "MNIST",
    "fashion_mnist": "Fashion-MNIST",
    "cifar10": "CIFAR-10",
    "synthetic": "synthetic blobs",
    "wikitext2": "WikiText-2",
    "recycling_the_web_1k": "Recycling-the-Web-1k",
}


def task_of(dataset: str) -> str:
    if dataset not in DATASET_SHAPES:
        raise ValueError(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASET_SHAPES)}")
    return DATASET_SHAPES[dataset][0]


def protocol_epochs(dataset: str) -> int:
    """The paper's epochs for ``dataset`` (Section 5.3; language modelling: ``EPOCHS['lm']``)."""
    return EPOCHS["lm"] if task_of(dataset) == "lm" else EPOCHS.get(dataset, EPOCHS["mnist"])


@dataclass(frozen=True)
class RunSpec:
    """One training run; identical seeds give identical batches, noise and init on every backend."""

    backend: str
    dataset: str
    seed: int
    model: ModelConfig
    train: TrainConfig
    num_samples: int | None = None
    dtype: str = "float32"
    init_from: RunSpec | None = None  # start from this run's trained parameters (MoE -> MoUE: converted)

    def as_dict(self) -> dict:
        out = {
            "backend": self.backend,
            "dataset": self.dataset,
            "num_samples": self.num_samples,
            "seed": self.seed,
            "dtype": self.dtype,
            "model": dataclasses.asdict(self.model),
            "train": dataclasses.asdict(self.train),
        }
        if self.init_from is not None:  # absent otherwise, so the keys of runs from scratch stay as they were
            out["init_from"] = self.init_from.as_dict()
        return out

    @property
    def key(self) -> str:
        text = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    @classmethod
    def from_dict(cls, d: dict) -> RunSpec:
        return cls(
            backend=d["backend"],
            dataset=d["dataset"],
            seed=int(d["seed"]),
            model=ModelConfig.from_dict(d["model"]),
            train=TrainConfig(**d["train"]),
            num_samples=d.get("num_samples"),
            dtype=d.get("dtype", "float32"),
            init_from=cls.from_dict(d["init_from"]) if d.get("init_from") else None,
        )

    def describe(self) -> str:
        m = self.model
        what = "MLP" if m.kind == "mlp" else f"{m.kind} {m.schedule.name} E{m.schedule.e_max}-{m.schedule.e_min}"
        if m.kind != "mlp" and m.router.kind != "dynamic":
            what += f" [{m.router.kind}]"
        cut = f" n={self.num_samples}" if self.num_samples else ""
        start = f" from {self.init_from.model.kind} run {self.init_from.key}" if self.init_from else ""
        return f"{self.backend} {self.dataset}{cut} {m.size} {what}{start} seed {self.seed} ({self.train.epochs} ep)"


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
        task, input_dim, classes = DATASET_SHAPES[dataset]
        dims = {"task": task, "input_dim": input_dim}
        dims.update({"vocab_size": classes} if task == "lm" else {"num_classes": classes})
        return ModelConfig(**dims, schedule=ScheduleConfig(**self.schedule), router=RouterConfig(**self.router), **self.model)

    def train_config(self, dataset: str, epochs: int) -> TrainConfig:
        batch = BATCH_SIZES["lm" if task_of(dataset) == "lm" else "image"]
        return TrainConfig(**{"batch_size": batch, "eval_batch_size": batch, "epochs": epochs, **self.train})


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
    whose runs feed it. ``plot``: the function of ``harness.plots`` that draws it (figures only).
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
    plot: str | None = None  # name of the drawing function in harness.plots
    notes: str = ""
    verdict_metric: str | None = None  # the metric the verdict judges (default: the first with a paper value)

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
    ) -> list[tuple[Row, RunSpec]]:
        """Every (row, run) of this experiment for one backend: rows x seeds on the chosen dataset(s)."""
        out = []
        chosen = self.datasets(dataset)
        for row in self.rows:
            names = [row.dataset] if row.dataset else chosen
            for name in names:
                if name not in chosen:
                    continue
                ep = epochs or protocol_epochs(name)
                for seed in seeds:
                    out.append((row, self._spec(row, backend, name, seed, ep, num_samples, dtype)))
        return out

    @classmethod
    def _spec(cls, row: Row, backend, dataset, seed, epochs, num_samples, dtype) -> RunSpec:
        """``row``'s run, with its ``init_from`` row's run (same backend, data, seed, epochs) as the source."""
        source = None if row.init_from is None else cls._spec(row.init_from, backend, dataset, seed, epochs, num_samples, dtype)
        return RunSpec(backend, dataset, seed, row.model_config(dataset), row.train_config(dataset, epochs), num_samples, dtype, source)

    def paper_row(self, row: Row, layer: int | None = None) -> dict | None:
        """The paper's entry for ``row`` (and ``layer``, in Table 6's per-layer rows), or ``None``."""
        for entry in self.paper:
            if all(entry.get(k) == v for k, v in row.labels.items()) and (layer is None or entry.get("layer") == layer):
                return entry
        return None
