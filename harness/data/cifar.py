"""CIFAR-10 from the python pickle batches, read from ``cifar-10-python.tar.gz`` or its extracted folder.

Normalisation (the paper does not state one): pixels become float32 in [0, 1] by dividing the uint8
values by 255, with no mean/std standardisation; each image keeps the pickle's channel-first layout,
3x32x32 flattened to 3072 features (1024 red, then 1024 green, then 1024 blue, each row-major);
labels are int64 in 0..9. Train = ``data_batch_1..5`` concatenated in order (50,000), test =
``test_batch`` (10,000).

The tarball is checked against its published md5 and the extracted batches against theirs before
anything is unpickled, and the unpickler only admits the few NumPy globals an array needs, so a
tampered pickle cannot run code. Each batch is then validated structurally (keys, dtype, shape,
label count and range).
"""

from __future__ import annotations

import importlib.util
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from . import checksums
from .checksums import Overrides
from .dataset import Dataset
from .errors import CorruptFile
from .registry import CIFAR_FOLDER, CIFAR_TEST_BATCH, CIFAR_TRAIN_BATCHES
from .search import Located

FEATURES = 3 * 32 * 32
NUM_CLASSES = 10
_NUMPY_CORE = "numpy._core" if importlib.util.find_spec("numpy._core") else "numpy.core"
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("multiarray", "_reconstruct"),
    ("numeric", "_frombuffer"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
}


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals needed to rebuild NumPy arrays."""

    def find_class(self, module: str, name: str):
        short = module.rsplit(".", 1)[-1] if module.startswith(("numpy.core.", "numpy._core.")) else module
        if (short, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}")
        if short in ("multiarray", "numeric"):
            module = f"{_NUMPY_CORE}.{short}"  # the pickles name numpy.core, which NumPy 2 deprecates
        return super().find_class(module, name)


def parse_batch(where: str, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The uint8 images ``(n, 3072)`` and int64 labels of one pickled batch; ``where`` names it in errors."""
    try:
        batch = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:  # any unpickling failure means a bad file
        raise CorruptFile(where, f"not a CIFAR-10 batch pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(map(repr, batch)) if isinstance(batch, dict) else type(batch).__name__
        raise CorruptFile(where, f"expected a dict with keys b'data' and b'labels', got {keys}")
    images, labels = batch[b"data"], np.asarray(batch[b"labels"])
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != FEATURES:
        got = (images.dtype, images.shape) if isinstance(images, np.ndarray) else type(images).__name__
        raise CorruptFile(where, f"b'data' must be uint8 of shape (n, {FEATURES}), got {got}")
    if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
        raise CorruptFile(where, f"{len(images)} images but labels of shape {labels.shape} ({labels.dtype})")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise CorruptFile(where, f"labels out of range 0..{NUM_CLASSES - 1}: [{labels.min()}, {labels.max()}]")
    return images, labels.astype(np.int64)


def _read_tarball(path: Path, overrides: Overrides | None) -> dict[str, bytes]:
    data = checksums.read_verified("cifar10", path.name, path, overrides)
    wanted = {f"{CIFAR_FOLDER}/{b}": b for b in (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH)}
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            for member in archive:
                if member.name in wanted and member.isfile():
                    members[wanted[member.name]] = archive.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CorruptFile(path, f"unreadable tarball ({exc})") from None
    missing = sorted(set(wanted.values()) - set(members))
    if missing:
        raise CorruptFile(path, f"the tarball lacks {', '.join(f'{CIFAR_FOLDER}/{m}' for m in missing)}")
    return members


def _read_folder(path: Path, overrides: Overrides | None) -> dict[str, bytes]:
    batches = {}
    for batch in (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH):
        member = path / batch
        if not member.is_file():
            raise CorruptFile(path, f"incomplete CIFAR-10 folder: {batch} is missing")
        batches[batch] = checksums.read_verified("cifar10", f"{CIFAR_FOLDER}/{batch}", member, overrides)
    return batches


def load(located: Located, overrides: Overrides | None = None) -> Dataset:
    """The train and test splits of CIFAR-10 from the tarball or folder that ``located`` found."""
    found = located.require().file("batches")
    read = _read_folder if found.path.is_dir() else _read_tarball
    raw = read(found.path, overrides)
    parsed = {batch: parse_batch(f"{found.path}:{batch}", data) for batch, data in raw.items()}
    train = [parsed[b] for b in CIFAR_TRAIN_BATCHES]
    x_test, y_test = parsed[CIFAR_TEST_BATCH]
    scale = np.float32(255)
    return Dataset(
        name="cifar10",
        task="classify",
        x_train=np.divide(np.concatenate([x for x, _ in train]), scale, dtype=np.float32),
        y_train=np.concatenate([y for _, y in train]),
        x_test=np.divide(x_test, scale, dtype=np.float32),
        y_test=y_test,
        input_dim=FEATURES,
        num_classes=NUM_CLASSES,
        source=str(found.path),
        notes=(
            "Official splits: train = data_batch_1..5 in order, test = test_batch; pixels uint8/255 as float32 "
            "in [0, 1], channel-first 3x32x32 flattened to 3072 as in the pickles; labels int64."
        ),
    )
