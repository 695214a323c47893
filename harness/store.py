"""The results store: one JSON record per run under ``<root>/runs/<key>.json``, written atomically.

``key`` is ``RunConfig.key`` (a hash of the run's full config, kept in the record's ``spec`` field). A finished record is never replaced
silently: ``put`` refuses, and ``put(..., supersede=True)`` first moves the old record to
``<root>/runs/superseded/``. A failed run leaves ``<key>.failed.json`` (its error and traceback) and is
tried again by the next sweep; writing the finished record removes it, and no failure is written beside
a finished record. ``frame()`` flattens every finished record into a pandas DataFrame.
A run that another run starts from (``RunConfig.init_from``) also leaves its trained parameters,
``<root>/params/<key>.npz`` (spec names; not committed: ``.gitignore``). A run in progress keeps a
checkpoint after every epoch, ``<root>/checkpoints/<key>.npz`` (``training.Checkpoint``; not committed),
from which an interrupted run continues; it is removed when the record is written.

Reading is forgiving, writing is strict: a record that cannot be read or does not fit the schema
(``harness.records``) is skipped by the listing, named once on stderr with the fix, counts as not
finished (a sweep recomputes it), and is moved to ``<root>/quarantine/`` when its replacement is
written. Nothing is ever deleted: ``python -m harness store check --fix`` moves damaged and stale files
to the same place.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from harness import records as schema
from harness.files import write_json_atomic, write_npz_atomic

RECORD_VERSION = schema.SCHEMA_VERSION
FAILED = ".failed.json"


class StoreError(RuntimeError):
    pass


class RecordExists(StoreError):
    """``put`` found a finished record of the key (another process finished the run first)."""


@dataclass(frozen=True)
class Damaged:
    """A file under ``runs/`` that is not a usable record, and why."""

    path: Path
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def read_json(path: Path, kind: dict = schema.RECORD) -> tuple[dict | None, str | None]:
    """``(record, None)``, migrated to the current schema, or ``(None, what is wrong with the file)``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"cannot be read ({type(exc).__name__}: {exc})"
    if not text.strip():
        return None, "is empty"
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"is not valid JSON ({exc}; truncated or edited by hand)"
    try:
        record = schema.migrate(record) if isinstance(record, dict) else record
    except Exception as exc:  # a migration that cannot read this record: reported like any damage
        return None, f"cannot be migrated to schema_version {schema.SCHEMA_VERSION} ({type(exc).__name__}: {exc})"
    found = schema.problem(record, kind)
    if found is None:
        stem = path.name[: -len(FAILED)] if path.name.endswith(FAILED) else path.stem
        if record["key"] != stem:
            found = f"its key {record['key']!r:.40} is not its file name's {stem!r}"
    return (None, found) if found else (record, None)


class Store:
    def __init__(self, root, *, warn: Callable[[str], None] = _stderr) -> None:
        self.root = Path(root)
        self.runs = self.root / "runs"
        self.warn = warn
        self._warned: set[Path] = set()

    def path(self, key: str) -> Path:
        return self.runs / f"{key}.json"

    def failure_path(self, key: str) -> Path:
        return self.runs / f"{key}{FAILED}"

    def get(self, key: str) -> dict | None:
        """The finished record of ``key``, or ``None``; :class:`StoreError` if it is damaged."""
        path = self.path(key)
        if not path.exists():
            return None
        record, problem = read_json(path)
        if problem:
            raise StoreError(f"{path} {problem}; {self.fix_hint()} moves it aside and the next sweep recomputes the run")
        return record

    def damaged(self, key: str) -> Damaged | None:
        path = self.path(key)
        problem = read_json(path)[1] if path.exists() else None
        return None if problem is None else Damaged(path, problem)

    def has(self, key: str) -> bool:
        """Whether ``key`` has a usable finished record (a damaged one does not count: it is redone)."""
        path = self.path(key)
        return path.exists() and read_json(path)[1] is None

    def fix_hint(self) -> str:
        return f"`python -m harness store check --results-dir {shlex.quote(str(self.root))} --fix`"

    def quarantine(self, path: Path) -> Path:
        """Move ``path`` (a file under the store) to ``<root>/quarantine/``, keeping its relative path."""
        path = Path(path)
        try:
            relative = path.resolve().relative_to(self.root.resolve())
        except ValueError:
            relative = Path(path.name)
        target = self.root / "quarantine" / relative
        if target.exists():
            target = target.with_name(f"{target.name}.{time.strftime('%Y%m%dT%H%M%S')}.{time.time_ns() % 10**9}")
        target.parent.mkdir(parents=True, exist_ok=True)
        path.replace(target)
        return target

    def put(self, record: dict, *, supersede: bool = False) -> Path:
        key = record.get("key")
        clean = {"schema_version": RECORD_VERSION, **{k: v for k, v in record.items() if k not in ("version", "schema_version")}}
        problem = schema.problem(json.loads(json.dumps(clean, default=str)))
        if problem:  # a bug in the writer: refused, so the store never holds what its readers cannot read
            raise StoreError(f"refusing to store the record of {key!r}: {problem}")
        path = self.path(key)
        if path.exists():
            damage = self.damaged(key)
            if damage is not None:
                self.warn(f"note: {damage}; moved to {self.quarantine(path)}, replaced by the new record")
            elif not supersede:
                raise RecordExists(f"{path} already holds a finished run; pass --rerun to recompute it (the old record is kept)")
            else:
                old = self.runs / "superseded" / f"{key}.{time.strftime('%Y%m%dT%H%M%S')}.json"
                old.parent.mkdir(parents=True, exist_ok=True)
                path.replace(old)
        written = write_json_atomic(path, clean)
        self.failure_path(key).unlink(missing_ok=True)
        return written

    def params_path(self, key: str) -> Path:
        return self.root / "params" / f"{key}.npz"

    def put_params(self, key: str, params: dict) -> Path:
        return write_npz_atomic(self.params_path(key), params)

    def get_params(self, key: str) -> dict | None:
        """The trained parameters a run left (spec names, float64), or ``None``."""
        try:
            params = _read_npz(self.params_path(key))
        except StoreError as exc:
            raise StoreError(f"{exc}; {self.fix_hint()} moves it aside and the source run is trained again for them") from exc
        return None if params is None else {name: value.astype("float64") for name, value in params.items()}

    def checkpoint_path(self, key: str) -> Path:
        return self.root / "checkpoints" / f"{key}.npz"

    def put_checkpoint(self, key: str, arrays: dict) -> Path:
        return write_npz_atomic(self.checkpoint_path(key), arrays)

    def get_checkpoint(self, key: str) -> dict | None:
        """The arrays of ``key``'s checkpoint (their own dtypes), or ``None``; a damaged one is moved to
        ``quarantine/`` (named through ``warn``) and the run starts afresh."""
        try:
            return _read_npz(self.checkpoint_path(key))
        except StoreError as exc:
            self.warn(f"note: {exc}; moved to {self.quarantine(self.checkpoint_path(key))}, the run starts afresh")
            return None

    def drop_checkpoint(self, key: str) -> None:
        self.checkpoint_path(key).unlink(missing_ok=True)

    def put_failure(self, key: str, config: dict, error: str, details: str = "") -> Path | None:
        """Record that ``key`` failed; nothing (``None``) when it has a finished record: that one stands."""
        if self.has(key):
            return None
        return write_json_atomic(
            self.failure_path(key),
            {"key": key, "status": "failed", "spec": config, "error": error, "details": details, "time": time.time()},
        )

    def failure(self, key: str) -> dict | None:
        path = self.failure_path(key)
        if not path.exists():
            return None
        record, problem = read_json(path, schema.FAILURE)
        return record if record is not None else {"key": key, "error": f"(its failure record {path} {problem})"}

    def scan(self) -> tuple[list[dict], list[Damaged]]:
        """Every usable finished record, in key order (so reports are deterministic), and every file
        under ``runs/`` that looks like one and is not."""
        found: list[dict] = []
        damaged: list[Damaged] = []
        if not self.runs.is_dir():
            return found, damaged
        for path in sorted(self.runs.glob("*.json")):
            if path.name.endswith(FAILED) or not path.is_file():
                continue
            record, problem = read_json(path)
            if problem:
                damaged.append(Damaged(path, problem))
            else:
                found.append(record)
        return found, damaged

    def records(self) -> Iterator[dict]:
        """Every usable finished record, in key order; each damaged file is named once through ``warn``."""
        found, damaged = self.scan()
        fresh = [d for d in damaged if d.path not in self._warned]
        for d in fresh:
            self.warn(f"warning: skipped {d} (a sweep recomputes it; {self.fix_hint()} moves it aside)")
        self._warned.update(d.path for d in fresh)
        yield from found

    def failures(self) -> list[dict]:
        """Every readable failure record (``store check`` names the unreadable ones)."""
        if not self.runs.is_dir():
            return []
        out = []
        for path in sorted(self.runs.glob(f"*{FAILED}")):
            record, _ = read_json(path, schema.FAILURE)
            if record is not None:
                out.append(record)
        return out

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
        raise StoreError(f"{path} cannot be read ({exc})") from exc
