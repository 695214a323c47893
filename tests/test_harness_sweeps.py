"""Results store, runner, report and compare on real (small) runs: atomic writes, no silent overwrite,
resume after SIGKILL, recorded failures, byte-identical reports, cross-backend comparison."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from harness import compare, report
from harness.experiments import RunConfig, get
from harness.files import write_json_atomic
from harness.runner import plan, run_configs
from harness.store import Store, StoreError
from harness.worker import epochs_to_fraction, run
from tests.conftest import REPO, backend_or_skip

TINY = ["--dataset", "synthetic", "--num-samples", "256", "--epochs", "1", "--seeds", "0"]
ROWS = ["--only", "schedule=MLP baseline", "schedule=Uniform", "schedule=Descending"]


def _tiny_spec(backend: str = "torch", dtype: str = "float32", seed: int = 0):
    spec = plan(get("table2"), [backend], [seed], epochs=1, dataset="synthetic", num_samples=256)[2]
    return dataclasses.replace(spec, dtype=dtype)


def test_atomic_write_leaves_the_old_file_when_a_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    write_json_atomic(path, {"a": 1})

    def crash(fd):
        raise OSError("disk full")  # the new bytes are in the temporary file, not yet in place

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        write_json_atomic(path, {"a": 2, "pad": "x" * 100_000})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left behind


def _record(key: str, accuracy: float) -> dict:
    """A committed record of results/runs/, under another key and accuracy."""
    record = json.loads(next(iter(sorted((REPO / "results" / "runs").glob("*.json")))).read_text())
    return {**record, "key": key, "summary": {**record["summary"], "accuracy": accuracy}}


def test_store_never_overwrites_a_finished_run_silently(tmp_path):
    store = Store(tmp_path)
    store.put(_record("k", 0.5))
    with pytest.raises(StoreError, match="--rerun"):
        store.put(_record("k", 0.9))
    assert store.get("k")["summary"]["accuracy"] == 0.5
    store.put(_record("k", 0.9), supersede=True)
    assert store.get("k")["summary"]["accuracy"] == 0.9
    (old,) = (tmp_path / "runs" / "superseded").iterdir()
    assert json.loads(old.read_text())["summary"]["accuracy"] == 0.5


def test_epochs_to_95_percent():
    assert epochs_to_fraction([0.5, 0.8, 0.9, 0.95, 1.0]) == 4
    assert epochs_to_fraction([0.96, 0.9, 1.0]) == 1
    assert epochs_to_fraction([]) is None


@pytest.mark.torch
def test_record_holds_what_a_report_needs(tmp_path):
    backend_or_skip("torch")
    record = run(_tiny_spec(), Store(tmp_path), echo=lambda s: None)
    s = record["summary"]
    assert 0.0 <= s["accuracy"] <= 1.0 and s["params"] == 402_698 and s["epochs_to_95"] == 1
    assert [lay["experts"] for lay in s["layers"]] == [8, 6, 3, 1]
    assert len(record["gate_gradient_variance"]) == 4 and record["gate_gradient_variance"][0] > 0
    assert record["gate_gradient_variance"][3] == 0.0  # one expert: the softmax gate is constant
    assert record["environment"]["backend"]["torch"] and record["environment"]["git_commit"]
    frame = Store(tmp_path).frame()
    assert list(frame["schedule"]) == ["descending"] and frame["accuracy"][0] == s["accuracy"]


def _sweep(results, *extra):
    cmd = [sys.executable, "-m", "harness", "run", "table2", *TINY, *ROWS, "--results-dir", str(results), *extra]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


@pytest.mark.torch
@pytest.mark.slow
def test_sigkill_mid_sweep_loses_no_finished_run_and_rerun_is_a_no_op(tmp_path):
    backend_or_skip("torch")
    runs = tmp_path / "runs"
    proc = _sweep(tmp_path)
    deadline = time.time() + 600
    while not (runs.is_dir() and any(p.suffix == ".json" for p in runs.iterdir())):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its worker, mid-run
    proc.wait()
    before = {p.name: p.read_bytes() for p in runs.glob("*.json")}
    assert 1 <= len(before) < 3
    out, _ = _sweep(tmp_path).communicate(timeout=900)
    assert f"{len(before)} already in" in out and "0 failed" in out, out
    after = {p.name: p.read_bytes() for p in runs.glob("*.json")}
    assert len(after) == 3 and all(after[name] == data for name, data in before.items())
    out, _ = _sweep(tmp_path).communicate(timeout=600)
    assert "0 trained, 3 skipped" in out
    assert {p.name: p.read_bytes() for p in runs.glob("*.json")} == after
    # the report of this store (tables and README) is byte-for-byte the same when regenerated
    from harness.cli import main

    def generated():
        assert main(["report", "--results-dir", str(tmp_path)]) == 0
        return {p.relative_to(tmp_path): p.read_bytes() for p in [tmp_path / "README.md", *(tmp_path / "tables").iterdir()]}

    first = generated()
    assert generated() == first
    assert b"| Descending | 1 |" in first[Path("tables/table2.md")] and Path("tables/table2.tex") in first
    # the 5 rows this sweep left out are named with the command that completes them
    resume = "python -m harness run table2 --backend torch --dataset synthetic --epochs 1 --num-samples 256 --seeds 0"
    assert f"Incomplete: 5 row(s) lack some of seeds 0; `{resume}`".encode() in first[Path("tables/table2.md")]
    # Table 6's one row is Table 2's descending run: that table is complete, and says what reproduces it
    command = "python -m harness run table6 --backend torch --dataset synthetic --epochs 1 --num-samples 256 --seeds 0"
    assert f"Command: `{command}`".encode() in first[Path("tables/table6.md")]


@pytest.mark.torch
def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    backend_or_skip("torch")
    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv("DYNAMOE_DATA", str(empty))
    monkeypatch.setenv("XDG_CACHE_HOME", str(empty))
    good = _tiny_spec()
    bad = dataclasses.replace(good, dataset="cifar10", model=good.model.replace(input_dim=3072))
    store = Store(tmp_path / "store")
    outcomes = run_configs([bad, good], store, data_dir=str(empty))
    assert [o.status for o in outcomes] == ["failed", "done"]
    failure = store.failure(bad.key)
    assert "cifar10" in failure["error"] and failure["spec"]["dataset"] == "cifar10"
    assert store.has(good.key) and not store.has(bad.key)


def _workers_of(store: Path) -> list[int]:
    """Pids of live ``harness.worker`` processes writing to ``store`` (from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue
        if b"harness.worker" in argv and str(store).encode() in argv:
            pids.append(int(entry.name))
    return pids


@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds worker processes through /proc")
def test_sigterm_to_the_sweep_alone_stops_its_workers_and_marks_nothing_failed(tmp_path):
    backend_or_skip("torch")
    proc = _sweep(tmp_path, "--jobs", "2")
    deadline = time.time() + 120
    while len(workers := _workers_of(tmp_path)) < 2:
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)  # the sweep's process only, as `kill PID` or a scheduler sends it
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted: 0 trained, 3 stopped or not started" in out, out
    deadline = time.time() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in workers):  # reaped by init once terminated
        assert time.time() < deadline, f"workers {workers} outlived the sweep"
        time.sleep(0.1)
    assert Store(tmp_path).failures() == []
    out, _ = _sweep(tmp_path).communicate(timeout=900)
    assert "3 trained, 0 skipped, 0 failed" in out, out


def test_a_cell_shows_the_spread_of_measured_seeds_even_when_they_agree():
    assert report._cell("{:.2f}", 90.13, 0.0, 2) == "90.13 ± 0.00"  # two seeds that agreed, not one seed
    assert report._cell("{:.2f}", 90.13, 0.2, 3) == "90.13 ± 0.20"
    assert report._cell("{:.2f}", 90.13, float("nan"), 1) == "90.13" and report._cell("{:.2f}", 0, 0, 0) == "-"
    assert report._cell("{:,.0f}", 402698, 0.0, 3, exact=True) == "402,698"  # a parameter count: no spread to show


def test_verdict_rule():
    assert report.verdict(92.0, 0.4, 3, 92.68) == "within"
    assert report.verdict(90.0, 0.4, 3, 92.68) == "outside"
    assert report.verdict(2.4, 0.0, 3, 2.4) == "within"  # the paper printed 2.4: its rounding counts
    assert report.verdict(2.44, 0.0, 3, 2.4) == "within" and report.verdict(2.44, 0.0, 3, 2.40001) == "outside"
    assert report.verdict(92.0, float("nan"), 1, 92.68) == "1 seed"


@pytest.mark.torch
@pytest.mark.mlx
def test_compare_pairs_backends_and_float64_runs_agree(tmp_path):
    backend_or_skip("torch")
    backend_or_skip("mlx")
    a, b = Store(tmp_path / "a"), Store(tmp_path / "b")
    run(_tiny_spec("torch", "float64"), a, echo=lambda s: None)
    run(_tiny_spec("mlx", "float64"), b, echo=lambda s: None)
    (pair,) = compare.compare(a, b)
    assert pair["ok"], pair
    assert {m["metric"] for m in pair["metrics"]} == {"accuracy", "epoch1_train_loss", "final_ppl", "avg_active"}
    # the CLI's file says how it was made, and the results README lists it with its verdicts
    from harness import results_index
    from harness.cli import main

    out = tmp_path / "a" / "compare" / "torch-vs-mlx.md"
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    assert f"Made by `python -m harness compare {tmp_path / 'a'} {tmp_path / 'b'} --out {out}`." in out.read_text()
    assert "- [torch-vs-mlx.md](compare/torch-vs-mlx.md): A = " in "\n".join(results_index._comparisons(tmp_path / "a"))
    assert "; 1 paired runs, 1 within tolerance" in "\n".join(results_index._comparisons(tmp_path / "a"))
    # a result that moved is caught
    path = next(b.runs.glob("*.json"))
    record = json.loads(path.read_text())
    record["summary"]["accuracy"] -= 0.01
    path.write_text(json.dumps(record))
    (pair,) = compare.compare(a, b)
    assert not pair["ok"] and "DIFFERS" in compare.to_markdown([pair], "a", "b")


@pytest.mark.torch
def test_a_run_converted_from_another_runs_after_it_from_its_trained_weights(tmp_path):
    """MoUE "converted from the trained MoE top-2": the plan pulls in the MoE run, the runner trains it
    first and keeps its parameters, and the MoUE run starts from ``moe_to_moue`` of exactly those.
    Float32 torch on the CPU is bit-reproducible run to run, so retrained weights compare exactly."""
    backend_or_skip("torch")
    from backends.spec.moue import moe_to_moue
    from harness.worker import start_params

    experiment = get("moue-vs-moe")
    converted = next(r for r in experiment.rows if r.init_from is not None)
    specs = plan(dataclasses.replace(experiment, rows=(converted,)), ["torch"], [0], epochs=1, dataset="synthetic", num_samples=256)
    source, target = specs
    assert target.init_from == source and source.model.kind == "dynamoe" and target.model.kind == "moue"
    assert "init_from" not in source.as_dict() and target.key != dataclasses.replace(target, init_from=None).key
    store = Store(tmp_path)
    outcomes = run_configs(list(reversed(specs)), store, jobs=2)  # order given does not matter: sources go first
    assert sorted(o.status for o in outcomes) == ["done", "done"]
    assert store.params_path(source.key).exists() and not store.params_path(target.key).exists()
    trained = store.get_params(source.key)
    expected = moe_to_moue(trained, source.model, target.model, seed=0)
    got = start_params(target, store)
    assert got.keys() == expected.keys() and all(np.array_equal(got[k], expected[k]) for k in got)
    assert RunConfig.from_dict(store.get(target.key)["spec"]) == target
    # the report files it under its own row, apart from the MoUE trained from scratch
    (rows,) = report.match(experiment, list(store.records())).values()
    runs = {(r.labels["model"], r.labels["variant"]): len(recs) for r, recs in rows}
    assert runs[("MoUE top-2", "converted from the trained MoE top-2")] == 1 and runs[("MoE top-2", "-")] == 1
    assert runs[("MoUE top-2", "full")] == 0
    # a finished source without its parameters (run before they were kept) is trained again for them,
    # to the same weights (same seeds), and its record is left alone
    record = store.path(source.key).read_bytes()
    store.params_path(source.key).unlink()
    again = start_params(target, store, echo=lambda line: None)
    assert all(np.array_equal(again[k], expected[k]) for k in expected) and store.path(source.key).read_bytes() == record


class _Killed(Exception):
    pass


@pytest.mark.torch
def test_a_run_killed_after_an_epoch_continues_from_its_checkpoint_to_the_same_record(tmp_path, monkeypatch):
    """A run stopped after epoch 1 of 2 continues from the checkpoint it left and ends with the record
    of a run never stopped (bit for bit but the timings: same seeds, same state, same ops); the
    checkpoint goes when the record is written, ``--rerun`` starts afresh, a damaged one is moved aside."""
    backend_or_skip("torch")
    spec = dataclasses.replace(_tiny_spec(), train=dataclasses.replace(_tiny_spec().train, epochs=2))
    whole = run(spec, Store(tmp_path / "whole"), echo=lambda s: None)
    store = Store(tmp_path / "stopped")
    put = Store.put_checkpoint

    def put_then_die(self, key, arrays):
        put(self, key, arrays)
        raise _Killed  # as a kill right after the epoch-1 checkpoint

    monkeypatch.setattr(Store, "put_checkpoint", put_then_die)
    with pytest.raises(_Killed):
        run(spec, store, echo=lambda s: None)
    monkeypatch.undo()
    assert store.checkpoint_path(spec.key).exists() and not store.has(spec.key)
    lines: list[str] = []
    resumed = run(spec, store, echo=lines.append)
    assert lines[0].startswith("resuming after epoch 1/2") and [line.split()[1] for line in lines[1:]] == ["2/2"]
    untimed = lambda r: ([{**e, "seconds": 0} for e in r["epochs"]], {**r["summary"], "train_seconds": 0}, r["gate_gradient_variance"])  # noqa: E731
    assert untimed(resumed) == untimed(whole)
    assert (resumed["resumed_after_epoch"], whole["resumed_after_epoch"]) == (1, 0)
    assert not store.checkpoint_path(spec.key).exists()
    # --rerun (supersede) ignores a checkpoint and trains from the start
    monkeypatch.setattr(Store, "put_checkpoint", put_then_die)
    with pytest.raises(_Killed):
        run(spec, store, supersede=True, echo=lambda s: None)
    monkeypatch.undo()
    lines.clear()
    again = run(spec, store, supersede=True, echo=lines.append)
    assert lines[0].startswith("epoch 1/2") and untimed(again) == untimed(whole)
    # a damaged checkpoint is moved to quarantine/ (named on stderr) and the run starts afresh
    damaged = Store(tmp_path / "damaged")
    damaged.checkpoint_path(spec.key).parent.mkdir(parents=True)
    damaged.checkpoint_path(spec.key).write_bytes(b"not a zip")
    lines.clear()
    fresh = run(spec, damaged, echo=lines.append)
    assert lines[0].startswith("epoch 1/2") and untimed(fresh) == untimed(whole)
    assert (damaged.root / "quarantine" / "checkpoints" / f"{spec.key}.npz").read_bytes() == b"not a zip"
