"""Output paths checked before any work: a folder is created (or found) and a file written and removed in
it, so a path under a regular file, a read-only disk or a missing store is one clear line at once, not a
traceback after a run has trained."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _why(exc: OSError, path: Path) -> str:
    blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        return f"{blocker} is a file, not a folder"
    return exc.strerror or type(exc).__name__


def writable_dir(path, flag: str, shown=None) -> Path:
    """``path`` as a folder this process can write to, created if missing; else ``ValueError`` naming
    ``flag`` and ``shown`` (the value given, default ``path``)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"{flag} {shown or path}: cannot write there ({_why(exc, path)}); give a folder you can write to") from exc
    return path


def writable_file(path, flag: str) -> Path:
    """``path`` as a file that can be written (its folder checked by :func:`writable_dir`)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path}: is a folder; give a file name")
    writable_dir(path.parent, flag, shown=path)
    return path


def existing_store(path, flag: str = "--results-dir") -> Path:
    """``path`` as an existing results store (a folder holding ``runs/``), never created; else ``ValueError``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path}: is a file, not a folder; give the folder of a results store")
    if not path.is_dir():
        raise ValueError(
            f"{flag} {path}: no such folder (a results store is the folder `python -m harness run --results-dir` wrote); check the path"
        )
    return path
