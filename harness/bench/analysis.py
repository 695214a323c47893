"""The bench's analysis: which models are timed, their FLOPs, the derived columns and the targets.

Useful GFLOP/s counts the active FLOPs of ``spec.accounting`` at the nominal expected active experts,
x3 for a training step (forward + backward, the usual 1 + 2 convention); percent of the machine's fp32
matmul rate is of the best rate any backend's own matmul reached in the run; each DynaMoE model is set
beside the dense MLP whose width gives the same active FLOPs (``accounting.matched_mlp(by="flops")``);
a training step is projected to a 20-epoch MNIST-Small run (60,000 images at batch 256: 235 steps an
epoch) beside the paper's Table 2 column.
"""

from __future__ import annotations

import dataclasses
import math

from backends.spec import accounting
from backends.spec.config import ModelConfig, ScheduleConfig
from harness.bench.worker import BATCH, LM_BATCH
from harness.experiments.transformer import HEADS as TRANSFORMER_HEADS

STEPS_PER_EPOCH = math.ceil(60_000 / BATCH)  # 235
TRAIN_OVER_FORWARD = 3.0  # a training step's FLOPs over its forward pass's (forward + backward, 1 + 2)
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
# Language modelling: the fastest backend's Tiny training step within this factor of the head's limit
# (its forward and backward FLOPs at the run's matmul rate), every backend within ``backend_spread`` of
# the fastest, and a worker's peak resident memory (Tiny) at most this many MB.
LM_TARGETS = {"head_limit": 2.0, "backend_spread": 2.0, "peak_rss_mb": 2000.0}
EVAL_TARGET = 0.2  # evaluation's share of a full run's time (eval batches x eval step over train + eval)
# A run's batches per epoch, to weigh a training step against an evaluation step: MNIST's 60,000 training
# and 10,000 test images at batch 256; the language-model runs' 1,000 training and 1,000 held-out
# windows (Table 5 as run here: WikiText-2 without its training text) at batch 32.
RUN_BATCHES = {"classify": (STEPS_PER_EPOCH, math.ceil(10_000 / BATCH)), "lm": (math.ceil(1000 / 32), math.ceil(1000 / 32))}
REGRESSION = 1.25  # ``--against``: a row slower than the committed one by more than this, relative to its backend's matmul rate
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


def lm_variants(sizes: list[str]) -> list[dict]:
    """The language-model steps timed per size: the descending DynaMoE's training and evaluation steps on
    a batch of ``LM_BATCH`` windows of the GPT-2 vocabulary (each in its own worker process), and for the
    first size the same on the Transformer backbone (``transformer-schedules``' model, 4 heads)."""
    out = []
    for i, size in enumerate(sizes):
        cfg = ModelConfig(size=size, task="lm", vocab_size=50_257, schedule=ScheduleConfig("descending"))
        models = [("lm-descending", cfg)]
        if i == 0:
            models.append(("transformer-descending", dataclasses.replace(cfg, backbone="transformer", num_heads=TRANSFORMER_HEADS)))
        for label, model in models:
            for mode in ("train", "eval"):
                out.append({"label": label, "size": size, "mode": mode, "key": f"{size}/{label}/{mode}", "cfg": model})
    return out


def head_flops(cfg: ModelConfig, mode: str) -> float:
    """The language-model head's FLOPs on one ``LM_BATCH``: ``2 N d V`` for its logits, x3 with the
    gradients of the states and of the weight (training)."""
    tokens = LM_BATCH[0] * LM_BATCH[1]
    return 2.0 * tokens * cfg.hidden_dim * cfg.output_dim * (TRAIN_OVER_FORWARD if mode == "train" else 1.0)


def step_flops(cfg: ModelConfig, mode: str) -> float:
    """Active FLOPs of one step on a batch of ``BATCH`` samples (training: forward x 3)."""
    return accounting.active_flops_per_token(cfg) * BATCH * (TRAIN_OVER_FORWARD if mode == "train" else 1.0)


def computed_over_active(cfg: ModelConfig, dispatch: str | None) -> float:
    """The FLOPs a dispatch computes over the active ones: ``concat`` and ``batched`` run every expert on
    every token (the network's FLOPs with every layer at all its experts, over the nominal active count's);
    ``sparse`` only the selected ones (1). The equal-FLOPs MLP's ratio cannot go below this but by a faster
    rate per FLOP."""
    if dispatch == "sparse":
        return 1.0
    every = [float(n) for n in cfg.experts_per_layer()]
    return accounting.active_flops_per_token(cfg, every) / accounting.active_flops_per_token(cfg)


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
            row["computed_over_active"] = computed_over_active(cfg, row.get("dispatch")) if cfg.kind == "dynamoe" else None
    return peak


def derive_lm(results: dict[str, dict], peak: float) -> None:
    """The language-model rows' derived columns in place: the head's limit (``head_flops`` at the run's
    matmul rate ``peak``), the step over it, the same at the backend's own matmul rate (a BLAS slower
    than the machine's best shows there, not in the step's own overhead), and tokens per second."""
    for r in results.values():
        own = r.get("matmul_gflops")
        for row in r.get("lm_rows", []):
            cfg = ModelConfig.from_dict(row["cfg"])
            row["head_flops"] = head_flops(cfg, row["mode"])
            row["limit_ms"] = row["head_flops"] / (peak * 1e9) * 1e3
            row["x_limit"] = row["ms"] / row["limit_ms"]
            row["own_limit_ms"] = row["head_flops"] / (own * 1e9) * 1e3 if own else None
            row["x_own_limit"] = row["ms"] / row["own_limit_ms"] if own else None
            row["tokens_per_s"] = LM_BATCH[0] * LM_BATCH[1] / (row["ms"] / 1e3)


def _lm_row(result: dict, size: str, mode: str, label: str = "lm-descending") -> dict | None:
    rows = [r for r in result.get("lm_rows", []) if (r["size"], r["mode"], r["label"]) == (size, mode, label)]
    return rows[0] if rows else None


def eval_share(train_ms: float, eval_ms: float, task: str) -> dict:
    """Evaluation's share of a run's time per epoch: ``eval_ms x eval batches / (train_ms x train batches
    + eval_ms x eval batches)`` with ``RUN_BATCHES[task]``, and its floor: the share were evaluation's
    forward pass (a third of a training step's FLOPs) run at training's rate per FLOP."""
    train_batches, eval_batches = RUN_BATCHES[task]
    train, evaluation = train_ms * train_batches, eval_ms * eval_batches
    floor = eval_batches / (TRAIN_OVER_FORWARD * train_batches + eval_batches)
    return {"train_batches": train_batches, "eval_batches": eval_batches, "share": evaluation / (train + evaluation), "floor": floor}


def _share_check(share: dict) -> dict:
    return dict(_check(share["share"], EVAL_TARGET), floor=share["floor"])


def lm_targets(results: dict[str, dict], size: str = "tiny") -> dict:
    """``LM_TARGETS`` on the ``size`` training step, every row's peak memory, and ``EVAL_TARGET`` per
    backend (language model, and the Small image model's inference step standing for its evaluation)."""
    train = {name: _lm_row(r, size, "train") for name, r in results.items()}
    train = {name: row for name, row in train.items() if row}
    out: dict = {}
    if train:
        fastest = min(train, key=lambda n: train[n]["ms"])
        best = train[fastest]["ms"]
        out["lm_fastest_backend"] = fastest
        out["lm_head_limit"] = _check(train[fastest]["x_limit"], LM_TARGETS["head_limit"])
        out["lm_backend_spread"] = {name: _check(row["ms"] / best, LM_TARGETS["backend_spread"]) for name, row in train.items()}
    memory = {
        f"{name} {row['key']}": _check(row.get("peak_rss_mb"), LM_TARGETS["peak_rss_mb"])
        for name, r in results.items()
        for row in r.get("lm_rows", [])
        if row["size"] == size
    }
    if memory:
        out["lm_peak_rss_mb"] = memory
    shares = {}
    for name, r in results.items():
        lm_train, lm_eval = _lm_row(r, size, "train"), _lm_row(r, size, "eval")
        if lm_train and lm_eval:
            shares[f"{name} lm {size}"] = _share_check(eval_share(lm_train["ms"], lm_eval["ms"], "lm"))
        image_train, image_infer = _main_row(r, "small"), _main_row(r, "small", mode="infer")
        if image_train and image_infer:
            shares[f"{name} image small"] = _share_check(eval_share(image_train["ms"], image_infer["ms"], "classify"))
    if shares:
        out["eval_share"] = shares
    return out


def _normalised(record: dict) -> dict[tuple[str, str], float]:
    """``{(backend, row key): ms x the backend's own matmul rate in that run}``: a step's time in units of
    its own BLAS's speed (the run's best rate where the backend timed no matmul). Its own, not the run's
    best: hosts differ in which BLAS they favour (XLA's matmul 180 GFLOP/s on one host, 422 on another,
    MKL's 190 on both), and a backend is not slower because another one got faster."""
    peak = record["machine_matmul_gflops"]
    return {
        (name, row["key"]): row["ms"] * (r.get("matmul_gflops") or peak)
        for name, r in record["backends"].items()
        for row in r.get("rows", []) + r.get("lm_rows", [])
    }


def regressions(record: dict, against: dict, bound: float = REGRESSION) -> list[dict]:
    """Rows of ``record`` more than ``bound`` x slower than the same row (backend and key) of ``against``,
    each time normalised by the backend's own matmul rate in its run (so another machine compares fairly)."""
    new, old = _normalised(record), _normalised(against)
    out = []
    for key in sorted(new.keys() & old.keys()):
        ratio = new[key] / old[key]
        if ratio > bound:
            out.append({"backend": key[0], "key": key[1], "ratio": ratio})
    return out


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
        "dense_ratio": {
            name: dict(_check(row["ratio_vs_equal_mlp"], TARGETS["dense_ratio"]), computed=row.get("computed_over_active"))
            for name, row in main.items()
        },
    }
