"""The datasets of the harness, as NumPy arrays shared by every backend.

``load(name)`` returns a :class:`Dataset` for ``mnist``, ``fashion_mnist``, ``cifar10``,
``recycling_the_web_1k``, ``wikitext2`` or ``text:PATH`` (any local UTF-8 text file). Image pixels are
float32 in [0, 1] (uint8 / 255, flattened: 784 or 3072 channel-first), labels int64; language-model
samples are int64 GPT-2 token windows ``(n, 128)`` with targets shifted by one (``harness.data.text``).
The batch order is not drawn here: ``backends.spec.rng.batches(seed, epoch, n, batch_size)`` draws it;
a held-out split, where a corpus lacks one, comes from ``backends.spec.rng.split_indices``.

Files are searched for in ``data_dir``, ``$DYNAMOE_DATA``, the user cache and known system locations
(``harness.data.search``), checked against their known checksums (``harness.data.checksums``), and
downloaded into the cache by ``python -m harness data fetch NAME`` or ``load(..., download=True)``.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import cifar, fetch, idx, text
from .blobs import synthetic
from .checksums import Overrides
from .dataset import Dataset, keep_first
from .errors import ChecksumMismatch, CorruptFile, DataError, DatasetNotFound, DownloadFailed, UnknownDataset
from .registry import DATASETS, TEXT_PREFIX, info
from .search import FoundFile, Located
from .search import locate as _locate

SYNTHETIC_SIZES = (4096, 1024)  # train, test samples of ``load("synthetic")`` (``num_samples`` cuts the first)

__all__ = [
    "DATASETS",
    "ChecksumMismatch",
    "CorruptFile",
    "DataError",
    "Dataset",
    "DatasetNotFound",
    "DownloadFailed",
    "FoundFile",
    "Located",
    "UnknownDataset",
    "load",
    "locate",
    "synthetic",
]


def locate(name: str, data_dir: str | os.PathLike | None = None, *, checksums: Overrides | None = None) -> Located:
    """Where the files of ``name`` are and their checksum status ("ok", "mismatch", "missing", "unchecked").

    Nothing is downloaded. ``checksums`` maps file names to digests that replace the known ones.
    """
    return _locate(name, data_dir, overrides=checksums)


def load(
    name: str,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    download: bool = False,
    num_samples: int | None = None,
    *,
    checksums: Overrides | None = None,
) -> Dataset:
    """Load dataset ``name`` (one of ``DATASETS``, ``text:PATH`` or ``synthetic``) as NumPy arrays.

    ``data_dir`` is searched first (then ``$DYNAMOE_DATA``, the cache, system locations). ``seed`` draws
    the held-out split of a corpus without a test split (``backends.spec.rng.split_indices``); the
    official splits of the image sets do not use it. ``download`` fetches missing files into the cache
    (otherwise a missing file raises :class:`DatasetNotFound`). ``num_samples`` keeps only the first N
    training samples, for quick runs; the test set is unchanged; a language corpus keeps the paper's
    1,000 training windows when it is ``None``. ``checksums`` maps file names to digests that replace the
    known ones (private copies, test fixtures). Every file is checked before use: a bad one raises
    :class:`ChecksumMismatch` or :class:`CorruptFile`.
    """
    if name == "synthetic":
        return synthetic(seed, num_samples or SYNTHETIC_SIZES[0], SYNTHETIC_SIZES[1])
    if name.startswith(TEXT_PREFIX):
        path = Path(name[len(TEXT_PREFIX) :]).expanduser()
        return text.load_text_file(path, seed=seed, num_samples=num_samples, data_dir=data_dir)
    if name not in DATASETS:
        info(name)  # raises UnknownDataset with the list of names
        raise UnknownDataset(f"{name!r} is not a dataset: choose one of {', '.join(DATASETS)}")
    if name == "recycling_the_web_1k":
        located = _locate(name, data_dir, verify=False)
        return text.load_recycling_the_web(located, seed=seed, num_samples=num_samples, data_dir=data_dir)
    located = _locate(name, data_dir, verify=False, overrides=checksums)
    if not located.complete and download:
        located = fetch.fetch(name, data_dir, overrides=checksums)
    if name == "wikitext2":
        return text.load_wikitext2(located, seed=seed, num_samples=num_samples, data_dir=data_dir, overrides=checksums)
    loader = cifar.load if name == "cifar10" else idx.load
    return keep_first(loader(located, checksums), num_samples)
