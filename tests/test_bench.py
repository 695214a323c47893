"""``python -m harness bench`` and ``spec.dispatch``: the dispatch methods agree with the reference, the
FLOP accounting the bench uses, the derived columns and the JSON written (tiny repeats; speed targets
are the benchmark's business, never asserted here)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import backends
from backends.spec import ModelConfig, ScheduleConfig, accounting, dispatch, init_params, rng
from backends.spec.forward import layer_params, route
from backends.spec.ops import NumpyOps
from harness import bench
from harness.bench import render
from harness.cli import main


def test_dispatch_methods_agree_in_float64():
    cfg = ModelConfig(size="tiny")
    params = init_params(cfg, 3)
    ops = NumpyOps()
    h = rng.sample_generator(0).standard_normal((64, cfg.hidden_dim))
    p = layer_params(params, cfg, 0)
    weights = route(ops, h, p["gate"], None, cfg.router).weights
    batched = dispatch.batched(ops, p, h, weights)
    assert np.abs(dispatch.concat(ops, p, h, weights) - batched).max() <= 1e-12
    # the sparse form needs nonzero/index_add: a NumPy stand-in checks the formula itself
    sparse_ops = NumpyOps()
    sparse_ops.nonzero = lambda x: np.flatnonzero(x)
    sparse_ops.index_add = lambda x, i, v: np.add.at(x := x.copy(), i, v) or x
    assert np.abs(dispatch.sparse(sparse_ops, p, h, weights) - batched).max() <= 1e-12


def test_dispatch_choice_and_override():
    ops = NumpyOps()
    assert dispatch.method(ops, 128) == dispatch.DEFAULT
    ops.expert_dispatch = {128: "batched"}
    assert dispatch.method(ops, 128) == "batched" and dispatch.method(ops, 64) == dispatch.DEFAULT
    ops.expert_dispatch = "sparse"  # without nonzero the sparse form is unavailable: the default runs
    assert dispatch.method(ops, 128) == dispatch.DEFAULT
    with dispatch.use("batched"):
        assert dispatch.method(ops, 128) == "batched"
    with pytest.raises(ValueError, match="unknown expert dispatch"):
        with dispatch.use("nope"):
            pass


def test_equal_flops_mlp_matches_active_flops():
    for name in ("descending", "uniform"):
        cfg = ModelConfig(size="small", schedule=ScheduleConfig(name))
        [mlp] = [v["cfg"] for v in bench.variants("small", [name]) if v.get("equal_to") == name]
        assert mlp.kind == "mlp"
        per_width = 4.0 * cfg.hidden_dim * cfg.num_layers  # one unit of hidden width, all layers
        assert abs(accounting.active_flops_per_token(mlp) - accounting.active_flops_per_token(cfg)) <= per_width / 2
    assert bench.step_flops(cfg, "train") == 3 * bench.step_flops(cfg, "infer") == 3 * 256 * accounting.active_flops_per_token(cfg)


def _row(label, mode, ms, cfg, key_extra=""):
    import dataclasses

    return {
        "label": label,
        "size": "small",
        "table2": label,
        "mode": mode,
        "key": f"small/{label}/{mode}{key_extra}",
        "ms": ms,
        "ms_min": ms,
        "ms_max": ms,
        "dispatch": "concat",
        "cfg": dataclasses.asdict(cfg),
    }


def test_derived_columns_and_targets_are_consistent():
    moe = ModelConfig(size="small")
    mlp = accounting.matched_mlp(moe, by="flops")
    rows = [_row("descending", "train", 20.0, moe), _row("mlp=descending", "train", 10.0, mlp)]
    results = {
        "torch": {"matmul_gflops": 100.0, "rows": rows},
        "mlx": {"matmul_gflops": 50.0, "rows": [_row("descending", "train", 50.0, moe)], "blas": {"name": "reference", "reason": "why"}},
    }
    peak = bench.derive(results)
    assert peak == 100.0
    row = results["torch"]["rows"][0]
    assert row["ratio_vs_equal_mlp"] == pytest.approx(2.0)
    assert row["gflops"] == pytest.approx(bench.step_flops(moe, "train") / 0.020 / 1e9)
    assert row["pct_matmul"] == pytest.approx(row["gflops"])  # of 100 GFLOP/s
    assert row["projected_20_epochs_s"] == pytest.approx(0.020 * 235 * 20)
    assert row["paper_s"] == 162 and row["samples_per_s"] == pytest.approx(256 / 0.020)
    t = bench.targets(results)
    assert t["fastest_backend"] == "torch"
    assert t["backend_spread"]["mlx"]["value"] == pytest.approx(2.5) and not t["backend_spread"]["mlx"]["met"]
    assert t["dense_ratio"]["torch"]["value"] == pytest.approx(2.0) and t["dense_ratio"]["mlx"]["value"] is None
    assert "missed" in bench.targets_text(t) and "| torch | small | descending | train |" in bench.table(results, peak)
    assert "BLAS per worker: mlx: reference (slow: why)." in bench.table(results, peak)


def test_readme_of_the_committed_record_is_the_committed_readme():
    from harness.environment import REPO

    path = REPO / "results" / "bench" / "cpu-x86_64-linux.json"
    if not path.exists():
        pytest.skip("no committed bench record")
    assert render.readme(json.loads(path.read_text()), path.name) == (path.parent / "README.md").read_text()


@pytest.mark.slow
@pytest.mark.torch
def test_bench_command_writes_json(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "bench.json"
    argv = ["bench", "--backends", "torch", "--sizes", "tiny", "--schedules", "descending", "--repeats", "2", "--warmup", "1"]
    assert main([*argv, "--block-seconds", "0.01", "--matmul-n", "256", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["environment"]["git_commit"] and record["machine_matmul_gflops"] > 0
    assert record["backends"]["torch"]["blas"]["name"] and record["settings"]["compile"] == backends.COMPILE_BY_DEFAULT
    rows = record["backends"]["torch"]["rows"]
    assert {(r["label"], r["mode"]) for r in rows} >= {
        ("descending", "train"),
        ("descending", "infer"),
        ("mlp", "train"),
        ("mlp=descending", "train"),
    }
    assert {r["dispatch"] for r in rows if r["label"] == "descending" and r["mode"] == "train"} == set(dispatch.METHODS)
    for r in rows:
        assert r["ms"] > 0 and r["ms_min"] <= r["ms"] <= r["ms_max"] and len(r["samples_ms"]) == 2
        assert r["flops_per_step"] == bench.step_flops(ModelConfig.from_dict(r["cfg"]), r["mode"])
