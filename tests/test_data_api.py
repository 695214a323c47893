"""The public API of ``harness.data``: names, errors, the Dataset record and the synthetic set."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import harness.data as data
from backends.spec.rng import sample_generator
from tests.data_fixtures import isolate


@pytest.fixture(autouse=True)
def cache(monkeypatch, tmp_path):
    return isolate(monkeypatch, tmp_path)


def test_dataset_names():
    assert data.DATASETS == ("mnist", "fashion_mnist", "cifar10", "recycling_the_web_1k", "wikitext2")


def test_error_hierarchy():
    for error in (data.DatasetNotFound, data.ChecksumMismatch, data.CorruptFile, data.DownloadFailed):
        assert issubclass(error, data.DataError)
    assert issubclass(data.ChecksumMismatch, data.CorruptFile)


@pytest.mark.parametrize("name", ["imagenet", "gpt2", "MNIST"])
def test_unknown_names(name):
    with pytest.raises(data.UnknownDataset, match="mnist, fashion_mnist, cifar10"):
        data.load(name)


def test_dataset_is_frozen():
    ds = data.synthetic(0, 8, 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.name = "other"
    assert {f.name for f in dataclasses.fields(ds)} == {
        "name", "task", "x_train", "y_train", "x_test", "y_test", "input_dim", "num_classes", "source", "notes",
    }  # fmt: skip


def test_synthetic_shapes_and_types():
    ds = data.synthetic(seed=5, n_train=200, n_test=50, input_dim=20, num_classes=4)
    assert ds.x_train.shape == (200, 20) and ds.x_test.shape == (50, 20)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    assert set(np.unique(ds.y_train)) == {0, 1, 2, 3}
    assert (ds.input_dim, ds.num_classes, ds.task) == (20, 4, "classify")


def test_synthetic_is_drawn_from_the_spec_stream():
    ds = data.synthetic(seed=9, n_train=30, n_test=10, input_dim=6, num_classes=3)
    rng = sample_generator(9, purpose=1)
    centres = rng.uniform(0.25, 0.75, size=(3, 6))
    labels = rng.integers(0, 3, size=40)
    np.testing.assert_array_equal(ds.y_train, labels[:30])
    np.testing.assert_array_equal(ds.y_test, labels[30:])
    assert np.abs(ds.x_train - centres[labels[:30]]).mean() < 0.3


def test_synthetic_is_deterministic_and_seeded():
    a, b, c = (data.synthetic(s, 50, 10) for s in (1, 1, 2))
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)


def test_synthetic_is_learnable():
    ds = data.synthetic(seed=0, n_train=500, n_test=200)
    centroids = np.stack([ds.x_train[ds.y_train == k].mean(axis=0) for k in range(10)])
    predicted = np.argmin(((ds.x_test[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (predicted == ds.y_test).mean() > 0.95
    assert (predicted == np.roll(ds.y_test, 1)).mean() < 0.3  # not trivially constant


def test_num_samples_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="num_samples"):
        data.dataset.keep_first(data.synthetic(0, 4, 2), 0)
