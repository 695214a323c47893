"""Tiny dataset files in the real formats (IDX + gzip, CIFAR pickles and tarball, text) for the data tests."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

import harness.data.search as search

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
IDX_STEMS = {
    "train-images": "train-images-idx3-ubyte",
    "train-labels": "train-labels-idx1-ubyte",
    "test-images": "t10k-images-idx3-ubyte",
    "test-labels": "t10k-labels-idx1-ubyte",
}


def isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point HOME and the cache into ``tmp_path``, drop DYNAMOE_* and the known roots; returns the cache."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken-cache"))
    monkeypatch.delenv("DYNAMOE_DATA", raising=False)
    monkeypatch.delenv("DYNAMOE_GPT2_DIR", raising=False)
    monkeypatch.setattr(search, "KNOWN_ROOTS", ())
    return tmp_path / "xdg-cache" / "dynamoe"


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """IDX encoding of a uint8 array (magic 0x0000080N, big-endian dimensions, row-major payload)."""
    magic = 0x00000800 | array.ndim if magic is None else magic
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + np.ascontiguousarray(array, np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, magic: int | None = None) -> Path:
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends with ``.gz``."""
    data = idx_bytes(array, magic)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return path


def mnist_arrays(n_train: int, n_test: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random uint8 images (n, 28, 28) and labels 0..9 for both splits, keyed by role."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        arrays[f"{split}-images"] = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        arrays[f"{split}-labels"] = rng.integers(0, 10, size=n, dtype=np.uint8)
    return arrays


def write_mnist(directory: Path, n_train: int = 6, n_test: int = 4, seed: int = 0, gz: bool = True):
    """Write the four IDX files into ``directory``; returns (arrays by role, checksum overrides by file name)."""
    arrays = mnist_arrays(n_train, n_test, seed)
    overrides = {}
    for role, stem in IDX_STEMS.items():
        path = write_idx(directory / (f"{stem}.gz" if gz else stem), arrays[role])
        overrides[path.name] = md5(path)
    return arrays, overrides


def cifar_batch(n: int, seed: int) -> dict[bytes, object]:
    """One batch dict with the real keys: uint8 data (n, 3072) channel-first, labels a list of ints."""
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"fixture batch",
        b"labels": [int(v) for v in rng.integers(0, 10, size=n)],
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [b"img%d.png" % i for i in range(n)],
    }


CIFAR_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")


def cifar_batches(n: int = 3) -> dict[str, dict[bytes, object]]:
    return {name: cifar_batch(n, seed) for seed, name in enumerate(CIFAR_BATCHES)}


def write_cifar_folder(root: Path, batches: dict[str, dict[bytes, object]]) -> dict[str, str]:
    """Write ``root/cifar-10-batches-py/<batch>`` pickles (protocol 2); returns checksum overrides."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    overrides = {}
    for name, batch in batches.items():
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        overrides[f"cifar-10-batches-py/{name}"] = md5(folder / name)
    return overrides


def write_cifar_tarball(root: Path, batches: dict[str, dict[bytes, object]]) -> dict[str, str]:
    """Write ``root/cifar-10-python.tar.gz`` holding the batches; returns its checksum override."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for name, batch in batches.items():
            data = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return {path.name: md5(path)}
