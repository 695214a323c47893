"""The errors of the dataset layer: every failure is a :class:`DataError` with a message that says what to do."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def fetch_command(name: str) -> str:
    """The shell command that downloads dataset ``name`` into the cache."""
    return f"python -m harness data fetch {name}"


class DataError(Exception):
    """A dataset cannot be used: missing, corrupt, unknown or not downloadable."""


class UnknownDataset(DataError, ValueError):
    """The name is none of ``DATASETS`` and not ``text:PATH``."""


class DatasetNotFound(DataError):
    """Some files of a dataset are in none of the searched directories."""

    def __init__(
        self,
        name: str,
        missing: Sequence[str],
        searched: Sequence[Path],
        found: Sequence[Path] = (),
        hint: str | None = None,
    ):
        self.name, self.missing, self.searched, self.found = name, tuple(missing), tuple(searched), tuple(found)
        lines = [f"dataset {name!r} not found: missing {', '.join(self.missing)}"]
        lines.append("searched, in order:")
        lines += [f"  {d}" for d in self.searched] or ["  (no directory)"]
        if self.found:
            lines.append("found only: " + ", ".join(str(p) for p in self.found))
        lines.append(hint or f"fetch it with `{fetch_command(name)}`, or pass --data-dir DIR / set DYNAMOE_DATA")
        super().__init__("\n".join(lines))


class CorruptFile(DataError):
    """A file exists but is not a valid file of its dataset (bad structure, truncated stream)."""

    def __init__(self, path: Path | str, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}")


class ChecksumMismatch(CorruptFile):
    """A file's digest is none of the digests known for it: corrupt, truncated or another release."""

    def __init__(self, path: Path | str, expected: Sequence[str], actual: Sequence[str], detail: str = ""):
        self.expected, self.actual = tuple(expected), tuple(actual)
        problem = (
            f"checksum mismatch: expected {' or '.join(self.expected)}, actual {', '.join(self.actual)}"
            f"{detail}. Delete the file and fetch it again."
        )
        super().__init__(path, problem)


class DownloadFailed(DataError):
    """No mirror could be reached (offline) or the download was interrupted."""
