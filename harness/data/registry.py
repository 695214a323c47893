"""What each dataset is made of: its files, the names they may carry, the subfolders they may sit in, the mirrors.

A dataset is a tuple of :class:`FileSpec`; each is looked for independently (``harness.data.locate``), and
each is checked against its digests (``harness.data.checksums``). The first name of a spec is the one a
download writes; the others are accepted alternatives (uncompressed IDX, an extracted CIFAR folder,
WikiText's ``wiki.*.tokens``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UnknownDataset

IMAGES = ("mnist", "fashion_mnist", "cifar10")
LANGUAGE = ("recycling_the_web_1k", "wikitext2")
DATASETS = IMAGES + LANGUAGE
TOKENIZER = "gpt2"
TEXT_PREFIX = "text:"
HUB_RECYCLING = "mlx-community/recycling_the_web-1k"

_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_FASHION_MIRRORS = (
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
# pytorch/examples at a pinned commit, then its moving main branch; the sha256s pin the bytes.
_WIKITEXT_MIRRORS = (
    "https://raw.githubusercontent.com/pytorch/examples/acc295dc7b90714f1bf47f06004fc19a7fe235c4/word_language_model/data/wikitext-2/",
    "https://raw.githubusercontent.com/pytorch/examples/main/word_language_model/data/wikitext-2/",
)
_GPT2_MIRRORS = ("https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/",)

CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TARBALL = "cifar-10-python.tar.gz"
CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_BATCH = "test_batch"


@dataclass(frozen=True)
class FileSpec:
    """One file of a dataset."""

    role: str  # what it holds, e.g. "train-images"
    names: tuple[str, ...]  # accepted names relative to a searched folder, the downloaded one first
    urls: tuple[str, ...] = ()  # full URLs of names[0], tried in order
    required: bool = True


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: its files, the folder names it may sit in, and what it is."""

    name: str
    title: str
    task: str  # "classify", "lm" or "tokenizer"
    subdirs: tuple[str, ...]  # folders named after the dataset, looked into inside every searched root
    files: tuple[FileSpec, ...]


def _idx_files(mirrors: tuple[str, ...]) -> tuple[FileSpec, ...]:
    stems = {
        "train-images": "train-images-idx3-ubyte",
        "train-labels": "train-labels-idx1-ubyte",
        "test-images": "t10k-images-idx3-ubyte",
        "test-labels": "t10k-labels-idx1-ubyte",
    }
    return tuple(FileSpec(role, (f"{stem}.gz", stem), tuple(m + f"{stem}.gz" for m in mirrors)) for role, stem in stems.items())


SPECS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec("mnist", "MNIST", "classify", ("mnist", "MNIST"), _idx_files(_MNIST_MIRRORS)),
    "fashion_mnist": DatasetSpec(
        "fashion_mnist",
        "Fashion-MNIST",
        "classify",
        ("fashion-mnist", "fashion_mnist", "FashionMNIST"),
        _idx_files(_FASHION_MIRRORS),
    ),
    "cifar10": DatasetSpec(
        "cifar10",
        "CIFAR-10",
        "classify",
        ("cifar10", "cifar-10", "CIFAR10"),
        (FileSpec("batches", (CIFAR_TARBALL, CIFAR_FOLDER), (_CIFAR_URL,)),),
    ),
    "wikitext2": DatasetSpec(
        "wikitext2",
        "WikiText-2",
        "lm",
        ("wikitext-2", "wikitext2", "wikitext-2-v1"),
        (
            FileSpec("train", ("train.txt", "wiki.train.tokens"), tuple(m + "train.txt" for m in _WIKITEXT_MIRRORS), False),
            FileSpec("valid", ("valid.txt", "wiki.valid.tokens"), tuple(m + "valid.txt" for m in _WIKITEXT_MIRRORS)),
            FileSpec("test", ("test.txt", "wiki.test.tokens"), tuple(m + "test.txt" for m in _WIKITEXT_MIRRORS)),
        ),
    ),
    # Local copies in the MLX-LM layout (JSON lines with a "text" field); otherwise the hub via `datasets`.
    "recycling_the_web_1k": DatasetSpec(
        "recycling_the_web_1k",
        "Recycling the Web 1k",
        "lm",
        ("recycling_the_web-1k", "recycling_the_web_1k"),
        (
            FileSpec("train", ("train.jsonl",)),
            FileSpec("valid", ("valid.jsonl",), required=False),
            FileSpec("test", ("test.jsonl",), required=False),
        ),
    ),
    TOKENIZER: DatasetSpec(
        TOKENIZER,
        "GPT-2 BPE",
        "tokenizer",
        ("gpt2",),
        tuple(FileSpec(f, (f,), tuple(m + f for m in _GPT2_MIRRORS)) for f in ("encoder.json", "vocab.bpe")),
    ),
}


def spec(name: str) -> DatasetSpec:
    """The spec of ``name`` (a dataset or ``gpt2``); :class:`UnknownDataset` otherwise."""
    try:
        return SPECS[name]
    except KeyError:
        known = ", ".join((*DATASETS, TOKENIZER, f"{TEXT_PREFIX}PATH"))
        raise UnknownDataset(f"unknown dataset {name!r}: choose one of {known}") from None
