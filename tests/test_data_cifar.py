"""CIFAR-10: pickle batches from a folder or the tarball, checksums, and structural validation."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

import harness.data as data
from harness.data import cifar
from tests.data_fixtures import cifar_batches, isolate, md5, write_cifar_folder, write_cifar_tarball


@pytest.fixture(autouse=True)
def cache(monkeypatch, tmp_path):
    return isolate(monkeypatch, tmp_path)


def expected_arrays(batches):
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    x_train = np.concatenate([b[b"data"] for b in train]).astype(np.float32) / np.float32(255)
    y_train = np.concatenate([b[b"labels"] for b in train]).astype(np.int64)
    return x_train, y_train


def test_folder_of_pickles(tmp_path):
    batches = cifar_batches(n=3)
    overrides = write_cifar_folder(tmp_path / "d", batches)
    ds = data.load("cifar10", data_dir=tmp_path / "d", checksums=overrides)
    assert (ds.input_dim, ds.num_classes, ds.task) == (3072, 10, "classify")
    assert ds.x_train.shape == (15, 3072) and ds.x_test.shape == (3, 3072)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    x_train, y_train = expected_arrays(batches)
    np.testing.assert_array_equal(ds.x_train, x_train)
    np.testing.assert_array_equal(ds.y_train, y_train)
    np.testing.assert_array_equal(ds.y_test, batches["test_batch"][b"labels"])
    # Channel-first as in the pickle: green pixel (row 2, col 5) of test image 1 is feature 1024 + 2 * 32 + 5.
    assert ds.x_test[1, 1024 + 2 * 32 + 5] == np.float32(batches["test_batch"][b"data"][1, 1024 + 69]) / np.float32(255)
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0


def test_tarball_gives_the_same_arrays_as_the_folder(tmp_path):
    batches = cifar_batches(n=2)
    from_folder = data.load("cifar10", tmp_path / "a", checksums=write_cifar_folder(tmp_path / "a", batches))
    overrides = write_cifar_tarball(tmp_path / "b" / "cifar10", batches)
    from_tarball = data.load("cifar10", tmp_path / "b", checksums=overrides)
    assert from_tarball.source == str(tmp_path / "b" / "cifar10" / "cifar-10-python.tar.gz")
    for field in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(from_tarball, field), getattr(from_folder, field))


def test_tarball_checksum_mismatch_names_the_published_md5(tmp_path):
    write_cifar_tarball(tmp_path / "d", cifar_batches(n=1))
    path = tmp_path / "d" / "cifar-10-python.tar.gz"
    located = data.locate("cifar10", tmp_path / "d")
    assert located.status == "mismatch"
    with pytest.raises(data.ChecksumMismatch) as info:
        data.load("cifar10", tmp_path / "d")
    message = str(info.value)
    assert str(path) in message and "c58f30108f718f92721af3b95e74349a" in message and md5(path) in message


def test_extracted_batches_are_checked_against_their_md5s(tmp_path):
    write_cifar_folder(tmp_path / "d", cifar_batches(n=1))
    with pytest.raises(data.ChecksumMismatch) as info:
        data.load("cifar10", tmp_path / "d")
    assert "c99cafc152244af753f735de768cd75f" in str(info.value)  # data_batch_1's published md5
    assert info.value.path == tmp_path / "d" / "cifar-10-batches-py" / "data_batch_1"


def test_incomplete_folder(tmp_path):
    overrides = write_cifar_folder(tmp_path / "d", cifar_batches(n=1))
    os.remove(tmp_path / "d" / "cifar-10-batches-py" / "data_batch_4")
    assert data.locate("cifar10", tmp_path / "d", checksums=overrides).status == "missing"
    with pytest.raises(data.CorruptFile, match="data_batch_4 is missing"):
        data.load("cifar10", tmp_path / "d", checksums=overrides)


def test_truncated_tarball_with_matching_checksum_is_corrupt(tmp_path):
    write_cifar_tarball(tmp_path / "d", cifar_batches(n=2))
    path = tmp_path / "d" / "cifar-10-python.tar.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(data.CorruptFile, match="unreadable tarball"):
        data.load("cifar10", tmp_path / "d", checksums={path.name: md5(path)})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b.pop(b"labels"), "expected a dict with keys b'data' and b'labels'"),
        (lambda b: b.update({b"data": b[b"data"][:, :3000]}), r"uint8 of shape \(n, 3072\)"),
        (lambda b: b.update({b"data": b[b"data"].astype(np.float64)}), r"uint8 of shape \(n, 3072\)"),
        (lambda b: b.update({b"labels": b[b"labels"][:-1]}), "2 images but labels of shape"),
        (lambda b: b.update({b"labels": [10, 0]}), r"labels out of range 0\.\.9"),
    ],
)
def test_structural_checks(tmp_path, change, message):
    batches = cifar_batches(n=2)
    change(batches["data_batch_3"])
    overrides = write_cifar_folder(tmp_path / "d", batches)
    with pytest.raises(data.CorruptFile, match=message) as info:
        data.load("cifar10", tmp_path / "d", checksums=overrides)
    assert "data_batch_3" in str(info.value)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_pickle_cannot_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(data.CorruptFile, match="forbidden global"):
        cifar.parse_batch("evil", pickle.dumps({b"data": _Exploit(), b"labels": []}, protocol=2))
    assert not (tmp_path / "pwned").exists()


def test_missing_cifar_names_both_forms_and_the_fetch_command(tmp_path):
    with pytest.raises(data.DatasetNotFound) as info:
        data.load("cifar10", tmp_path / "none")
    message = str(info.value)
    assert "cifar-10-python.tar.gz (or cifar-10-batches-py)" in message
    assert str(tmp_path / "none" / "cifar10") in message
    assert "python -m harness data fetch cifar10" in message
