"""The bench's analysis: which models are timed, their FLOPs, the derived columns and the targets.

Useful GFLOP/s counts the active FLOPs of ``spec.accounting`` at the nominal expected active experts,
x3 for a training step (forward + backward, the usual 1 + 2 convention); percent of the machine's fp32
matmul rate is of the best rate any backend's own matmul reached in the run; each DynaMoE model is set
beside the dense MLP whose width gives the same active FLOPs (``accounting.matched_mlp(by="flops")``);
a training step is projected to a 20-epoch MNIST-Small run (60,000 images at batch 256: 235 steps an
epoch) beside the paper's Table 2 column.
"""

from __future__ import annotations

import math

from backends.spec import accounting
from backends.spec.config import ModelConfig, ScheduleConfig
from harness.bench.worker import BATCH

STEPS_PER_EPOCH = math.ceil(60_000 / BATCH)  # 235
EPOCHS = 20
PAPER_TABLE2_SECONDS = {
    "mlp": 145,
    "uniform": 168,
    "descending": 162,
    "ascending": 175,
    "pyramid-up": 170,
    "pyramid-down": 173,
    "wave-up": 169,
    "wave-down": 171,
}
# Speed targets for the Small descending training step: the fastest backend's 20-epoch projection (s),
# every backend within this factor of the fastest, at least this fraction of the machine's matmul rate,
# and at most this factor of the equal-FLOPs dense MLP.
TARGETS = {"projected_seconds": 45.0, "backend_spread": 2.0, "matmul_fraction": 0.5, "dense_ratio": 1.2}
COMPARED_SCHEDULES = ("descending", "uniform")  # also timed for inference, and beside their equal-FLOPs MLP


def variants(size: str, schedules: list[str]) -> list[dict]:
    """The models timed for one size: each schedule, the paper's MLP, and the equal-FLOPs MLPs (the
    inference step: all but the schedules other than descending and uniform, which only train)."""
    out = []
    for name in schedules:
        cfg = ModelConfig(size=size, schedule=ScheduleConfig(name))
        out.append({"label": name, "size": size, "table2": name, "cfg": cfg, "infer": name in COMPARED_SCHEDULES})
    out.append({"label": "mlp", "size": size, "table2": "mlp", "cfg": ModelConfig(size=size, kind="mlp")})
    for name in [s for s in COMPARED_SCHEDULES if s in schedules]:
        mlp = accounting.matched_mlp(ModelConfig(size=size, schedule=ScheduleConfig(name)), by="flops")
        out.append({"label": f"mlp={name}", "size": size, "table2": None, "cfg": mlp, "equal_to": name})
    return out


def step_flops(cfg: ModelConfig, mode: str) -> float:
    """Active FLOPs of one step on a batch of ``BATCH`` samples (training: forward x 3)."""
    return accounting.active_flops_per_token(cfg) * BATCH * (3.0 if mode == "train" else 1.0)


def derive(results: dict[str, dict]) -> float:
    """Add the derived columns to every row in place; returns the machine's matmul rate (GFLOP/s)."""
    rates = [r["matmul_gflops"] for r in results.values() if "rows" in r]
    peak = max(rates) if rates else float("nan")
    for r in results.values():
        rows = r.get("rows", [])
        by_key = {(row["size"], row["label"], row["mode"], row["key"].count("/") > 2): row for row in rows}
        for row in rows:
            cfg = ModelConfig.from_dict(row["cfg"])
            flops = step_flops(cfg, row["mode"])
            row["experts"] = cfg.experts_per_layer() if cfg.kind == "dynamoe" else []
            row["parameters"] = accounting.parameter_count(cfg)
            row["flops_per_step"] = flops
            row["samples_per_s"] = BATCH / (row["ms"] / 1e3)
            row["gflops"] = flops / (row["ms"] / 1e3) / 1e9
            row["pct_matmul"] = 100.0 * row["gflops"] / peak
            row["pct_own_matmul"] = 100.0 * row["gflops"] / r["matmul_gflops"]
            row["projected_20_epochs_s"] = row["ms"] / 1e3 * STEPS_PER_EPOCH * EPOCHS if row["mode"] == "train" else None
            row["paper_s"] = PAPER_TABLE2_SECONDS.get(row.get("table2")) if row["mode"] == "train" and row["size"] == "small" else None
            dense = by_key.get((row["size"], f"mlp={row['label']}", row["mode"], False))
            row["ratio_vs_equal_mlp"] = row["ms"] / dense["ms"] if dense and cfg.kind == "dynamoe" else None
    return peak


def _main_row(result: dict, size: str, label: str = "descending", mode: str = "train") -> dict | None:
    rows = [r for r in result.get("rows", []) if (r["size"], r["label"], r["mode"]) == (size, label, mode) and r["key"].count("/") == 2]
    return rows[0] if rows else None


def _check(value, bound: float, higher_is_better: bool = False) -> dict:
    met = value is not None and (value >= bound if higher_is_better else value <= bound)
    return {"value": value, "bound": bound, "met": met}


def targets(results: dict[str, dict], size: str = "small") -> dict:
    """The ``TARGETS`` on the ``size`` descending training step: value, bound, met."""
    main = {name: _main_row(r, size) for name, r in results.items()}
    main = {name: row for name, row in main.items() if row}
    if not main:
        return {}
    fastest = min(main, key=lambda n: main[n]["ms"])
    best = main[fastest]["ms"]
    return {
        "fastest_backend": fastest,
        "projected_seconds": _check(main[fastest]["projected_20_epochs_s"], TARGETS["projected_seconds"]),
        "backend_spread": {name: _check(row["ms"] / best, TARGETS["backend_spread"]) for name, row in main.items()},
        "matmul_fraction": {name: _check(row["pct_matmul"] / 100.0, TARGETS["matmul_fraction"], True) for name, row in main.items()},
        "dense_ratio": {name: _check(row["ratio_vs_equal_mlp"], TARGETS["dense_ratio"]) for name, row in main.items()},
    }
