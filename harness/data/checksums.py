"""Known digests of every dataset file, and the check run on each file before it is used.

``KNOWN[(dataset, name)]`` lists the accepted digests (md5: 32 hex digits, sha256: 64) of the file
``name`` (relative to the folder it is found in). Where they come from:

* MNIST ``*.gz``: the canonical md5s published with the dataset (also torchvision's). The uncompressed
  files: md5 of the decompressed canonical ``.gz`` (the test ones computed here from
  ``/work/shared/data/mnist``; the train ones as published by many independent loaders, with sizes
  47,040,016 and 60,008 bytes).
* Fashion-MNIST ``*.gz``: the md5s published by Zalando, plus the md5s of Debian's package
  ``dataset-fashion-mnist`` 0.0~git20200523.55506a9-1 (``/var/lib/dpkg/info/dataset-fashion-mnist.md5sums``).
  Debian recompressed the files (gzip mtime 2020-06-05), so their ``.gz`` bytes differ from Zalando's;
  their decompressed contents equal the md5s of the uncompressed release listed here (torchvision's
  ``raw_data`` md5s), which was checked on this machine.
* CIFAR-10: the md5 of the published tarball, and the md5s of the extracted pickle batches as listed by
  torchvision's ``CIFAR10.train_list``/``test_list`` (the batches of that tarball).
* WikiText-2 ``*.txt``: sha256 of pytorch/examples ``word_language_model/data/wikitext-2`` (commit
  acc295dc; valid/test computed here from ``/work/shared/data/wikitext-2``). The Salesforce names
  ``wiki.*.tokens`` have no published digest here: they are "unchecked".
* GPT-2 BPE: the sha256s that tiktoken itself checks (``tiktoken_ext/openai_public.py``).

A ``.gz`` whose own digest is unknown is still accepted when its decompressed bytes match the digest of
the uncompressed name (a repackager's recompression); anything else is a :class:`ChecksumMismatch`.
Callers (tests, private copies) may pass ``overrides={name: digest or digests}`` to replace the known
digests of a name.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import ChecksumMismatch, CorruptFile

Overrides = Mapping[str, "str | Sequence[str]"]

KNOWN: dict[tuple[str, str], tuple[str, ...]] = {
    ("mnist", "train-images-idx3-ubyte.gz"): ("f68b3c2dcbeaaa9fbdd348bbdeb94873",),
    ("mnist", "train-labels-idx1-ubyte.gz"): ("d53e105ee54ea40749a09fcbcd1e9432",),
    ("mnist", "t10k-images-idx3-ubyte.gz"): ("9fb629c4189551a2d022fa330f9573f3",),
    ("mnist", "t10k-labels-idx1-ubyte.gz"): ("ec29112dd5afa0611ce80d1b7f02629c",),
    ("mnist", "train-images-idx3-ubyte"): ("6bbc9ace898e44ae57da46a324031adb",),
    ("mnist", "train-labels-idx1-ubyte"): ("a25bea736e30d166cdddb491f175f624",),
    ("mnist", "t10k-images-idx3-ubyte"): ("2646ac647ad5339dbf082846283269ea",),
    ("mnist", "t10k-labels-idx1-ubyte"): ("27ae3e4e09519cfbb04c329615203637",),
    # Zalando's published md5, then Debian's recompressed file.
    ("fashion_mnist", "train-images-idx3-ubyte.gz"): (
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "cf8536b0aa1a6ac5fa3f23001093305c",
    ),
    ("fashion_mnist", "train-labels-idx1-ubyte.gz"): (
        "25c81989df183df01b3e8a0aad5dffbe",
        "10bea18fdb374794d4bb42e356e600c9",
    ),
    ("fashion_mnist", "t10k-images-idx3-ubyte.gz"): (
        "bef4ecab320f06d8554ea6380940ec79",
        "f78720b4224f21cce2f2ccf2d7a94c9a",
    ),
    ("fashion_mnist", "t10k-labels-idx1-ubyte.gz"): (
        "bb300cfdad3c16e7a12a480ee83cd310",
        "0d30e22e447f3c33dab9ed536400ac01",
    ),
    ("fashion_mnist", "train-images-idx3-ubyte"): ("f4a8712d7a061bf5bd6d2ca38dc4d50a",),
    ("fashion_mnist", "train-labels-idx1-ubyte"): ("9018921c3c673c538a1fc5bad174d6f9",),
    ("fashion_mnist", "t10k-images-idx3-ubyte"): ("8181f5470baa50b63fa0f6fddb340f0a",),
    ("fashion_mnist", "t10k-labels-idx1-ubyte"): ("15d484375f8d13e6eb1aabb0c3f46965",),
    ("cifar10", "cifar-10-python.tar.gz"): ("c58f30108f718f92721af3b95e74349a",),
    ("cifar10", "cifar-10-batches-py/data_batch_1"): ("c99cafc152244af753f735de768cd75f",),
    ("cifar10", "cifar-10-batches-py/data_batch_2"): ("d4bba439e000b95fd0a9bffe97cbabec",),
    ("cifar10", "cifar-10-batches-py/data_batch_3"): ("54ebc095f3ab1f0389bbae665268c751",),
    ("cifar10", "cifar-10-batches-py/data_batch_4"): ("634d18415352ddfa80567beed471001a",),
    ("cifar10", "cifar-10-batches-py/data_batch_5"): ("482c414d41f54cd18b22e5b47cb7c3cb",),
    ("cifar10", "cifar-10-batches-py/test_batch"): ("40351d587109b95175f43aff81a1287e",),
    ("wikitext2", "train.txt"): ("9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f",),
    ("wikitext2", "valid.txt"): ("f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",),
    ("wikitext2", "test.txt"): ("d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",),
    ("gpt2", "encoder.json"): ("196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",),
    ("gpt2", "vocab.bpe"): ("1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",),
}

_ALGORITHMS = {32: "md5", 64: "sha256"}

# Every file this process checked, by path: its dataset, name and digests (``loaded()``; the environment
# fingerprint of a run records them, so a record says which bytes it was trained and tested on).
_LOADED: dict[str, dict] = {}


def loaded() -> list[dict]:
    """The files checked so far in this process, sorted by path: ``{"dataset", "name", "path", "status", digests...}``."""
    return [_LOADED[k] for k in sorted(_LOADED)]


def _note(dataset: str, name: str, path: Path, data: bytes, verdict: Verdict) -> Verdict:
    digests = dict(zip((_ALGORITHMS.get(len(d), "sha256") for d in verdict.actual), verdict.actual)) if verdict.actual else {}
    if not digests or verdict.detail:  # unchecked, mismatched or recompressed: the file's own sha256
        digests = {"sha256": hashlib.sha256(data).hexdigest()}
    _LOADED[str(path)] = {"dataset": dataset, "name": name, "path": str(path), "status": verdict.status, **digests}
    return verdict


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one file (or folder) against its known digests."""

    status: str  # "ok", "mismatch", "missing" (a folder lacks a member) or "unchecked" (no digest known)
    path: Path
    expected: tuple[str, ...] = ()
    actual: tuple[str, ...] = ()
    detail: str = ""

    def raise_if_bad(self) -> None:
        """Raise the error this verdict stands for; return quietly for "ok" and "unchecked"."""
        if self.status == "mismatch":
            raise ChecksumMismatch(self.path, self.expected, self.actual, self.detail)
        if self.status == "missing":
            raise CorruptFile(self.path, f"incomplete: {self.detail}")


def expected_digests(dataset: str, name: str, overrides: Overrides | None = None) -> tuple[str, ...]:
    """The accepted digests of file ``name`` of ``dataset`` (overrides first, then ``KNOWN``)."""
    if overrides and name in overrides:
        given = overrides[name]
        return (given,) if isinstance(given, str) else tuple(given)
    return KNOWN.get((dataset, name), ())


def hexdigests(data: bytes, expected: Sequence[str]) -> dict[str, str]:
    """Digests of ``data`` under every algorithm that ``expected`` uses, keyed by algorithm name."""
    algorithms = {_ALGORITHMS.get(len(e), "sha256") for e in expected} or {"md5"}
    return {a: hashlib.new(a, data).hexdigest() for a in sorted(algorithms)}


def identify(digest: str) -> str | None:
    """Which known file has ``digest`` (to say "this is Fashion-MNIST's file" on a mix-up)."""
    for (dataset, name), digests in KNOWN.items():
        if digest in digests:
            return f"{dataset}/{name}"
    return None


def check_bytes(dataset: str, name: str, path: Path, data: bytes, overrides: Overrides | None = None) -> Verdict:
    """Check the bytes ``data`` read from ``path`` (file ``name`` of ``dataset``); the file and its digest
    are noted for :func:`loaded`."""
    return _note(dataset, name, path, data, _check_bytes(dataset, name, path, data, overrides))


def _check_bytes(dataset: str, name: str, path: Path, data: bytes, overrides: Overrides | None) -> Verdict:
    expected = expected_digests(dataset, name, overrides)
    if not expected:
        return Verdict("unchecked", path)
    actual = hexdigests(data, expected)
    if set(actual.values()) & set(expected):
        return Verdict("ok", path, expected, tuple(actual.values()))
    labelled = tuple(f"{a} {d}" for a, d in actual.items())
    detail = ""
    if name.endswith(".gz") and (inner := expected_digests(dataset, name[:-3], overrides)):
        # A recompressed .gz (e.g. Debian's) is accepted when its contents are the known uncompressed file.
        try:
            content = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            detail = f"; the gzip stream is also unreadable ({exc})"
        else:
            inner_actual = hexdigests(content, inner)
            if set(inner_actual.values()) & set(inner):
                return Verdict("ok", path, inner, tuple(inner_actual.values()), "decompressed contents match")
            expected = expected + tuple(f"{e} (decompressed)" for e in inner)
            labelled += tuple(f"{a} {d} (decompressed)" for a, d in inner_actual.items())
    owners = {o for d in actual.values() if (o := identify(d))}
    if owners:
        detail += f"; this file is {', '.join(sorted(owners))}, not {dataset}/{name}"
    return Verdict("mismatch", path, expected, labelled, detail)


def verify(dataset: str, name: str, path: Path, overrides: Overrides | None = None) -> Verdict:
    """Check the file (or, for a folder such as ``cifar-10-batches-py``, each known member) at ``path``."""
    if not path.is_dir():
        return check_bytes(dataset, name, path, path.read_bytes(), overrides)
    members = sorted(key.split("/", 1)[1] for d, key in KNOWN if d == dataset and key.startswith(f"{name}/"))
    verdicts = []
    for member in members:
        if not (path / member).is_file():
            return Verdict("missing", path, detail=f"{member} is missing")
        verdicts.append(verify(dataset, f"{name}/{member}", path / member, overrides))
    bad = [v for v in verdicts if v.status != "ok"]
    return bad[0] if bad else Verdict("ok", path)


def read_verified(dataset: str, name: str, path: Path, overrides: Overrides | None = None) -> bytes:
    """The bytes of ``path`` once they passed :func:`check_bytes`; raises :class:`ChecksumMismatch` otherwise."""
    data = path.read_bytes()
    check_bytes(dataset, name, path, data, overrides).raise_if_bad()
    return data
