"""Downloads (never on the network: ``fetch.download_url`` is replaced) and the ``data`` CLI."""

from __future__ import annotations

import argparse
import io
import urllib.error

import numpy as np
import pytest

import harness.data as data
from harness.data import fetch
from harness.data.cli import add_command, run_data_command
from tests.data_fixtures import IDX_STEMS, isolate, write_mnist


@pytest.fixture(autouse=True)
def cache(monkeypatch, tmp_path):
    return isolate(monkeypatch, tmp_path)


@pytest.fixture
def offline(monkeypatch):
    calls = []

    def refuse(url, dest, *, desc, progress=True):
        calls.append(url)
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(fetch, "download_url", refuse)
    return calls


@pytest.fixture
def mirror(monkeypatch, tmp_path):
    """A fake mirror serving the files of a fixture folder by name."""
    served = tmp_path / "mirror"
    calls = []

    def serve(url, dest, *, desc, progress=True):
        calls.append(url)
        dest.write_bytes((served / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(fetch, "download_url", serve)
    return served, calls


def run_cli(*argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    add_command(parser.add_subparsers(dest="command"))
    out = io.StringIO()
    return run_data_command(parser.parse_args(list(argv)), out), out.getvalue()


def test_offline_fetch_is_a_clear_error(offline, cache):
    with pytest.raises(data.DownloadFailed) as info:
        fetch.fetch("mnist", progress=False)
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message and "no network in tests" in message
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz" in message
    assert offline[-1] == "http://yann.lecun.com/exdb/mnist/train-images-idx3-ubyte.gz"  # every mirror tried
    assert not (cache / "mnist").exists()


def test_offline_cli_fetch_exits_non_zero(offline, capsys):
    code, out = run_cli("data", "fetch", "cifar10", "--quiet")
    assert code == 1 and out == ""
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in capsys.readouterr().err


def test_load_with_download_goes_through_the_mirrors(offline):
    with pytest.raises(data.DownloadFailed):
        data.load("fashion_mnist", download=True)
    assert offline and offline[0].startswith("https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/")


def test_fetch_verifies_and_stores_in_the_cache(mirror, cache):
    served, calls = mirror
    arrays, overrides = write_mnist(served)
    located = fetch.fetch("mnist", overrides=overrides, progress=False)
    assert located.status == "ok" and located.directories == (cache / "mnist",)
    assert len(calls) == 4 and all(url.startswith("https://ossci-datasets.s3.amazonaws.com/") for url in calls)
    ds = data.load("mnist", checksums=overrides)
    np.testing.assert_array_equal(ds.y_test, arrays["test-labels"])
    calls.clear()
    fetch.fetch("mnist", overrides=overrides, progress=False)
    assert calls == []  # intact files are not downloaded again


def test_wrong_bytes_from_every_mirror_are_not_kept(mirror, cache):
    served, calls = mirror
    write_mnist(served)  # fixture bytes, but the real published md5s are expected
    with pytest.raises(data.DownloadFailed, match="checksum mismatch: expected f68b3c2dcbeaaa9fbdd348bbdeb94873"):
        fetch.fetch("mnist", progress=False)
    assert len(calls) == 3
    assert not list(cache.rglob("*idx*"))


def test_load_download_fetches_missing_files(mirror, cache):
    served, _ = mirror
    arrays, overrides = write_mnist(served, n_train=5)
    ds = data.load("mnist", download=True, checksums=overrides)
    assert ds.x_train.shape == (5, 784)
    assert ds.source.startswith(str(cache / "mnist" / "train-images-idx3-ubyte.gz"))


def test_cli_list_reports_status_counts_and_location(tmp_path, cache):
    write_mnist(tmp_path / "d" / "mnist", n_train=6, n_test=4)
    code, out = run_cli("data", "list", "--data-dir", str(tmp_path / "d"))
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(lines) == {*data.DATASETS, "gpt2"}
    # The fixture files are not the published ones: found, counted from their headers, flagged.
    assert lines["mnist"].split()[1:4] == ["mismatch", "6", "4"]
    assert str(tmp_path / "d" / "mnist") in lines["mnist"]
    for name in ("fashion_mnist", "cifar10", "wikitext2"):
        assert lines[name].split()[1:5] == ["missing", "-", "-", "missing"]


def test_cli_list_ok_for_verified_files(tmp_path, monkeypatch):
    _, overrides = write_mnist(tmp_path / "d" / "mnist", n_train=3, n_test=2)
    for stem in IDX_STEMS.values():
        monkeypatch.setitem(data.checksums.KNOWN, ("mnist", f"{stem}.gz"), (overrides[f"{stem}.gz"],))
    code, out = run_cli("data", "list", "--data-dir", str(tmp_path / "d"))
    line = next(line for line in out.splitlines() if line.startswith("mnist "))
    assert code == 0 and line.split()[1:4] == ["ok", "3", "2"]


def test_main_parser_data_dir_is_not_reset_by_the_subcommand(tmp_path):
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir")
    add_command(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["--data-dir", "X", "data", "list"]).data_dir == "X"
    assert parser.parse_args(["data", "fetch", "mnist", "--data-dir", "Y"]).data_dir == "Y"
