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
from harness.bench import analysis, render
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


def _record(rows_ms: dict[str, float], peak: float, lm_ms: dict[str, float] | None = None) -> dict:
    moe = ModelConfig(size="small")
    rows = [_row(label, "train", ms, moe) for label, ms in rows_ms.items()]
    lm = [
        dict(
            _row("lm-descending", mode, ms, ModelConfig(size="tiny", task="lm", vocab_size=50_257)),
            size="tiny",
            key=f"tiny/lm-descending/{mode}",
        )
        for mode, ms in (lm_ms or {}).items()
    ]
    return {"machine_matmul_gflops": peak, "backends": {"torch": {"matmul_gflops": peak, "rows": rows, "lm_rows": lm}}}


def test_against_flags_a_row_30_percent_slower_and_not_10():
    old = _record({"descending": 20.0, "mlp": 10.0}, 100.0, {"train": 1000.0, "eval": 300.0})
    new = _record({"descending": 26.0, "mlp": 11.0}, 100.0, {"train": 1300.0, "eval": 330.0})
    flagged = bench.regressions(new, old)
    assert [(r["key"], round(r["ratio"], 2)) for r in flagged] == [("small/descending/train", 1.3), ("tiny/lm-descending/train", 1.3)]
    # a machine twice as fast (its matmul rate doubled) with every step halved is no regression
    assert bench.regressions(_record({"descending": 10.0, "mlp": 5.0}, 200.0), old) == []
    # on a machine twice as fast, a step only 1.3x faster is 1.54x slower relative to the machine
    [row] = bench.regressions(_record({"descending": 20.0 / 1.3, "mlp": 5.0}, 200.0), old)
    assert row["key"] == "small/descending/train" and row["ratio"] == pytest.approx(2 / 1.3)
    assert "1.30 x" in render.regressions_text({"against": "old.json", "bound": 1.25, "rows": flagged})
    # another backend's faster BLAS raises the run's best rate, not torch's: torch 10 % slower is no regression
    faster_elsewhere = _record({"descending": 22.0, "mlp": 11.0}, 100.0)
    faster_elsewhere["machine_matmul_gflops"] = 200.0
    assert bench.regressions(faster_elsewhere, old) == []


def test_lm_rows_limit_memory_and_evaluation_share():
    cfg = ModelConfig(size="tiny", task="lm", vocab_size=50_257)
    assert analysis.head_flops(cfg, "train") == pytest.approx(6 * 4096 * 64 * 50_257) == pytest.approx(79.06e9, rel=1e-3)
    record = _record({"descending": 20.0, "mlp=descending": 10.0}, 142.0, {"train": 1100.0, "eval": 300.0})
    results = record["backends"]
    results["torch"]["rows"].append(_row("descending", "infer", 5.0, ModelConfig(size="small")))
    for row in results["torch"]["lm_rows"]:
        row["peak_rss_mb"] = 1500.0 if row["mode"] == "train" else 2500.0
    results["mlx"] = {"lm_rows": [dict(results["torch"]["lm_rows"][0], ms=3000.0, peak_rss_mb=900.0)]}
    results["mlx"]["matmul_gflops"] = 71.0  # a slower BLAS: its own-rate limit is twice the machine's
    results["mlx"]["rows"] = []
    bench.derive(results)
    bench.derive_lm(results, 142.0)
    train = results["torch"]["lm_rows"][0]
    assert train["limit_ms"] == pytest.approx(79.06e9 / 142e9 * 1e3, rel=1e-3) and train["x_limit"] == pytest.approx(
        1100 / train["limit_ms"]
    )
    assert train["own_limit_ms"] == pytest.approx(train["limit_ms"])
    mlx = results["mlx"]["lm_rows"][0]
    assert mlx["own_limit_ms"] == pytest.approx(2 * mlx["limit_ms"]) and mlx["x_own_limit"] == pytest.approx(mlx["x_limit"] / 2)
    t = bench.lm_targets(results)
    assert t["lm_fastest_backend"] == "torch" and t["lm_head_limit"]["met"] == (train["x_limit"] <= 2.0)
    assert t["lm_backend_spread"]["mlx"]["value"] == pytest.approx(3000 / 1100) and not t["lm_backend_spread"]["mlx"]["met"]
    memory = t["lm_peak_rss_mb"]
    assert memory["torch tiny/lm-descending/train"]["met"] and not memory["torch tiny/lm-descending/eval"]["met"]
    # 32 held-out and 32 training batches an epoch: 300 / (1100 + 300)
    assert t["eval_share"]["torch lm tiny"]["value"] == pytest.approx(300 / 1400)
    # its floor: a forward pass is a third of a training step's FLOPs, 32 / (3 x 32 + 32)
    assert t["eval_share"]["torch lm tiny"]["floor"] == pytest.approx(0.25)
    assert t["eval_share"]["torch image small"]["floor"] == pytest.approx(40 / (3 * 235 + 40))
    # images: the inference step over 40 test batches against 235 training steps
    assert t["eval_share"]["torch image small"]["value"] == pytest.approx(5 * 40 / (20 * 235 + 5 * 40))
    assert "| torch | tiny | lm-descending | train | 1100 (1100-1100) |" in bench.lm_table(results, 142.0)
    text = bench.targets_text(bench.targets(results), t)
    assert "evaluation's share" in text and "- torch lm tiny: 21 % (floor 25 %; the target is below it" in text
    assert "- torch image small: 4 % (floor 5 %): met" in text


def test_lm_variants_time_the_transformer_on_the_first_size():
    variants = bench.lm_variants(["tiny", "small"])
    keys = [v["key"] for v in variants]
    assert keys == [
        "tiny/lm-descending/train", "tiny/lm-descending/eval", "tiny/transformer-descending/train",
        "tiny/transformer-descending/eval", "small/lm-descending/train", "small/lm-descending/eval",
    ]  # fmt: skip
    transformer = variants[2]["cfg"]
    assert transformer.backbone == "transformer" and transformer.num_heads == 4 and transformer.schedule.name == "descending"
    assert variants[0]["cfg"].backbone != "transformer"


def test_the_all_experts_dispatch_computes_more_than_the_active_flops():
    cfg = ModelConfig(size="small", schedule=ScheduleConfig("descending"))  # experts 8, 6, 3, 1
    every = accounting.active_flops_per_token(cfg, [8.0, 6.0, 3.0, 1.0])
    ratio = analysis.computed_over_active(cfg, "concat")
    assert ratio == pytest.approx(every / accounting.active_flops_per_token(cfg)) and 1.9 < ratio < 2.0
    assert analysis.computed_over_active(cfg, "batched") == ratio and analysis.computed_over_active(cfg, "sparse") == 1.0
    uniform = ModelConfig(size="small", schedule=ScheduleConfig("uniform"))
    assert analysis.computed_over_active(uniform, "concat") > ratio  # 8 experts everywhere, fewer active
