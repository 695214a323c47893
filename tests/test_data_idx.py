"""MNIST / Fashion-MNIST: IDX parsing, checksums, structural errors, search order, and the real files."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

import harness.data as data
from harness.data import checksums, idx
from tests.data_fixtures import IDX_STEMS, SHARED_DATA, isolate, md5, write_idx, write_mnist

MNIST_TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
FASHION_DIR = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(autouse=True)
def cache(monkeypatch, tmp_path):
    return isolate(monkeypatch, tmp_path)


def test_fixture_loads_with_the_documented_normalisation(tmp_path):
    arrays, overrides = write_mnist(tmp_path / "d", n_train=6, n_test=4)
    ds = data.load("mnist", data_dir=tmp_path / "d", checksums=overrides)
    assert (ds.task, ds.input_dim, ds.num_classes) == ("classify", 784, 10)
    assert ds.x_train.shape == (6, 784) and ds.x_test.shape == (4, 784)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    # Row-major flattening: pixel (r, c) of image i lands at feature r * 28 + c, scaled by 1/255.
    images = arrays["train-images"]
    assert ds.x_train[2, 5 * 28 + 17] == np.float32(images[2, 5, 17]) / np.float32(255)
    np.testing.assert_array_equal(ds.x_train, images.reshape(6, -1).astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(ds.y_test, arrays["test-labels"].astype(np.int64))
    assert str(tmp_path / "d" / "train-images-idx3-ubyte.gz") in ds.source


def test_uncompressed_files_are_accepted(tmp_path):
    arrays, overrides = write_mnist(tmp_path / "d", gz=False)
    ds = data.load("mnist", data_dir=tmp_path / "d", checksums=overrides)
    np.testing.assert_array_equal(ds.y_train, arrays["train-labels"])
    assert "t10k-images-idx3-ubyte;" in ds.source + ";" and ".gz" not in ds.source


def test_num_samples_keeps_the_first_training_samples(tmp_path):
    arrays, overrides = write_mnist(tmp_path / "d", n_train=6)
    ds = data.load("mnist", data_dir=tmp_path / "d", checksums=overrides, num_samples=4)
    assert ds.x_train.shape == (4, 784) and ds.x_test.shape == (4, 784)
    np.testing.assert_array_equal(ds.y_train, arrays["train-labels"][:4])
    assert "first 4" in ds.notes


def test_checksum_mismatch_names_the_file_and_both_checksums(tmp_path):
    write_mnist(tmp_path / "d")
    path = tmp_path / "d" / "train-images-idx3-ubyte.gz"
    with pytest.raises(data.ChecksumMismatch) as info:
        data.load("mnist", data_dir=tmp_path / "d")
    message = str(info.value)
    assert str(path) in message
    assert "f68b3c2dcbeaaa9fbdd348bbdeb94873" in message  # the published md5
    assert md5(path) in message  # the actual one
    assert info.value.path == path


def test_recompressed_gzip_is_accepted_by_its_decompressed_checksum(tmp_path):
    # Debian's Fashion-MNIST files are recompressed: only their contents match the published release.
    arrays, _ = write_mnist(tmp_path / "d")
    overrides = {}
    for stem in IDX_STEMS.values():
        path = tmp_path / "d" / f"{stem}.gz"
        content = gzip.decompress(path.read_bytes())
        path.write_bytes(gzip.compress(content, mtime=123456))
        overrides[f"{stem}.gz"] = "0" * 32  # the .gz digest no longer matches ...
        overrides[stem] = checksums.hexdigests(content, ["0" * 32])["md5"]  # ... the contents do
    located = data.locate("mnist", tmp_path / "d", checksums=overrides)
    assert located.status == "ok"
    assert located.file("train-images").verdict.detail == "decompressed contents match"
    ds = data.load("mnist", data_dir=tmp_path / "d", checksums=overrides)
    np.testing.assert_array_equal(ds.y_train, arrays["train-labels"])


def test_truncated_gzip_is_a_checksum_mismatch_and_a_corrupt_stream(tmp_path):
    _, overrides = write_mnist(tmp_path / "d")
    path = tmp_path / "d" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(data.ChecksumMismatch, match="gzip stream is also unreadable"):
        data.load("mnist", data_dir=tmp_path / "d")
    overrides[path.name] = md5(path)  # even with a matching checksum, the stream itself is rejected
    with pytest.raises(data.CorruptFile, match="truncated or corrupt gzip stream") as info:
        data.load("mnist", data_dir=tmp_path / "d", checksums=overrides)
    assert not isinstance(info.value, data.ChecksumMismatch) and info.value.path == path


def test_wrong_magic_number(tmp_path):
    arrays, overrides = write_mnist(tmp_path / "d")
    path = write_idx(tmp_path / "d" / "t10k-labels-idx1-ubyte.gz", arrays["test-labels"], magic=0x00000803)
    overrides[path.name] = md5(path)
    with pytest.raises(data.CorruptFile, match=r"wrong IDX magic number 0x00000803, expected 0x00000801") as info:
        data.load("mnist", data_dir=tmp_path / "d", checksums=overrides)
    assert info.value.path == path


def test_label_image_count_mismatch(tmp_path):
    arrays, overrides = write_mnist(tmp_path / "d", n_train=6)
    path = write_idx(tmp_path / "d" / "train-labels-idx1-ubyte.gz", arrays["train-labels"][:5])
    overrides[path.name] = md5(path)
    with pytest.raises(data.CorruptFile, match="6 images but 5 labels"):
        data.load("mnist", data_dir=tmp_path / "d", checksums=overrides)


def test_payload_shorter_than_its_header(tmp_path):
    arrays, overrides = write_mnist(tmp_path / "d")
    raw = idx.IMAGE_MAGIC.to_bytes(4, "big") + (6).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    path = tmp_path / "d" / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(raw + arrays["train-images"].tobytes()[:-1]))
    overrides[path.name] = md5(path)
    with pytest.raises(data.CorruptFile, match="IDX payload of 4703 bytes, header .* needs 4704"):
        data.load("mnist", data_dir=tmp_path / "d", checksums=overrides)


def test_missing_files_name_dataset_files_directories_and_fetch_command(tmp_path, cache):
    with pytest.raises(data.DatasetNotFound) as info:
        data.load("fashion_mnist", data_dir=tmp_path / "empty")
    message = str(info.value)
    assert "'fashion_mnist'" in message
    for stem in IDX_STEMS.values():
        assert f"{stem}.gz" in message
    for searched in (tmp_path / "empty" / "fashion-mnist", tmp_path / "empty", cache / "fashion-mnist", cache):
        assert f"  {searched}\n" in message
    assert "python -m harness data fetch fashion_mnist" in message
    assert info.value.searched[0] == tmp_path / "empty" / "fashion-mnist"


def test_search_order_explicit_dir_then_env_then_cache(tmp_path, monkeypatch, cache):
    overrides: dict[str, list[str]] = {}
    labels_by_place = {}
    for seed, place in enumerate((tmp_path / "explicit", tmp_path / "env", cache)):
        arrays, digests = write_mnist(place / "mnist", seed=seed)
        labels_by_place[place] = arrays["train-labels"]
        for name, digest in digests.items():
            overrides.setdefault(name, []).append(digest)
    monkeypatch.setenv("DYNAMOE_DATA", str(tmp_path / "env"))
    for data_dir, place in ((tmp_path / "explicit", tmp_path / "explicit"), (None, tmp_path / "env")):
        ds = data.load("mnist", data_dir=data_dir, checksums=overrides)
        assert ds.source.startswith(str(place / "mnist"))
        np.testing.assert_array_equal(ds.y_train, labels_by_place[place])
    monkeypatch.delenv("DYNAMOE_DATA")
    ds = data.load("mnist", checksums=overrides)
    assert ds.source.startswith(str(cache / "mnist"))
    np.testing.assert_array_equal(ds.y_train, labels_by_place[cache])


def test_xdg_cache_home_is_respected(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "elsewhere"))
    assert data.search.cache_dir() == tmp_path / "elsewhere" / "dynamoe"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.search.cache_dir() == tmp_path / "home" / ".cache" / "dynamoe"


def test_dataset_subfolder_is_searched_before_the_root(tmp_path):
    # MNIST and Fashion-MNIST share file names: the named subfolder wins over the root itself.
    write_mnist(tmp_path / "root", seed=1)
    arrays, overrides = write_mnist(tmp_path / "root" / "fashion-mnist", seed=2)
    ds = data.load("fashion_mnist", data_dir=tmp_path / "root", checksums=overrides)
    np.testing.assert_array_equal(ds.y_train, arrays["train-labels"])


@pytest.fixture
def shared_mnist():
    folder = SHARED_DATA / "mnist"
    if not (folder / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"the MNIST test split is not at {folder}")
    return folder


def test_real_mnist_test_split(shared_mnist):
    located = data.locate("mnist", shared_mnist)
    assert [f.status for f in located.files] == ["missing", "missing", "ok", "ok"]
    x, y = idx.read_split(located, "test")
    assert x.shape == (10000, 784) and x.dtype == np.float32 and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    assert np.bincount(y).tolist() == MNIST_TEST_LABEL_COUNTS
    assert y[0] == 7  # the first test digit of MNIST is a 7
    assert abs(float(x.mean()) - 0.1325) < 1e-3


def test_mnist_with_only_the_test_split_is_not_a_dataset(shared_mnist):
    with pytest.raises(data.DatasetNotFound) as info:
        data.load("mnist", data_dir=shared_mnist)
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message and "train-labels-idx1-ubyte.gz" in message
    assert "t10k-images-idx3-ubyte.gz" not in message.split("found only:")[0]
    assert str(shared_mnist / "t10k-images-idx3-ubyte.gz") in message


@pytest.fixture
def system_fashion(monkeypatch):
    monkeypatch.setattr(data.search, "KNOWN_ROOTS", (data.search.Path("/usr/share/datasets"),))
    if not data.search.Path(FASHION_DIR, "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Debian's dataset-fashion-mnist is not installed ({FASHION_DIR})")


def test_real_fashion_mnist_from_the_debian_package(system_fashion):
    located = data.locate("fashion_mnist")
    assert located.status == "ok" and located.directories == (data.search.Path(FASHION_DIR),)
    ds = data.load("fashion_mnist")
    assert ds.x_train.shape == (60000, 784) and ds.x_test.shape == (10000, 784)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert 0.0 == ds.x_train.min() and ds.x_train.max() == 1.0
    assert np.bincount(ds.y_train).tolist() == [6000] * 10
    assert np.bincount(ds.y_test).tolist() == [1000] * 10
    assert FASHION_DIR in ds.source


def test_fashion_files_are_not_mnist(system_fashion, tmp_path):
    # Fashion-MNIST's files under MNIST's names: the error says whose files they are.
    with pytest.raises(data.ChecksumMismatch, match=r"this file is fashion_mnist/train-images-idx3-ubyte\.gz"):
        idx.read_idx(
            "mnist",
            "train-images-idx3-ubyte.gz",
            data.search.Path(FASHION_DIR, "train-images-idx3-ubyte.gz"),
            idx.IMAGE_MAGIC,
        )
