"""The GPT-2 byte-level BPE (tiktoken's ``gpt2`` encoding: 50,257 tokens, ``<|endoftext|>`` = 50256).

Built from local ``encoder.json`` and ``vocab.bpe`` when they are found (``$DYNAMOE_GPT2_DIR``, then
the ``gpt2/`` subfolder of every data root, which includes ``<repository>/../shared/data/gpt2``), after
checking the sha256s that tiktoken itself checks, with tiktoken's own loader and the same pattern and
special token as ``tiktoken.get_encoding("gpt2")``. Otherwise tiktoken's cache or download is used.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from pathlib import Path

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks
from tiktoken_ext import openai_public

from . import checksums
from .errors import DatasetNotFound, fetch_command
from .registry import TOKENIZER
from .search import locate

VOCAB_SIZE = 50257
END_OF_TEXT = 50256
# tiktoken >= 0.8 names its faster equivalent of the GPT-2 release pattern; older versions inline this one.
PATTERN = getattr(openai_public, "r50k_pat_str", r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


@contextlib.contextmanager
def _tiktoken_cache_off() -> Iterator[None]:
    # tiktoken copies even local files into its cache; an empty TIKTOKEN_CACHE_DIR turns that off.
    previous = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = ""
    try:
        yield
    finally:
        if previous is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = previous


@functools.lru_cache(maxsize=4)
def encoding_from_files(encoder_json: Path, vocab_bpe: Path) -> tiktoken.Encoding:
    """The ``gpt2`` encoding built from local ``encoder.json`` and ``vocab.bpe`` files (verified first)."""
    paths = {"encoder.json": encoder_json, "vocab.bpe": vocab_bpe}
    for name, path in paths.items():
        checksums.verify(TOKENIZER, name, path).raise_if_bad()
    with _tiktoken_cache_off():
        ranks = data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=str(paths["vocab.bpe"]),
            encoder_json_file=str(paths["encoder.json"]),
            vocab_bpe_hash=checksums.KNOWN[(TOKENIZER, "vocab.bpe")][0],
            encoder_json_hash=checksums.KNOWN[(TOKENIZER, "encoder.json")][0],
        )
    return tiktoken.Encoding(
        name="gpt2",
        explicit_n_vocab=VOCAB_SIZE,
        pat_str=PATTERN,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": END_OF_TEXT},
    )


def tiktoken_fallback() -> tiktoken.Encoding:
    """tiktoken's own ``gpt2`` (its cache, else a download by tiktoken); tests replace this function."""
    return tiktoken.get_encoding("gpt2")


def gpt2(data_dir: str | os.PathLike | None = None) -> tuple[tiktoken.Encoding, str]:
    """The GPT-2 encoding and where it came from (a folder, or tiktoken's cache/download)."""
    found = locate(TOKENIZER, data_dir, verify=False)
    if found.complete:
        encoder_json, vocab_bpe = found.file("encoder.json").path, found.file("vocab.bpe").path
        return encoding_from_files(encoder_json, vocab_bpe), f"{encoder_json}; {vocab_bpe}"
    try:
        return tiktoken_fallback(), "tiktoken gpt2 (its cache or download)"
    except Exception as exc:  # tiktoken raises requests' errors, ValueError on a bad hash, ...
        hint = (
            f"tiktoken could not load it either ({type(exc).__name__}: {exc}); run `{fetch_command(TOKENIZER)}`, "
            "set DYNAMOE_GPT2_DIR, or put the files in DATA_DIR/gpt2"
        )
        missing = ["encoder.json", "vocab.bpe"]
        raise DatasetNotFound(TOKENIZER, missing, found.searched, [f.path for f in found.files if f.path], hint) from exc
