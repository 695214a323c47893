"""``data list`` and ``data fetch NAME`` for the harness CLI (``python -m harness data ...``).

:func:`add_command` registers ``data`` the way every subcommand of ``harness.cli`` is registered:
it adds the parser and sets :func:`run_data_command` as its handler. It also works on its own::

    parser = argparse.ArgumentParser(); add_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "list"]); args.func(args)
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from . import DATASETS, DataError, Located, idx, load, locate
from . import fetch as fetching
from .registry import HUB_RECYCLING, TOKENIZER


def add_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``data list`` and ``data fetch NAME [--data-dir DIR]`` to ``subparsers``, handled by
    :func:`run_data_command`; returns the ``data`` parser."""
    data = subparsers.add_parser("data", help="list or download the datasets", description=__doc__.splitlines()[0])
    commands = data.add_subparsers(dest="data_command", metavar="{list,fetch}", required=True)
    # SUPPRESS keeps a --data-dir given to the main parser from being reset by the subcommand's default.
    data_dir = {"default": argparse.SUPPRESS, "metavar": "DIR", "help": "folder searched first"}
    listing = commands.add_parser("list", help="where each dataset is, its sample counts and checksum status")
    listing.add_argument("--data-dir", **data_dir)
    fetch = commands.add_parser("fetch", help="download a dataset into the cache and verify its checksums")
    fetch.add_argument("name", choices=(*DATASETS, TOKENIZER), help="dataset to download")
    fetch.add_argument("--data-dir", **data_dir)
    fetch.add_argument("--quiet", action="store_true", help="no progress bar")
    data.set_defaults(func=run_data_command)
    return data


def run_data_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run the ``data`` subcommand in ``args``; 0 on success, 1 on a data error (printed to stderr)."""
    out = out or sys.stdout
    data_dir = getattr(args, "data_dir", None)
    try:
        if args.data_command == "list":
            list_datasets(data_dir, out)
        elif args.data_command == "fetch":
            located = fetching.fetch(args.name, data_dir, progress=not getattr(args, "quiet", False))
            print(f"{args.name}: ok ({located})", file=out)
        else:
            raise ValueError(f"unknown data command {args.data_command!r}")
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def sample_counts(name: str, located: Located, data_dir) -> tuple[str, str]:
    """Train and test sample counts as text ("-" where a split is missing, "?" where it is unreadable)."""
    if name in ("mnist", "fashion_mnist"):
        counts = []
        for split in ("train", "test"):
            found = located.file(f"{split}-images")
            counts.append(str(idx.count(found.path)) if found.path else "-")
        return counts[0], counts[1]
    if not located.complete or located.status == "mismatch" or name == TOKENIZER:
        return "-", "-"
    dataset = load(name, data_dir)
    return str(len(dataset.x_train)), str(len(dataset.x_test))


def describe(name: str, located: Located) -> str:
    """Where the files are, and which are missing or bad."""
    where = ", ".join(str(d) for d in located.directories) or "missing"
    missing = [f.names[0] for f in located.files if f.path is None and f.required]
    bad = [f.verdict for f in located.files if f.verdict is not None and f.status in ("mismatch", "missing")]
    for verdict in bad:
        where += f" ({verdict.path}: {'checksum mismatch' if verdict.status == 'mismatch' else verdict.detail})"
    if missing and located.directories:
        where += f" (missing: {', '.join(missing)})"
    if name == "recycling_the_web_1k" and not located.complete:
        where += f" (otherwise the hub: {HUB_RECYCLING} through Hugging Face `datasets`)"
    return where


def list_datasets(data_dir=None, out: TextIO | None = None) -> None:
    """Print one line per dataset (and the GPT-2 tokenizer): checksum status, sample counts, location."""
    out = out or sys.stdout
    print(f"{'dataset':<22}{'checksum':<11}{'train':>7}{'test':>7}  location", file=out)
    for name in (*DATASETS, TOKENIZER):
        located = locate(name, data_dir)
        try:
            train, test = sample_counts(name, located, data_dir)
        except DataError:
            train, test = "?", "?"
        label = f"{name} (tokenizer)" if name == TOKENIZER else name
        print(f"{label:<22}{located.status:<11}{train:>7}{test:>7}  {describe(name, located)}", file=out)
