"""Early stopping (``TrainConfig.patience``, ``run --patience``): when a run stops, that the runs without it
keep their keys, and how the report groups and describes stopped runs."""

from __future__ import annotations

import json

import pytest

from backends.spec.config import TrainConfig
from harness import report
from harness.environment import REPO
from harness.experiments import get
from harness.experiments.run import RunConfig
from harness.runner import plan
from harness.training import EpochResult, stalled


def _history(values, task="lm"):
    if task == "lm":
        return [EpochResult(i + 1, 1.0, 1.0, 0.1, v, 1.0) for i, v in enumerate(values)]
    return [EpochResult(i + 1, 1.0, 1.0, v, 1.0, 1.0) for i, v in enumerate(values)]


def test_stalled_counts_epochs_since_the_best():
    assert not stalled(_history([500, 400, 410, 405]), 3, "lm")  # two epochs since the best
    assert stalled(_history([500, 400, 410, 405, 401]), 3, "lm")  # three
    assert not stalled(_history([500, 400, 410, 405, 399]), 3, "lm")  # a new best resets the count
    assert stalled(_history([500, 400, 400, 400, 400]), 3, "lm")  # ties are no improvement
    assert stalled(_history([0.8, 0.9, 0.89, 0.9], "classify"), 2, "classify")  # accuracy: higher is better
    assert not stalled(_history([0.8, 0.9, 0.89, 0.91], "classify"), 2, "classify")
    assert not stalled(_history([500, 600, 700, 800, 900]), None, "lm")  # no patience: never


def test_patience_must_be_a_positive_int():
    with pytest.raises(ValueError, match="patience"):
        TrainConfig(patience=0)
    assert "patience" not in TrainConfig().as_dict() and TrainConfig(patience=3).as_dict()["patience"] == 3


def test_runs_without_patience_keep_their_committed_keys():
    """A committed record's spec gives back its own key: the new field did not change any old key."""
    runs = sorted((REPO / "results" / "runs").glob("*.json"))
    if not runs:
        pytest.skip("no committed runs")
    for path in runs[:20]:
        record = json.loads(path.read_text())
        assert RunConfig.from_dict(record["spec"]).key == record["key"] == path.stem


def test_plan_and_report_keep_patience_apart():
    table5 = get("table5")
    plain = plan(table5, ["torch"], [0], epochs=20, dataset="wikitext2")
    patient = plan(table5, ["torch"], [0], epochs=20, dataset="wikitext2", patience=3)
    assert {c.train.patience for c in patient} == {3} and {c.train.patience for c in plain} == {None}
    assert not {c.key for c in plain} & {c.key for c in patient}
    with pytest.raises(ValueError, match="patience = 0"):
        plan(table5, ["torch"], [0], patience=0)
    config = patient[0]
    record = {"spec": config.as_dict(), "summary": {}, "epochs": [{}] * 7}
    groups = report.match(table5, [record, {"spec": plain[0].as_dict(), "summary": {}, "epochs": [{}] * 20}])
    assert sorted(groups, key=str) == sorted([("torch", "wikitext2", 20, 0, 3), ("torch", "wikitext2", 20, 0, None)], key=str)
    title, notes = report._header(table5, ("torch", "wikitext2", 20, 0, 3), [0])
    assert any("Early stopping" in n and "3 epochs" in n for n in notes)
    assert "--patience 3" in report._resume_command(table5, ("torch", "wikitext2", 20, 0, 3), [0])


@pytest.mark.torch
def test_training_ends_when_the_metric_stalls():
    """With a learning rate too small to move the weights, test accuracy ties at every epoch: a patience of
    one ends the run after its second epoch, of six planned."""
    pytest.importorskip("torch")
    from backends.spec import ModelConfig
    from harness.data import synthetic
    from harness.training import train

    data = synthetic(0, 128, 32)
    cfg = ModelConfig(size="tiny", input_dim=data.x_train.shape[1], num_classes=int(data.y_train.max()) + 1)
    history, _ = train("torch", cfg, TrainConfig(lr=1e-12, batch_size=64, epochs=6, eval_batch_size=64, patience=1), data, 0)
    assert [r.epoch for r in history] == [1, 2]
    history, _ = train("torch", cfg, TrainConfig(lr=1e-12, batch_size=64, epochs=3, eval_batch_size=64), data, 0)
    assert len(history) == 3
