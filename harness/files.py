"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_UMASK = os.umask(0o022)  # read once: a process-wide setting that can only be read by setting it
os.umask(_UMASK)


@contextmanager
def _atomic(path: Path, mode: str) -> Iterator:
    """A handle on a temporary file beside ``path`` that replaces ``path`` (``os.replace``) on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # as open() would make it (mkstemp makes 0600)
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same directory and ``os.replace``."""
    path = Path(path)
    with _atomic(path, "w") as handle:
        handle.write(text)
    return path


def write_json_atomic(path, data) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_npz_atomic(path, arrays: dict) -> Path:
    """``numpy.savez`` of ``arrays`` to ``path``, atomically like :func:`write_text_atomic`."""
    import numpy as np

    path = Path(path)
    with _atomic(path, "wb") as handle:
        np.savez(handle, **arrays)
    return path
