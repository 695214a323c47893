"""Where dataset files are looked for, and what was found.

Roots, in order (the first root holding a file wins, file by file):

1. the explicit ``data_dir`` argument (the CLI's ``--data-dir``);
2. ``$DYNAMOE_DATA`` (several roots may be joined with ``os.pathsep``);
3. the user cache, ``$XDG_CACHE_HOME/dynamoe`` or ``~/.cache/dynamoe`` (downloads land here);
4. ``KNOWN_ROOTS``: the project's shared data (``<repository>/../shared/data``) and the system
   locations (``/usr/share/datasets``, where Debian's ``dataset-fashion-mnist`` installs
   ``fashion-mnist/``, and ``/usr/local/share/datasets``).

Inside each root, the subfolders named after the dataset (``mnist/``, ``fashion-mnist/``, ...) are
looked into before the root itself: MNIST and Fashion-MNIST share their file names, so keep them apart.
The GPT-2 BPE files are looked for in ``$DYNAMOE_GPT2_DIR`` first, then in the ``gpt2/`` subfolder of
every root.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import checksums
from .checksums import Overrides
from .errors import DatasetNotFound
from .registry import TEXT_PREFIX, TOKENIZER, FileInfo, info

REPOSITORY = Path(__file__).resolve().parents[2]
SHARED_DATA = REPOSITORY.parent / "shared" / "data"
KNOWN_ROOTS: tuple[Path, ...] = (SHARED_DATA, Path("/usr/share/datasets"), Path("/usr/local/share/datasets"))


def cache_dir() -> Path:
    """The user cache of the project: ``$XDG_CACHE_HOME/dynamoe``, else ``~/.cache/dynamoe``."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "dynamoe"


def search_roots(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The roots searched, in order (module docstring)."""
    roots = [Path(data_dir).expanduser()] if data_dir else []
    env = os.environ.get("DYNAMOE_DATA", "")
    roots += [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    roots.append(cache_dir())
    roots += KNOWN_ROOTS
    return roots


def search_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Every folder searched for dataset ``name``, in order, without duplicates."""
    dirs: list[Path] = []
    if name == TOKENIZER and os.environ.get("DYNAMOE_GPT2_DIR"):
        dirs.append(Path(os.environ["DYNAMOE_GPT2_DIR"]).expanduser())
    for root in search_roots(data_dir):
        dirs += [root / sub for sub in info(name).subdirs]
        if name != TOKENIZER:
            dirs.append(root)
    return list(dict.fromkeys(dirs))


@dataclass(frozen=True)
class FoundFile:
    """One file of a dataset: where it was found (or ``None``) and its checksum status."""

    role: str
    names: tuple[str, ...]  # the accepted names, the downloaded one first
    name: str | None  # the name it was found under
    path: Path | None
    status: str  # "ok", "mismatch", "missing", "unchecked" or "not verified" (locate(verify=False))
    required: bool = True
    verdict: checksums.Verdict | None = None


@dataclass(frozen=True)
class Located:
    """What :func:`locate` found for one dataset."""

    name: str
    files: tuple[FoundFile, ...]
    searched: tuple[Path, ...]

    @property
    def complete(self) -> bool:
        """Every required file was found (whatever its checksum status)."""
        return all(f.path is not None for f in self.files if f.required)

    @property
    def status(self) -> str:
        """The dataset's status: "missing" if a required file is missing, else the worst status of its files."""
        if not self.complete:
            return "missing"
        found = {f.status for f in self.files if f.path is not None}
        return next((s for s in ("mismatch", "missing", "not verified", "unchecked") if s in found), "ok")

    @property
    def directories(self) -> tuple[Path, ...]:
        """The folders the files found are in, in order of first use."""
        return tuple(dict.fromkeys(f.path.parent for f in self.files if f.path is not None))

    def file(self, role: str) -> FoundFile:
        """The entry of ``role`` (e.g. "train-images")."""
        return next(f for f in self.files if f.role == role)

    def require(self) -> Located:
        """Return self if complete, else raise :class:`DatasetNotFound` naming what is missing."""
        if self.complete:
            return self
        missing = [_describe(f.names) for f in self.files if f.required and f.path is None]
        found = [f.path for f in self.files if f.path is not None]
        raise DatasetNotFound(self.name, missing, self.searched, found)

    def __str__(self) -> str:
        return ", ".join(str(d) for d in self.directories) or "missing"


def _describe(names: tuple[str, ...]) -> str:
    return names[0] + (f" (or {', '.join(names[1:])})" if len(names) > 1 else "")


def find_file(file: FileInfo, dirs: Sequence[Path]) -> tuple[str, Path] | None:
    """The first (name, path) of ``file`` in ``dirs``: folders first, then names in preference order."""
    for directory in dirs:
        for name in file.names:
            if (directory / name).exists():
                return name, directory / name
    return None


def locate(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    verify: bool = True,
    overrides: Overrides | None = None,
) -> Located:
    """Find the files of dataset ``name`` and (with ``verify``) check their checksums.

    ``name`` is one of ``DATASETS``, ``"gpt2"`` (the tokenizer files) or ``"text:PATH"``. Nothing is
    downloaded; a missing file is reported with status "missing" (see :meth:`Located.require`).
    """
    if name.startswith(TEXT_PREFIX):
        path = Path(name[len(TEXT_PREFIX) :]).expanduser()
        status = "unchecked" if path.is_file() else "missing"
        entry = FoundFile("text", (path.name,), path.name, path if path.is_file() else None, status)
        return Located(name, (entry,), (path.parent,))
    dataset = info(name)
    dirs = search_dirs(name, data_dir)
    entries = []
    for file in dataset.files:
        hit = find_file(file, dirs)
        if hit is None:
            entries.append(FoundFile(file.role, file.names, None, None, "missing", file.required))
            continue
        found_name, path = hit
        verdict = checksums.verify(name, found_name, path, overrides) if verify else None
        status = verdict.status if verdict else "not verified"
        entries.append(FoundFile(file.role, file.names, found_name, path, status, file.required, verdict))
    return Located(name, tuple(entries), tuple(dirs))
