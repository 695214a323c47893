"""``python -m harness bench``: training- and inference-step speed per backend, against this machine's
measured matrix-multiply rate, a dense MLP of equal active FLOPs and the paper's Table 2 times.

Each backend runs in its own process (``python -m harness.bench worker ...``), one after another in one
run. Inside a worker every measured variant is built and warmed up first (compilation and warm-up are
timed apart, never counted), then the variants are timed in interleaved rounds (variant A's block of
steps, B's, ..., then the next round), so that a noisy machine slows all of them alike; each row reports
the median over the rounds and the spread (min, max). A block ends with one host sync (the loss as a
float), none inside a step.

Reported per row: ms per step, samples/s, useful GFLOP/s (active FLOPs of ``spec.accounting`` at the
nominal expected active experts, x3 for a training step: forward + backward, the usual 1 + 2 convention),
percent of the machine's fp32 matmul rate (the best rate any backend's own matmul reached in this run),
the ratio to the dense MLP whose width gives the same active FLOPs, and the projected time of a 20-epoch
MNIST-Small run (60,000 images at batch 256: 235 steps an epoch) beside the paper's Table 2 column.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import backends
from backends.spec import accounting
from backends.spec.config import SCHEDULES, SIZES, ModelConfig, ScheduleConfig, TrainConfig

BATCH = 256
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
# Compile or not, per backend, from measurements (the closing note of issue 7 has the numbers):
# torch.compile of the step costs 60-110 s per model on 2 cores and was no faster than eager;
# Keras on JAX compiles the whole step with jax.jit (eager is ~20x slower); Keras on torch falls back
# to eager anyway; mx.compile fuses the element-wise work around MLX's matmuls.
COMPILE = {"torch": False, "keras-jax": True, "keras-torch": False, "mlx": True}
TARGETS = {"projected_seconds": 45.0, "backend_spread": 2.0, "matmul_fraction": 0.5, "dense_ratio": 1.2}
RESULTS = Path(__file__).resolve().parents[1] / "results" / "bench"


# --- what is measured ---------------------------------------------------------------------------------


def equal_flops_mlp(cfg: ModelConfig) -> ModelConfig:
    """The dense MLP whose per-token active FLOPs equal ``cfg``'s (hidden width rounded to an integer)."""
    d, layers = cfg.hidden_dim, cfg.num_layers
    outside = accounting.active_flops_per_token(cfg.replace(kind="mlp")) - layers * 4.0 * d * cfg.mlp_hidden
    width = max(1, round((accounting.active_flops_per_token(cfg) - outside) / (4.0 * d * layers)))
    return cfg.replace(kind="mlp", mlp_hidden_ratio=width / d)


def variants(size: str, schedules: list[str]) -> list[dict]:
    """The models timed for one size: each schedule, the paper's MLP, and the equal-FLOPs MLPs (the
    inference step: all but the schedules other than descending and uniform, which only train)."""
    out = []
    for name in schedules:
        cfg = ModelConfig(size=size, schedule=ScheduleConfig(name))
        out.append({"label": name, "size": size, "table2": name, "cfg": cfg, "infer": name in ("descending", "uniform")})
    out.append({"label": "mlp", "size": size, "table2": "mlp", "cfg": ModelConfig(size=size, kind="mlp")})
    for name in [s for s in ("descending", "uniform") if s in schedules]:
        mlp = equal_flops_mlp(ModelConfig(size=size, schedule=ScheduleConfig(name)))
        out.append({"label": f"mlp={name}", "size": size, "table2": None, "cfg": mlp, "equal_to": name})
    return out


def step_flops(cfg: ModelConfig, mode: str) -> float:
    """Active FLOPs of one step on a batch of ``BATCH`` samples (training: forward x 3)."""
    return accounting.active_flops_per_token(cfg) * BATCH * (3.0 if mode == "train" else 1.0)


# --- the worker (one process per backend) ---------------------------------------------------------------


def matmul_rate(backend_name: str, n: int, repeats: int) -> list[float]:
    """GFLOP/s of the backend's own fp32 ``n x n`` matrix product, one sample per repeat."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    if backend_name == "torch":
        import torch

        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        run = lambda: torch.matmul(ta, tb)  # noqa: E731
        sync = lambda r: None  # noqa: E731
    elif backend_name == "mlx":
        import mlx.core as mx

        ma, mb = mx.array(a), mx.array(b)
        run = lambda: mx.matmul(ma, mb)  # noqa: E731
        sync = mx.eval
    else:
        import keras

        from backends.keras.train import compile_fn

        ka, kb = keras.ops.convert_to_tensor(a), keras.ops.convert_to_tensor(b)
        fn = compile_fn(keras.ops.matmul)
        run = lambda: fn(ka, kb)  # noqa: E731
        sync = keras.ops.convert_to_numpy
    sync(run())
    samples = []
    for _ in range(repeats):
        count = max(2, int(2e9 / (2 * n**3)))
        start = time.perf_counter()
        for _ in range(count):
            result = run()
        sync(result)
        samples.append(2 * n**3 * count / (time.perf_counter() - start) / 1e9)
    return samples


class _Timed:
    """One timed variant: a zero-argument step function, its last result, and how to sync on it."""

    def __init__(self, key: str, step, sync, method: str | None):
        self.key, self.step, self.sync, self.method = key, step, sync, method
        self.samples: list[float] = []
        self.per_block = 2

    def run(self, count: int) -> float:
        from backends.spec import dispatch

        with dispatch.use(self.method) if self.method else _nothing():
            start = time.perf_counter()
            for _ in range(count):
                result = self.step()
            self.sync(result)
            return time.perf_counter() - start


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _make(backend, name: str, cfg: ModelConfig, mode: str, method: str | None, compile: bool):
    """A zero-argument step of ``mode`` for ``cfg`` on ``backend``, with its sync."""
    from backends.spec import init_params
    from harness.training import step_noises

    rng = np.random.default_rng(1)
    x = rng.random((BATCH, cfg.input_dim), dtype=np.float32)
    y = rng.integers(0, cfg.num_classes, BATCH)
    model = backend.build_model(cfg, init_params(cfg, 0), "float32")
    if mode == "train":
        trainer = backend.Trainer(model, TrainConfig(batch_size=BATCH), compile=compile)
        noises = step_noises(cfg, 0, 0, BATCH)
        return (lambda: trainer.step(x, y, noises, 1e-4)), backend.to_float
    return (lambda: backend.forward(model, x)[0]), (lambda r: None)


def worker(backend_name: str, request: dict) -> dict:
    """Measure every requested variant on one backend (this process); returns the rows."""
    from backends.spec import dispatch

    if request.get("threads") and backend_name in ("torch", "keras-torch"):
        import torch

        torch.set_num_threads(request["threads"])
    backend = backends.load(backend_name)
    compile = request["compile"]
    timed: list[_Timed] = []
    rows: list[dict] = []
    warmup: dict[str, float] = {}
    for v in request["variants"]:
        cfg = _config(v["cfg"])
        methods = [None]
        if v["label"] == "descending" and request["dispatch"]:
            default = dispatch.method(backend.OPS, cfg.hidden_dim)
            usable = [m for m in dispatch.METHODS if m != "sparse" or (not compile and hasattr(backend.OPS, "nonzero"))]
            methods += [m for m in usable if m != default]
        for mode in ("train", "infer") if v.get("infer", True) else ("train",):
            for method in methods if mode == "train" else [None]:
                key = f"{v['size']}/{v['label']}/{mode}" + (f"/{method}" if method else "")
                start = time.perf_counter()
                with dispatch.use(method) if method else _nothing():
                    step, sync = _make(backend, backend_name, cfg, mode, method, compile)
                    t = _Timed(key, step, sync, method)
                    t.run(request["warmup"])
                    probe = t.run(1)
                warmup[key] = time.perf_counter() - start
                t.per_block = max(2, min(50, round(request["block_seconds"] / max(probe, 1e-6))))
                timed.append(t)
                rows.append({**{k: v[k] for k in ("label", "size", "table2") if k in v}, "equal_to": v.get("equal_to"), "mode": mode})
                rows[-1].update(key=key, dispatch=method or dispatch.method(backend.OPS, cfg.hidden_dim), cfg=v["cfg"])
    for _ in range(request["repeats"]):
        for t in timed:
            t.samples.append(t.run(t.per_block) / t.per_block * 1e3)
    for row, t in zip(rows, timed):
        row.update(ms=statistics.median(t.samples), ms_min=min(t.samples), ms_max=max(t.samples), samples_ms=t.samples)
        row.update(steps_per_block=t.per_block, warmup_s=warmup[t.key])
    rates = matmul_rate(backend_name, request["matmul_n"], request["repeats"])
    return {
        "runtime": backend.runtime_info(),
        "compile": compile,
        "matmul_gflops": statistics.median(rates),
        "matmul_samples": rates,
        "rows": rows,
    }


def _config(fields: dict) -> ModelConfig:
    """A ``ModelConfig`` back from ``dataclasses.asdict``."""
    from backends.spec.config import RouterConfig

    fields = dict(fields, schedule=ScheduleConfig(**fields["schedule"]), router=RouterConfig(**fields["router"]))
    return ModelConfig(**fields)


def worker_main(argv: list[str]) -> int:
    backend_name, request_path, out_path = argv
    result = worker(backend_name, json.loads(Path(request_path).read_text()))
    Path(out_path).write_text(json.dumps(result))
    return 0


# --- the parent: run the workers, derive, report ---------------------------------------------------------


def run_workers(names: list[str], request: dict, timeout: float) -> dict[str, dict]:
    """Each backend's worker in its own process, one after another; a failure is recorded, not raised."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / "request.json"
        for name in names:
            out = Path(tmp) / f"{name}.json"
            req.write_text(json.dumps(dict(request, compile=request["compile"].get(name, False)), default=str))
            env = dict(os.environ)
            if name.startswith("keras-"):
                env["KERAS_BACKEND"] = name.split("-", 1)[1]
            if request.get("threads"):
                env.update(_thread_env(request["threads"], env))
            print(f"  {name} ...", flush=True)
            start = time.perf_counter()
            cmd = [sys.executable, "-m", "harness.bench", "worker", name, str(req), str(out)]
            try:
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                results[name] = {"error": f"timed out after {timeout:.0f} s"}
                continue
            if proc.returncode != 0:
                results[name] = {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
                continue
            results[name] = json.loads(out.read_text()) | {"wall_s": time.perf_counter() - start}
    return results


def _thread_env(threads: int, env: dict) -> dict:
    """Environment capping a worker's compute threads (OpenMP/BLAS for PyTorch and MLX, XLA's CPU pool)."""
    xla = f"{env.get('XLA_FLAGS', '')} --xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'}".strip()
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads), "XLA_FLAGS": xla}


def derive(results: dict[str, dict]) -> float:
    """Add the derived columns to every row in place; returns the machine's matmul rate (GFLOP/s)."""
    rates = [r["matmul_gflops"] for r in results.values() if "rows" in r]
    peak = max(rates) if rates else float("nan")
    for r in results.values():
        rows = r.get("rows", [])
        by_key = {(row["size"], row["label"], row["mode"], row["key"].count("/") > 2): row for row in rows}
        for row in rows:
            cfg = _config(row["cfg"])
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
    """Issue 7's targets on the ``size`` descending training step: value, bound, met."""
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


def _fmt(value, spec: str, empty: str = "") -> str:
    return empty if value is None else format(value, spec)


def table(results: dict[str, dict], peak: float) -> str:
    """The rows as a Markdown table (the README's)."""
    lines = [
        f"Batch {BATCH}; machine fp32 matmul rate {peak:.1f} GFLOP/s (the best backend's own square fp32 matmul, "
        f"this run); median over interleaved rounds (min-max); 20 epochs = ms x {STEPS_PER_EPOCH} steps x {EPOCHS}.",
        "",
        "| backend | size | model | step | dispatch | ms/step (min-max) | samples/s | useful GFLOP/s | % matmul "
        "| x equal-FLOPs MLP | 20 epochs (s) | paper (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if "rows" not in r:
            lines.append(f"| {name} | | | | | {r.get('error', 'skipped')} | | | | | | |")
            continue
        label = name + (" (compiled)" if r.get("compile") else "")
        for row in r["rows"]:
            cells = [
                label,
                row["size"],
                row["label"],
                row["mode"],
                row["dispatch"] if row["experts"] else "",
                f"{row['ms']:.2f} ({row['ms_min']:.2f}-{row['ms_max']:.2f})",
                f"{row['samples_per_s']:,.0f}",
                f"{row['gflops']:.1f}",
                f"{row['pct_matmul']:.0f}",
                _fmt(row["ratio_vs_equal_mlp"], ".2f"),
                _fmt(row["projected_20_epochs_s"], ".0f"),
                _fmt(row["paper_s"], "d"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets_text(t: dict) -> str:
    """The targets as Markdown bullets: value, bound, met or missed (and by how much)."""
    if not t:
        return "No backend measured the Small descending training step."
    p = t["projected_seconds"]
    verdict = "met" if p["met"] else f"missed by {p['value'] - p['bound']:.0f} s ({p['value'] / p['bound']:.2f}x)"
    lines = [
        f"Targets (Small, descending, training step; fastest backend: {t['fastest_backend']}):",
        "",
        f"- 20-epoch projection of the fastest backend: {p['value']:.0f} s (target <= {p['bound']:.0f} s): {verdict}",
    ]
    for key, what in (
        ("backend_spread", "x the fastest"),
        ("matmul_fraction", "of the matmul rate"),
        ("dense_ratio", "x the equal-FLOPs MLP"),
    ):
        for name, v in t[key].items():
            value, bound = v["value"], v["bound"]
            if key == "matmul_fraction":
                shown, target = f"{100 * value:.0f} %", f">= {100 * bound:.0f} %"
            else:
                shown, target = ("n/a" if value is None else f"{value:.2f}"), f"<= {bound}"
            lines.append(f"- {name}: {shown} {what} (target {target}): {'met' if v['met'] else 'missed'}")
    return "\n".join(lines)


def run_bench(args) -> int:
    """``python -m harness bench``: run the workers, write results/bench/<machine>.json and README.md."""
    from harness.environment import fingerprint, machine_slug
    from harness.files import write_json_atomic, write_text_atomic

    names = args.backends or _installed()
    skipped = {name: backends.unavailable_reason(name) for name in backends.BACKENDS if name not in names}
    schedules = list(SCHEDULES) if args.schedules == ["all"] else args.schedules
    request = {
        "variants": [dict(v, cfg=_asdict(v["cfg"])) for size in args.sizes for v in variants(size, schedules)],
        "compile": {name: COMPILE[name] if args.compile == "auto" else args.compile == "on" for name in backends.BACKENDS},
        "dispatch": not args.no_dispatch,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "block_seconds": args.block_seconds,
        "matmul_n": args.matmul_n,
        "threads": args.threads,
    }
    print(f"bench: {', '.join(names)}; sizes {', '.join(args.sizes)}; schedules {', '.join(schedules)}; batch {BATCH}", flush=True)
    start = time.perf_counter()
    results = run_workers(names, request, args.timeout)
    peak = derive(results)
    t = targets(results)
    record = {
        "batch_size": BATCH,
        "steps_per_epoch": STEPS_PER_EPOCH,
        "epochs": EPOCHS,
        "settings": {k: v for k, v in request.items() if k != "variants"},
        "machine_matmul_gflops": peak,
        "paper_table2_seconds": PAPER_TABLE2_SECONDS,
        "targets": t,
        "wall_s": time.perf_counter() - start,
        "environment": fingerprint(),
        "backends": results,
        "skipped": {k: v for k, v in skipped.items() if v},
    }
    text = table(results, peak)
    print(text)
    print(targets_text(t))
    out = Path(args.out) if args.out else RESULTS / f"{machine_slug()}.json"
    print(f"written: {write_json_atomic(out, record)}")
    if not args.out:
        print(f"written: {write_text_atomic(out.parent / 'README.md', readme(record, out.name))}")
    return 0


def readme(record: dict, name: str) -> str:
    """results/bench/README.md from a bench record: settings, the table and the targets."""
    s = record["settings"]
    compiled = ", ".join(k for k, v in s["compile"].items() if v) or "none"
    threads = s.get("threads") or "the frameworks' default"
    env = record["environment"]
    return (
        f"# Benchmark ({env['cpu']}, {env['cpu_count']} cores)\n\nGenerated by `python -m harness bench` into `{name}` "
        f"({record['wall_s']:.0f} s; compute threads per worker: {threads}; compiled: {compiled}; {s['repeats']} rounds).\n\n"
        f"{table(record['backends'], record['machine_matmul_gflops'])}\n\n{targets_text(record['targets'])}\n"
    )


def _installed() -> list[str]:
    return [name for name in backends.BACKENDS if not backends.missing_packages(name)]


def _asdict(cfg: ModelConfig) -> dict:
    import dataclasses

    return dataclasses.asdict(cfg)


def add_bench_command(subparsers) -> None:
    """``bench`` under ``python -m harness``."""
    p = subparsers.add_parser("bench", help="training/inference step speed per backend vs the matmul rate and a dense MLP")
    p.add_argument("--backends", nargs="+", choices=backends.BACKENDS, help="default: every backend installed here")
    p.add_argument("--sizes", nargs="+", default=["small"], choices=list(SIZES))
    p.add_argument("--schedules", nargs="+", default=list(SCHEDULES), help="DynaMoE schedules to time ('all' = every one)")
    p.add_argument("--repeats", type=int, default=7, help="interleaved timing rounds (median and spread over them)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant before timing")
    p.add_argument("--block-seconds", type=float, default=0.25, help="about how long one variant's block of steps takes")
    p.add_argument("--matmul-n", type=int, default=1024, help="size of the square fp32 matmul giving the machine's rate")
    p.add_argument("--compile", choices=["auto", "on", "off"], default="auto", help="auto: per backend, as measured best (COMPILE)")
    p.add_argument("--no-dispatch", action="store_true", help="skip the expert-dispatch comparison (spec.dispatch)")
    p.add_argument("--threads", type=int, default=None, help="cap each worker's compute threads (default: the frameworks' own)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per backend worker")
    p.add_argument("--out", default=None, help="JSON path (default results/bench/<machine>.json, with README.md beside it)")
    p.set_defaults(func=run_bench)


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        sys.exit(worker_main(sys.argv[2:]))
    parser = argparse.ArgumentParser(prog="python -m harness.bench")
    add_bench_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *sys.argv[1:]])
    sys.exit(args.func(args))
