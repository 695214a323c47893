"""``python -m harness store check [--results-dir D] [--fix]``: what in a results store needs attention.

It lists, one line each:

- ``damaged``: a file under ``runs/`` that is not a usable record (truncated, not JSON, fields missing or
  of the wrong type, a newer schema, not a record at all); its run counts as not finished.
- ``failed``: a run's failure record (``<key>.failed.json``) with its error; the next sweep tries it
  again, so these are listed and kept.
- ``stale``: a failure record beside the finished record of the same run.
- ``orphan``: a checkpoint of a finished run, parameters with no finished run, a claim whose sweep is
  dead, a temporary file an interrupted write left (older than the claims' stale timeout).
- ``running``: a claim a live sweep holds (information only).

``--fix`` moves the damaged, stale and orphan files to ``<root>/quarantine/`` (same relative paths;
nothing is deleted), after which the next sweep recomputes the damaged runs. The exit status is 1 when
something is left to fix, else 0.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from harness import claims_lock
from harness import records as schema
from harness.environment import REPO
from harness.store import FAILED, Store, read_json
from harness.writable import existing_store

FIXABLE = ("damaged", "stale", "orphan")


@dataclass(frozen=True)
class Finding:
    kind: str  # damaged, failed, stale, orphan, running
    path: Path
    detail: str


def _key(path: Path, suffix: str) -> str:
    return path.name[: -len(suffix)]


def check(store: Store, now: float | None = None) -> list[Finding]:
    """Every finding of ``store``, in path order within each kind."""
    now = time.time() if now is None else now
    found, damaged = store.scan()
    finished = {r["key"] for r in found}
    out = [Finding("damaged", d.path, d.problem) for d in damaged]
    for path in sorted(store.runs.glob(f"*{FAILED}")) if store.runs.is_dir() else []:
        key = _key(path, FAILED)
        record, problem = read_json(path, schema.FAILURE)
        if key in finished:
            out.append(Finding("stale", path, f"a failure record beside the finished record {store.path(key).name}"))
        elif problem:
            out.append(Finding("damaged", path, f"failure record {problem}"))
        else:
            out.append(Finding("failed", path, record["error"]))
    for folder, what in (("checkpoints", "checkpoint"), ("params", "parameters")):
        for path in sorted((store.root / folder).glob("*.npz")):
            key = _key(path, ".npz")
            if what == "checkpoint" and key in finished:
                out.append(Finding("orphan", path, f"checkpoint of a finished run ({store.path(key).name})"))
            elif what == "parameters" and key not in finished:
                out.append(Finding("orphan", path, "parameters of a run with no finished record"))
    for path in sorted(claims_lock.claims_dir(store.root).glob("*.json")):
        owner = claims_lock.read_owner(store.root, _key(path, ".json"))
        if owner is None:
            continue
        if owner.alive(now=now):
            out.append(Finding("running", path, f"claimed by {owner.describe()}, heartbeat {now - owner.heartbeat:.0f} s ago"))
        else:
            out.append(Finding("orphan", path, f"claim of a dead sweep ({owner.describe()}, heartbeat {now - owner.heartbeat:.0f} s ago)"))
    for folder in ("runs", "checkpoints", "params", "tables", "figures"):
        for path in sorted((store.root / folder).glob(".*.tmp")):
            age = now - path.stat().st_mtime
            if age > claims_lock.STALE_AFTER_SECONDS:
                out.append(Finding("orphan", path, f"temporary file of an interrupted write ({age:.0f} s old)"))
    order = {k: i for i, k in enumerate(("damaged", "stale", "orphan", "failed", "running"))}
    return sorted(out, key=lambda f: (order[f.kind], str(f.path)))


def fix(store: Store, findings: list[Finding]) -> list[tuple[Path, Path]]:
    """Move every fixable finding's file to ``quarantine/``: ``[(from, to), ...]``."""
    return [(f.path, store.quarantine(f.path)) for f in findings if f.kind in FIXABLE and f.path.exists()]


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def cmd_check(args) -> int:
    root = existing_store(args.results_dir or REPO / "results")
    store = Store(root)
    findings = check(store)
    for f in findings:
        print(f"{f.kind:8} {_relative(f.path, root)}: {f.detail}")
    fixable = [f for f in findings if f.kind in FIXABLE]
    if args.fix and fixable:
        for old, new in fix(store, fixable):
            print(f"moved    {_relative(old, root)} -> {_relative(new, root)}")
        print(f"{len(fixable)} file(s) moved to {root / 'quarantine'}; the next sweep recomputes the damaged runs")
        return 0
    counts = ", ".join(f"{sum(f.kind == k for f in findings)} {k}" for k in ("damaged", "stale", "orphan", "failed", "running"))
    print(f"{root}: {counts}" if findings else f"{root}: nothing to report")
    if fixable:
        print(f"fix: {store.fix_hint()} moves the {len(fixable)} damaged, stale or orphan file(s) to quarantine/ (nothing is deleted)")
        return 1
    return 0


def add_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("store", help="inspect the results store: damaged, failed, stale and orphan files")
    sub = p.add_subparsers(dest="store_command", required=True)
    c = sub.add_parser("check", help="list what needs attention; --fix moves the damaged, stale and orphan files to quarantine/")
    c.add_argument("--results-dir", default=None, help=f"results store (default {REPO / 'results'})")
    c.add_argument("--fix", action="store_true", help="move damaged, stale and orphan files to <root>/quarantine/ (never deletes)")
    c.set_defaults(func=cmd_check)
