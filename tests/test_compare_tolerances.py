"""compare's data-derived tolerances: a 0.3-point bias of one backend over 3 seeds is flagged; two honest
backends (the same runs under another name, and the committed torch and keras-jax runs) pass."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from harness import compare
from harness.store import Store

RUNS = Path(__file__).resolve().parents[1] / "results" / "runs"


def _table2_torch() -> list[dict]:
    """The committed torch runs of Small Fashion-MNIST at 20 epochs with three seeds (Table 2's rows)."""
    out = []
    for path in sorted(RUNS.glob("*.json")):
        r = json.loads(path.read_text())
        s = r["spec"]
        if s["backend"] == "torch" and s["dataset"] == "fashion_mnist" and s["model"]["size"] == "small" and s["model"]["kind"] != "moue":
            out.append(r)
    return out


def _store(tmp_path: Path, name: str, records: list[dict]) -> Store:
    root = tmp_path / name
    (root / "runs").mkdir(parents=True)
    for r in records:
        (root / "runs" / f"{r['key']}.json").write_text(json.dumps(r))
    return Store(root)


def _as_backend(records: list[dict], backend: str, bias_points: float = 0.0) -> list[dict]:
    out = []
    for r in records:
        r = json.loads(json.dumps(r))
        r["spec"]["backend"] = backend
        r["key"] = r["key"][:-4] + "beef"  # another file name; pairing is by config, not key
        r["summary"]["accuracy"] += bias_points / 100
        out.append(r)
    return out


def test_a_03_point_bias_over_three_seeds_is_flagged(tmp_path):
    torch_runs = _table2_torch()
    seeds = {r["spec"]["seed"] for r in torch_runs}
    assert seeds == {0, 1, 2} and len(torch_runs) >= 9
    a = _store(tmp_path, "a", torch_runs)
    b = _store(tmp_path, "b", _as_backend(torch_runs, "fake", 0.3))
    pairs = compare.compare(a, b)
    assert pairs and not any(p["ok"] for p in pairs)
    tests, bias = compare.row_tests(pairs)
    (acc,) = [x for x in bias if x["metric"] == "accuracy"]
    assert not acc["ok"] and abs(acc["diff"] + 0.3) < 1e-9 and acc["tolerance"] < 0.3
    assert "BIASED" in compare.to_markdown(pairs, "a", "b")
    # the old fixed tolerance (1 point per pair) would have passed every pair
    assert compare.TOLERANCES["float32"]["accuracy"] > 0.3


def test_honest_backends_pass(tmp_path):
    torch_runs = _table2_torch()
    same = compare.compare(_store(tmp_path, "a", torch_runs), _store(tmp_path, "b", _as_backend(torch_runs, "fake")))
    assert same and all(p["ok"] for p in same)
    # the committed keras-jax runs against the committed torch runs: two real backends
    real = tmp_path / "real"
    shutil.copytree(RUNS, real / "runs")
    pairs = compare.compare(Store(real), Store(real), "torch", "keras-jax")
    assert len(pairs) >= 24 and all(p["ok"] for p in pairs)
    tests, bias = compare.row_tests(pairs)
    assert {x["metric"] for x in bias} >= {"accuracy", "epoch1_train_loss", "avg_active"} and all(x["ok"] for x in bias)


def test_the_parity_matrix_gives_the_trajectory_divergence():
    d = compare.trajectory_divergence("torch", "keras-jax")
    assert d is not None and 1e-4 < d < 1e-2  # float32 trajectories part past 1e-3 within 100 steps
    assert compare.trajectory_divergence("torch", "no-such-backend") is None
