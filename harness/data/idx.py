"""MNIST and Fashion-MNIST from their IDX files (gzip-compressed or not).

Normalisation (the paper does not state one): pixels become float32 in [0, 1] by dividing the uint8
values by 255, with no mean/std standardisation; each 28x28 image is flattened row-major to 784
features; labels are int64 in 0..9. The official train (60,000) and test (10,000) splits are kept as
published, in file order.

Every file is checked against its digests (``harness.data.checksums``) before it is parsed, then
parsed strictly: magic number, dimensions, payload size, and equal image/label counts.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from . import checksums
from .checksums import Overrides
from .dataset import Dataset
from .errors import CorruptFile
from .search import Located

IMAGE_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABEL_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
IMAGE_SIDE = 28
NUM_CLASSES = 10


def decompress(path: Path, data: bytes) -> bytes:
    """``data`` unzipped if ``path`` is a ``.gz`` file; :class:`CorruptFile` for a truncated or bad stream."""
    if path.suffix != ".gz":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise CorruptFile(path, f"truncated or corrupt gzip stream ({exc})") from None


def parse_idx(path: Path, data: bytes, magic: int) -> np.ndarray:
    """The uint8 array stored in IDX bytes ``data`` (already decompressed), checking ``magic`` and sizes."""
    if len(data) < 4:
        raise CorruptFile(path, f"too short for an IDX header ({len(data)} bytes)")
    (found,) = struct.unpack(">I", data[:4])
    if found != magic:
        raise CorruptFile(path, f"wrong IDX magic number 0x{found:08x}, expected 0x{magic:08x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise CorruptFile(path, f"truncated IDX header ({len(data)} bytes, need {header})")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        raise CorruptFile(path, f"IDX payload of {len(data) - header} bytes, header {shape} needs {expected - header}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_idx(dataset: str, name: str, path: Path, magic: int, overrides: Overrides | None = None) -> np.ndarray:
    """Verify, decompress and parse one IDX file."""
    data = checksums.read_verified(dataset, name, path, overrides)
    return parse_idx(path, decompress(path, data), magic)


def read_split(located: Located, split: str, overrides: Overrides | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (float32, ``(n, 784)``, [0, 1]) and labels (int64) of ``split`` ("train" or "test")."""
    images_file, labels_file = located.file(f"{split}-images"), located.file(f"{split}-labels")
    if images_file.path is None or labels_file.path is None:
        located.require()
    images = read_idx(located.name, images_file.name, images_file.path, IMAGE_MAGIC, overrides)
    labels = read_idx(located.name, labels_file.name, labels_file.path, LABEL_MAGIC, overrides)
    if images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise CorruptFile(images_file.path, f"images of {images.shape[1:]} pixels, expected (28, 28)")
    if len(images) != len(labels):
        raise CorruptFile(
            images_file.path,
            f"{len(images)} images but {len(labels)} labels in {labels_file.path}: the files do not belong together",
        )
    if labels.size and labels.max() >= NUM_CLASSES:
        raise CorruptFile(labels_file.path, f"label {labels.max()} out of range 0..{NUM_CLASSES - 1}")
    x = np.divide(images.reshape(len(images), -1), np.float32(255), dtype=np.float32)
    return x, labels.astype(np.int64)


def load(located: Located, overrides: Overrides | None = None) -> Dataset:
    """The train and test splits of an IDX dataset whose files ``located`` found."""
    located.require()
    x_train, y_train = read_split(located, "train", overrides)
    x_test, y_test = read_split(located, "test", overrides)
    return Dataset(
        name=located.name,
        task="classify",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        input_dim=IMAGE_SIDE * IMAGE_SIDE,
        num_classes=NUM_CLASSES,
        source="; ".join(str(f.path) for f in located.files),
        notes=(
            "Official train/test splits in file order; pixels uint8/255 as float32 in [0, 1], "
            "28x28 flattened row-major to 784; labels int64."
        ),
    )


def count(path: Path) -> int:
    """The item count in the header of an IDX file (reads a few bytes; no checksum)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            header = handle.read(8)
    except (OSError, EOFError, zlib.error) as exc:
        raise CorruptFile(path, f"unreadable ({exc})") from None
    if len(header) < 8:
        raise CorruptFile(path, "truncated IDX header")
    return struct.unpack(">I", header[4:8])[0]
