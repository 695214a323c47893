"""What one run is: a :class:`RunConfig`, keyed by a hash of its whole config.

A :class:`RunConfig` names everything that decides a run's numbers: backend, dataset, training-set cut,
seed, dtype and the full model and training configs. Its ``key`` is the SHA-256 of that, as canonical
JSON; the results store files a run under its key, so the same run requested by two experiments is
trained once, and a change of any config field (a new default included) gives a new key. ``hardware``
(the kind of machine a run was placed on, ``run --executor ray --hardware``) enters the key only when
set, so the same config on two kinds gives two records and the keys of other runs stay as they were. A stored
record keeps ``as_dict()`` under its ``"spec"`` field (the name older records carry).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from backends.spec.config import ModelConfig, TrainConfig


@dataclass(frozen=True)
class RunConfig:
    """One training run; identical seeds give identical batches, noise and init on every backend."""

    backend: str
    dataset: str
    seed: int
    model: ModelConfig
    train: TrainConfig
    num_samples: int | None = None
    dtype: str = "float32"
    init_from: RunConfig | None = None  # start from this run's trained parameters (MoE -> MoUE: converted)
    hardware: str | None = None  # the kind of machine it must run on (``run --hardware``: cpu, cuda, metal, ...)

    def as_dict(self) -> dict:
        out = {
            "backend": self.backend,
            "dataset": self.dataset,
            "num_samples": self.num_samples,
            "seed": self.seed,
            "dtype": self.dtype,
            "model": self.model.as_dict(),  # the backbone fields only for a Transformer (keys unchanged)
            "train": self.train.as_dict(),
        }
        if self.init_from is not None:  # absent otherwise, so the keys of runs from scratch stay as they were
            out["init_from"] = self.init_from.as_dict()
        if self.hardware is not None:  # likewise: a run placed on a kind of hardware is its own run
            out["hardware"] = self.hardware
        return out

    @property
    def key(self) -> str:
        text = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        return cls(
            backend=d["backend"],
            dataset=d["dataset"],
            seed=int(d["seed"]),
            model=ModelConfig.from_dict(d["model"]),
            train=TrainConfig(**d["train"]),
            num_samples=d.get("num_samples"),
            dtype=d.get("dtype", "float32"),
            init_from=cls.from_dict(d["init_from"]) if d.get("init_from") else None,
            hardware=d.get("hardware"),
        )

    def describe(self) -> str:
        m = self.model
        what = "MLP" if m.kind == "mlp" else f"{m.kind} {m.schedule.name} E{m.schedule.e_max}-{m.schedule.e_min}"
        if m.kind != "mlp" and m.router.kind != "dynamic":
            what += f" [{m.router.kind}]"
        cut = f" n={self.num_samples}" if self.num_samples else ""
        start = f" from {self.init_from.model.kind} run {self.init_from.key}" if self.init_from else ""
        on = f" on {self.hardware}" if self.hardware else ""
        return f"{self.backend} {self.dataset}{cut} {m.size} {what}{start} seed {self.seed} ({self.train.epochs} ep){on}"
