"""The dataset registry: what each dataset is (its title, task and shape) and what it is made of (its
files, the names they may carry, the subfolders they may sit in, the mirrors).

It is the one list of datasets: the loaders, ``data list``/``data fetch`` and the experiments
(``harness.experiments``: a run's model dimensions and protocol, the reports' dataset names) all read it.

A dataset's files are a tuple of :class:`FileInfo`; each is looked for independently (``harness.data.locate``),
and each is checked against its digests (``harness.data.checksums``). The first name of a file is the one
a download writes; the others are accepted alternatives (uncompressed IDX, an extracted CIFAR folder,
WikiText's ``wiki.*.tokens``). ``synthetic`` has no files: it is drawn (``harness.data.blobs``).
"""

from __future__ import annotations

from dataclasses import dataclass

from backends.spec.config import SEQUENCE_LENGTH

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
class FileInfo:
    """One file of a dataset."""

    role: str  # what it holds, e.g. "train-images"
    names: tuple[str, ...]  # accepted names relative to a searched folder, the downloaded one first
    urls: tuple[str, ...] = ()  # full URLs of names[0], tried in order
    required: bool = True


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset: what it is, its files and the folder names it may sit in."""

    name: str
    title: str  # as the reports print it
    task: str  # "classify", "lm" or "tokenizer"
    subdirs: tuple[str, ...]  # folders named after the dataset, looked into inside every searched root
    files: tuple[FileInfo, ...]
    # What ``harness.data.load`` returns, so that a run's full config (and key) is known before its data
    # are read: features and classes of a classification set; sequence length and vocabulary of a corpus.
    input_dim: int = 0
    outputs: int = 0


_IMAGE = (784, 10)  # MNIST and Fashion-MNIST (and the synthetic blobs): 28 x 28 pixels, 10 classes
_CORPUS = (SEQUENCE_LENGTH, 50_257)  # GPT-2 token windows, the GPT-2 vocabulary


def _idx_files(mirrors: tuple[str, ...]) -> tuple[FileInfo, ...]:
    stems = {
        "train-images": "train-images-idx3-ubyte",
        "train-labels": "train-labels-idx1-ubyte",
        "test-images": "t10k-images-idx3-ubyte",
        "test-labels": "t10k-labels-idx1-ubyte",
    }
    return tuple(FileInfo(role, (f"{stem}.gz", stem), tuple(m + f"{stem}.gz" for m in mirrors)) for role, stem in stems.items())


DATASET_INFO: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", "MNIST", "classify", ("mnist", "MNIST"), _idx_files(_MNIST_MIRRORS), *_IMAGE),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist",
        "Fashion-MNIST",
        "classify",
        ("fashion-mnist", "fashion_mnist", "FashionMNIST"),
        _idx_files(_FASHION_MIRRORS),
        *_IMAGE,
    ),
    "cifar10": DatasetInfo(
        "cifar10",
        "CIFAR-10",
        "classify",
        ("cifar10", "cifar-10", "CIFAR10"),
        (FileInfo("batches", (CIFAR_TARBALL, CIFAR_FOLDER), (_CIFAR_URL,)),),
        3072,
        10,
    ),
    "synthetic": DatasetInfo("synthetic", "synthetic blobs", "classify", (), (), *_IMAGE),
    "wikitext2": DatasetInfo(
        "wikitext2",
        "WikiText-2",
        "lm",
        ("wikitext-2", "wikitext2", "wikitext-2-v1"),
        (
            FileInfo("train", ("train.txt", "wiki.train.tokens"), tuple(m + "train.txt" for m in _WIKITEXT_MIRRORS), False),
            FileInfo("valid", ("valid.txt", "wiki.valid.tokens"), tuple(m + "valid.txt" for m in _WIKITEXT_MIRRORS)),
            FileInfo("test", ("test.txt", "wiki.test.tokens"), tuple(m + "test.txt" for m in _WIKITEXT_MIRRORS)),
        ),
        *_CORPUS,
    ),
    # Local copies in the MLX-LM layout (JSON lines with a "text" field); otherwise the hub via `datasets`.
    "recycling_the_web_1k": DatasetInfo(
        "recycling_the_web_1k",
        "Recycling-the-Web-1k",
        "lm",
        ("recycling_the_web-1k", "recycling_the_web_1k"),
        (
            FileInfo("train", ("train.jsonl",)),
            FileInfo("valid", ("valid.jsonl",), required=False),
            FileInfo("test", ("test.jsonl",), required=False),
        ),
        *_CORPUS,
    ),
    TOKENIZER: DatasetInfo(
        TOKENIZER,
        "GPT-2 BPE",
        "tokenizer",
        ("gpt2",),
        tuple(FileInfo(f, (f,), tuple(m + f for m in _GPT2_MIRRORS)) for f in ("encoder.json", "vocab.bpe")),
    ),
}


# The datasets a run can train on (everything but the tokenizer), in the order error messages list them.
TRAINABLE = tuple(name for name, d in DATASET_INFO.items() if d.task != "tokenizer")


def info(name: str) -> DatasetInfo:
    """What ``name`` (a dataset, ``synthetic`` or ``gpt2``) is; :class:`UnknownDataset` otherwise."""
    try:
        return DATASET_INFO[name]
    except KeyError:
        known = ", ".join((*DATASETS, "synthetic", TOKENIZER, f"{TEXT_PREFIX}PATH"))
        raise UnknownDataset(f"unknown dataset {name!r}: choose one of {known}") from None
