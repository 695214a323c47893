"""The CLI: bad input gives one clear error line and exit code 2; a short run prints its epochs."""

from __future__ import annotations

import json

import pytest

from harness.cli import main
from tests.conftest import backend_or_skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--backend", "jax"], "unknown backend 'jax': choose one of torch, keras-jax, keras-torch, mlx"),
        (["train", "--e-min", "9"], "e_min = 9 > e_max = 8"),
        (["train", "--tau", "150"], "RouterConfig.tau = 150.0 is invalid"),
    ],
)
def test_bad_input_is_one_clear_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_missing_dataset_names_the_fetch_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("DYNAMOE_DATA", str(tmp_path))
    assert main(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "cifar10" in err and "python -m harness data fetch cifar10" in err


@pytest.mark.torch
def test_train_on_synthetic_data_prints_epochs_and_writes_json(tmp_path, capsys):
    backend_or_skip("torch")
    out = tmp_path / "run.json"
    argv = [
        "train",
        "--backend",
        "torch",
        "--size",
        "tiny",
        "--epochs",
        "2",
        "--num-samples",
        "512",
        "--batch-size",
        "32",
        "--quiet",
        "--json-out",
        str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "epoch   1/2" in printed and "epoch   2/2" in printed and "active/layer" in printed
    record = json.loads(out.read_text())
    assert [e["epoch"] for e in record["epochs"]] == [1, 2]
    assert record["epochs"][-1]["test_accuracy"] > 0.5  # the synthetic blobs are learnable
    assert record["environment"]["backend"]["framework"] == "torch"
