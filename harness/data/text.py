"""Language-modelling corpora cut into GPT-2 token windows (the paper's protocol: 1,000 samples of 128 tokens).

Every corpus goes through the same steps:

1. Tokenise with the GPT-2 BPE (``harness.data.tokenizer``; ``encode_ordinary``, so a literal
   ``<|endoftext|>`` in the text is plain text). A corpus made of documents (JSON lines, hub rows) gets
   ``<|endoftext|>`` (50256) after each document.
2. Cut the token stream into non-overlapping windows of 129 tokens from its start (the tail shorter
   than 129 is dropped). Input = the first 128 tokens, target = the last 128 (the input shifted by one).
3. Training samples = the first 1,000 windows of the training text (``num_samples`` changes the
   count), test samples = the first (up to) 1,000 windows of the test text. Token ids are int64.

Which text is which split:

* ``wikitext2``: test = ``test.txt``; train = ``train.txt``, or, where it is absent (as in
  ``/work/shared/data/wikitext-2``, which holds only ``valid.txt`` and ``test.txt``), ``valid.txt``.
* ``recycling_the_web_1k``: train = the ``train`` split; test = the ``test`` split, else the
  ``valid``/``validation`` split, else 10% of the training windows.
* ``text:PATH``: one file; its windows are split 90/10 into train/test.

A 10% hold-out is drawn with ``backends.spec.rng.split_indices(seed, n_windows, n_windows // 10)``
over all windows of the text, before the first 1,000 are kept; both parts keep text order. Each
dataset's ``notes`` say which of these rules applied.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from backends.spec.rng import split_indices

from . import checksums, tokenizer
from .checksums import Overrides
from .dataset import Dataset
from .errors import CorruptFile, DataError, DatasetNotFound, DownloadFailed
from .registry import HUB_RECYCLING
from .search import FoundFile, Located

SEQ_LEN = 128
SAMPLES = 1000  # the paper's training sample count
TEST_SAMPLES = 1000  # evaluation windows kept at most
HELD_OUT_FRACTION = 10  # 1 in 10 windows held out when a corpus has no test split


def windows(tokens: np.ndarray, seq_len: int = SEQ_LEN) -> np.ndarray:
    """Non-overlapping windows of ``seq_len + 1`` tokens from the start of ``tokens`` (int64, tail dropped)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    count = len(tokens) // (seq_len + 1)
    return tokens[: count * (seq_len + 1)].reshape(count, seq_len + 1)


def encode_text(text: str, data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, str]:
    """GPT-2 token ids (int64) of one text, and the tokenizer's source."""
    encoding, source = tokenizer.gpt2(data_dir)
    return np.asarray(encoding.encode_ordinary(text), dtype=np.int64), source


def encode_documents(texts: Sequence[str], data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, str]:
    """GPT-2 token ids of documents joined by ``<|endoftext|>`` (one after each document)."""
    encoding, source = tokenizer.gpt2(data_dir)
    ids = encoding.encode_ordinary_batch(list(texts))
    stream = [np.asarray(doc + [tokenizer.END_OF_TEXT], dtype=np.int64) for doc in ids]
    return (np.concatenate(stream) if stream else np.zeros(0, np.int64)), source


def lm_dataset(
    name: str,
    train_tokens: np.ndarray,
    test_tokens: np.ndarray | None,
    *,
    seed: int,
    num_samples: int | None,
    source: str,
    notes: str,
) -> Dataset:
    """Windows of the training and test token streams as a :class:`Dataset` (``test_tokens=None``: 90/10)."""
    train = windows(train_tokens)
    if test_tokens is None:
        kept, held = split_indices(seed, len(train), len(train) // HELD_OUT_FRACTION)
        train, test = train[kept], train[held]
        notes += (
            f" No test text: {len(held)} of its {len(kept) + len(held)} windows held out with "
            f"backends.spec.rng.split_indices(seed={seed}, n={len(kept) + len(held)}, held_out={len(held)})."
        )
    else:
        test = windows(test_tokens)
    wanted = SAMPLES if num_samples is None else num_samples
    if wanted < 1:
        raise ValueError(f"num_samples must be >= 1, got {wanted}")
    if len(train) == 0 or len(test) == 0:
        raise DataError(f"{name}: too little text for one training and one test window of {SEQ_LEN + 1} tokens")
    train, test = train[:wanted], test[:TEST_SAMPLES]
    notes += (
        f" Windows: non-overlapping {SEQ_LEN + 1}-token windows from the start (input = first {SEQ_LEN}, "
        f"target = shifted by one); kept the first {len(train)} training windows (asked {wanted}) and the "
        f"first {len(test)} test windows."
    )
    return Dataset(
        name=name,
        task="lm",
        x_train=np.ascontiguousarray(train[:, :-1]),
        y_train=np.ascontiguousarray(train[:, 1:]),
        x_test=np.ascontiguousarray(test[:, :-1]),
        y_test=np.ascontiguousarray(test[:, 1:]),
        input_dim=SEQ_LEN,
        num_classes=tokenizer.VOCAB_SIZE,
        source=source,
        notes=notes.strip(),
    )


def _read_text(dataset: str, found: FoundFile, overrides: Overrides | None) -> str:
    data = checksums.read_verified(dataset, found.name, found.path, overrides)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptFile(found.path, f"not UTF-8 text ({exc})") from None


def load_wikitext2(
    located: Located,
    *,
    seed: int = 0,
    num_samples: int | None = None,
    data_dir: str | os.PathLike | None = None,
    overrides: Overrides | None = None,
) -> Dataset:
    """WikiText-2 (module docstring: train from train.txt, else valid.txt; test from test.txt)."""
    located.require()
    train_file = located.file("train")
    if train_file.path is None:
        train_file = located.file("valid")
        how = f"no training text here, so the training windows come from {train_file.name} (the validation split)"
    else:
        how = f"training windows from {train_file.name}"
    test_file = located.file("test")
    train_tokens, bpe = encode_text(_read_text("wikitext2", train_file, overrides), data_dir)
    test_tokens, _ = encode_text(_read_text("wikitext2", test_file, overrides), data_dir)
    return lm_dataset(
        "wikitext2",
        train_tokens,
        test_tokens,
        seed=seed,
        num_samples=num_samples,
        source=f"{train_file.path}; {test_file.path}; tokenizer {bpe}",
        notes=f"WikiText-2: {how}; test windows from {test_file.name}. GPT-2 BPE tokens.",
    )


def load_text_file(
    path: Path,
    *,
    seed: int = 0,
    num_samples: int | None = None,
    data_dir: str | os.PathLike | None = None,
) -> Dataset:
    """Any UTF-8 text file, its windows split 90/10 into train/test (no checksum: none is known)."""
    if not path.is_file():
        raise DatasetNotFound(f"text:{path}", [path.name], [path.parent], hint="pass an existing text file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptFile(path, f"not UTF-8 text ({exc})") from None
    tokens, bpe = encode_text(text, data_dir)
    return lm_dataset(
        f"text:{path}",
        tokens,
        None,
        seed=seed,
        num_samples=num_samples,
        source=f"{path}; tokenizer {bpe}",
        notes=f"Local text file {path} (unverified: no known checksum). GPT-2 BPE tokens.",
    )


def _read_jsonl(path: Path) -> list[str]:
    texts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            texts.append(json.loads(line)["text"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CorruptFile(path, f"line {number} is not a JSON object with a 'text' field ({exc})") from None
    return texts


def hub_available() -> bool:
    """Whether Hugging Face ``datasets`` is importable (tests replace this function)."""
    return importlib.util.find_spec("datasets") is not None


def hub_splits(searched: Sequence[Path]) -> dict[str, list[str]]:
    """The texts of every split of the hub copy, through Hugging Face ``datasets`` (which caches them)."""
    if not hub_available():
        hint = (
            f"there are no local JSON-lines files, and the hub copy {HUB_RECYCLING} needs Hugging Face "
            "`datasets` (pip install datasets) and network access"
        )
        raise DatasetNotFound("recycling_the_web_1k", ["train.jsonl"], searched, hint=hint)
    import datasets

    try:
        splits = datasets.load_dataset(HUB_RECYCLING)
    except Exception as exc:  # the hub raises many kinds of connection and lookup errors
        raise DownloadFailed(f"recycling_the_web_1k: could not load {HUB_RECYCLING} from the hub: {exc}") from exc
    texts = {}
    for split, rows in splits.items():
        if "text" not in rows.column_names:
            raise CorruptFile(HUB_RECYCLING, f"split {split!r} has no 'text' column: {rows.column_names}")
        texts[split] = list(rows["text"])
    return texts


def load_recycling_the_web(
    located: Located,
    *,
    seed: int = 0,
    num_samples: int | None = None,
    data_dir: str | os.PathLike | None = None,
) -> Dataset:
    """Recycling the Web 1k from local JSON lines (``train.jsonl``...) or the hub through ``datasets``."""
    if located.complete:
        files = {f.role: f.path for f in located.files if f.path is not None}
        splits = {role: _read_jsonl(path) for role, path in files.items()}
        where = "; ".join(str(p) for p in files.values())
    else:
        splits = hub_splits(located.searched)
        where = f"hub {HUB_RECYCLING}"
    if "train" not in splits:
        raise CorruptFile(where, f"no 'train' split (splits: {sorted(splits)})")
    test_split = next((s for s in ("test", "valid", "validation") if s in splits), None)
    train_tokens, bpe = encode_documents(splits["train"], data_dir)
    test_tokens = encode_documents(splits[test_split], data_dir)[0] if test_split else None
    notes = (
        f"Recycling the Web 1k ({where}): training windows from the 'train' split, "
        + (f"test windows from the {test_split!r} split." if test_split else "no test split.")
        + " Documents joined by <|endoftext|>; GPT-2 BPE tokens."
    )
    return lm_dataset(
        "recycling_the_web_1k",
        train_tokens,
        test_tokens,
        seed=seed,
        num_samples=num_samples,
        source=f"{where}; tokenizer {bpe}",
        notes=notes,
    )
