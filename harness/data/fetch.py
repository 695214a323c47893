"""Downloads from the public mirrors into the cache, each file checked before it is kept.

Every byte goes through :func:`download_url` (tests replace it to stay offline). A file is written to
``NAME.part`` and renamed only once its checksum is right; a mirror that fails or serves wrong bytes
is skipped for the next one.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import urllib.request
from pathlib import Path

from tqdm import tqdm

from . import checksums, text
from .checksums import Overrides
from .errors import ChecksumMismatch, DataError, DownloadFailed
from .registry import LANGUAGE, TEXT_PREFIX, TOKENIZER, FileInfo, info
from .search import Located, cache_dir, locate

TIMEOUT_S = 60
# URLError, HTTPError and socket timeouts are all OSErrors; a dropped connection mid-body is an HTTPException.
_NETWORK_ERRORS = (OSError, http.client.HTTPException)


def download_url(url: str, dest: Path, *, desc: str, progress: bool = True) -> None:
    """Stream ``url`` into ``dest`` with a tqdm progress bar (the only function here that uses the network)."""
    request = urllib.request.Request(url, headers={"User-Agent": "dynamoe-harness"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, dest.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=not progress) as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))


def download_file(name: str, file: FileInfo, target: Path, overrides: Overrides | None, progress: bool) -> Path:
    """Download ``file`` of dataset ``name`` into folder ``target`` from the first mirror that serves it right."""
    target.mkdir(parents=True, exist_ok=True)
    dest = target / file.names[0]
    part = dest.with_name(dest.name + ".part")
    failures: list[str] = []
    mismatch: ChecksumMismatch | None = None
    for url in file.urls:
        try:
            download_url(url, part, desc=dest.name, progress=progress)
        except _NETWORK_ERRORS as exc:
            failures.append(f"  {url}: {exc}")
            part.unlink(missing_ok=True)
            continue
        verdict = checksums.check_bytes(name, file.names[0], dest, part.read_bytes(), overrides)
        if verdict.status == "mismatch":
            mismatch = ChecksumMismatch(url, verdict.expected, verdict.actual, verdict.detail)
            failures.append(f"  {url}: {mismatch.problem}")
            part.unlink()
            continue
        os.replace(part, dest)
        return dest
    with contextlib.suppress(OSError):
        target.rmdir()  # only if this attempt left it empty
    if mismatch is not None and len(failures) == 1:
        raise mismatch
    raise DownloadFailed(
        f"could not download {dest.name} of {name!r} (offline, or every mirror failed):\n"
        + "\n".join(failures)
        + f"\ncopy {dest.name} into a folder and pass --data-dir DIR or set DYNAMOE_DATA"
    )


def fetch(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    overrides: Overrides | None = None,
    progress: bool = True,
    dest: str | os.PathLike | None = None,
) -> Located:
    """Download the files of ``name`` that are not found intact (``data_dir`` is searched first as always).

    Files go to ``<dest or the cache>/<dataset folder>/`` (e.g. ``~/.cache/dynamoe/mnist/``). The
    language datasets fetch the GPT-2 BPE files too. Raises :class:`DownloadFailed` when offline and
    :class:`ChecksumMismatch` when a mirror serves wrong bytes or a bad copy shadows the new one.
    """
    if name.startswith(TEXT_PREFIX):
        raise DataError(f"{name}: a local text file has nothing to fetch")
    dataset = info(name)
    if not dataset.files:
        raise DataError(f"{name}: drawn, not read from files: nothing to fetch")
    if name == "recycling_the_web_1k":
        local = locate(name, data_dir, verify=False)
        if not local.complete:
            text.hub_splits(local.searched)  # `datasets` keeps its own cache
    else:
        target = (Path(dest).expanduser() if dest else cache_dir()) / dataset.subdirs[0]
        located = locate(name, data_dir, overrides=overrides)
        for file, found in zip(dataset.files, located.files, strict=True):
            if found.status not in ("ok", "unchecked") and file.urls:
                download_file(name, file, target, overrides, progress)
    if name in LANGUAGE:
        fetch(TOKENIZER, data_dir, progress=progress, dest=dest)
    located = locate(name, data_dir, overrides=overrides)
    for found in located.files:
        if found.verdict is not None:
            found.verdict.raise_if_bad()
    return located.require() if name != "recycling_the_web_1k" else located
