"""The results store: one JSON record per run under ``<root>/runs/<key>.json``, written atomically.

``key`` is ``RunConfig.key`` (a hash of the run's full config, kept in the record's ``spec`` field). A finished record is never replaced
silently: ``put`` refuses, and ``put(..., supersede=True)`` first moves the old record to
``<root>/runs/superseded/``. A failed run leaves ``<key>.failed.json`` (its error and traceback) and is
tried again by the next sweep. ``frame()`` flattens every finished record into a pandas DataFrame.
A run that another run starts from (``RunConfig.init_from``) also leaves its trained parameters,
``<root>/params/<key>.npz`` (spec names; not committed: ``.gitignore``). A run in progress keeps a
checkpoint after every epoch, ``<root>/checkpoints/<key>.npz`` (``training.Checkpoint``; not committed),
from which an interrupted run continues; it is removed when the record is written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

from harness.files import write_json_atomic, write_npz_atomic

RECORD_VERSION = 1


class StoreError(RuntimeError):
    pass


class Store:
    def __init__(self, root) -> None:
        self.root = Path(root)
        self.runs = self.root / "runs"

    def path(self, key: str) -> Path:
        return self.runs / f"{key}.json"

    def failure_path(self, key: str) -> Path:
        return self.runs / f"{key}.failed.json"

    def get(self, key: str) -> dict | None:
        """The finished record of ``key``, or ``None``."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:  # only a hand edit can do this: writes are atomic
            raise StoreError(f"{path} is not valid JSON ({exc}); move it away and rerun to recompute it") from exc

    def has(self, key: str) -> bool:
        return self.path(key).exists()

    def put(self, record: dict, *, supersede: bool = False) -> Path:
        key = record["key"]
        path = self.path(key)
        if path.exists():
            if not supersede:
                raise StoreError(f"{path} already holds a finished run; pass --rerun to recompute it (the old record is kept)")
            old = self.runs / "superseded" / f"{key}.{time.strftime('%Y%m%dT%H%M%S')}.json"
            old.parent.mkdir(parents=True, exist_ok=True)
            path.replace(old)
        written = write_json_atomic(path, {"version": RECORD_VERSION, **record})
        self.failure_path(key).unlink(missing_ok=True)
        return written

    def params_path(self, key: str) -> Path:
        return self.root / "params" / f"{key}.npz"

    def put_params(self, key: str, params: dict) -> Path:
        return write_npz_atomic(self.params_path(key), params)

    def get_params(self, key: str) -> dict | None:
        """The trained parameters a run left (spec names, float64), or ``None``."""
        params = _read_npz(self.params_path(key))
        return None if params is None else {name: value.astype("float64") for name, value in params.items()}

    def checkpoint_path(self, key: str) -> Path:
        return self.root / "checkpoints" / f"{key}.npz"

    def put_checkpoint(self, key: str, arrays: dict) -> Path:
        return write_npz_atomic(self.checkpoint_path(key), arrays)

    def get_checkpoint(self, key: str) -> dict | None:
        """The arrays of ``key``'s checkpoint (their own dtypes), or ``None``."""
        return _read_npz(self.checkpoint_path(key))

    def drop_checkpoint(self, key: str) -> None:
        self.checkpoint_path(key).unlink(missing_ok=True)

    def put_failure(self, key: str, config: dict, error: str, details: str = "") -> Path:
        return write_json_atomic(
            self.failure_path(key),
            {"key": key, "status": "failed", "spec": config, "error": error, "details": details, "time": time.time()},
        )

    def failure(self, key: str) -> dict | None:
        path = self.failure_path(key)
        return json.loads(path.read_text()) if path.exists() else None

    def records(self) -> Iterator[dict]:
        """Every finished record, in key order (so reports are deterministic)."""
        if not self.runs.is_dir():
            return
        for path in sorted(self.runs.glob("*.json")):
            if not path.name.endswith(".failed.json"):
                yield json.loads(path.read_text())

    def failures(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted(self.runs.glob("*.failed.json"))] if self.runs.is_dir() else []

    def frame(self):
        """Finished runs as a pandas DataFrame: one row a run, its config and summary flattened."""
        import pandas as pd

        rows = []
        for r in self.records():
            s, m = r["spec"], r["spec"]["model"]
            rows.append(
                {
                    "key": r["key"],
                    "backend": s["backend"],
                    "dataset": s["dataset"],
                    "num_samples": s["num_samples"],
                    "seed": s["seed"],
                    "size": m["size"],
                    "kind": m["kind"],
                    "schedule": m["schedule"]["name"],
                    "e_min": m["schedule"]["e_min"],
                    "e_max": m["schedule"]["e_max"],
                    "router": m["router"]["kind"],
                    "epochs": s["train"]["epochs"],
                    "lr": s["train"]["lr"],
                    **{k: v for k, v in r["summary"].items() if not isinstance(v, (list, dict))},
                }
            )
        return pd.DataFrame(rows)


def _read_npz(path: Path) -> dict | None:
    """The arrays of an ``.npz`` file (their own dtypes), or ``None`` if there is none."""
    if not path.exists():
        return None
    import zipfile

    import numpy as np

    try:
        with np.load(path) as arrays:
            return {name: arrays[name] for name in arrays.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:  # writes are atomic: a damaged disk or a hand edit
        raise StoreError(f"{path} cannot be read ({exc}); delete it to start the run afresh") from exc
