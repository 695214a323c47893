"""``python -m harness bench``: training- and inference-step speed per backend, against this machine's
measured matrix-multiply rate, a dense MLP of equal active FLOPs and the paper's Table 2 times.

Each backend runs in its own process (``python -m harness.bench.worker``, environment from
``backends.worker_env``), one after another in one run; each row reports the median over interleaved
timing rounds and the spread (min, max). The package by job: ``worker`` measures (in the backend's
process), ``analysis`` chooses the models and derives the columns and targets, ``render`` writes the
Markdown; here the parent runs the workers and writes results/bench/<machine>.json and README.md.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import backends
from backends.spec.config import SCHEDULES, SIZES
from harness.bench import analysis
from harness.bench.analysis import (
    BATCH,
    EPOCHS,
    PAPER_TABLE2_SECONDS,
    STEPS_PER_EPOCH,
    derive,
    derive_lm,
    lm_targets,
    lm_variants,
    regressions,
    step_flops,
    targets,
    variants,
)
from harness.bench.render import lm_table, readme, regressions_text, table, targets_text

__all__ = [
    "add_command",
    "derive",
    "derive_lm",
    "lm_table",
    "lm_targets",
    "lm_variants",
    "readme",
    "regressions",
    "regressions_text",
    "run_bench",
    "run_workers",
    "step_flops",
    "table",
    "targets",
    "targets_text",
    "variants",
]

RESULTS = Path(__file__).resolve().parents[2] / "results" / "bench"


def _run_one(name: str, request: dict, timeout: float, tmp: Path) -> dict:
    """One worker process for backend ``name`` on ``request``; its result, or ``{"error": ...}``."""
    req, out = tmp / "request.json", tmp / f"{name}.json"
    req.write_text(json.dumps(dict(request, compile=request["compile"].get(name, False)), default=str))
    env = backends.worker_env(name, request.get("threads") or 0)
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "harness.bench.worker", name, str(req), str(out)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(out.read_text()) | {"wall_s": time.perf_counter() - start}


def run_workers(names: list[str], request: dict, timeout: float) -> dict[str, dict]:
    """Each backend's worker in its own process, one after another, then each language-model step
    (``request["lm_variants"]``) in a process of its own (its peak memory is the variant's, in the
    backend's ``lm_rows``); a failure is recorded, not raised."""
    results = {}
    lm = request.get("lm_variants", [])
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            print(f"  {name} ...", flush=True)
            results[name] = _run_one(name, request, timeout, Path(tmp)) if request["variants"] else {}
            for v in lm:
                print(f"  {name} {v['key']} ...", flush=True)
                got = _run_one(name, dict(request, variants=[], lm=v), timeout, Path(tmp))
                row = got["rows"][0] if "rows" in got else {**{k: v[k] for k in ("label", "size", "mode", "key")}, "error": got["error"]}
                results[name].setdefault("lm_rows", []).append(row)
    return results


def run_bench(args) -> int:
    """``python -m harness bench``: run the workers, write results/bench/<machine>.json and README.md."""
    from harness.environment import fingerprint, machine_slug
    from harness.files import write_json_atomic, write_text_atomic

    names = args.backends or _installed()
    skipped = {name: backends.unavailable_reason(name) for name in backends.BACKENDS if name not in names}
    schedules = list(SCHEDULES) if args.schedules == ["all"] else args.schedules
    defaults = backends.COMPILE_BY_DEFAULT
    lm_sizes = [] if args.lm_sizes == ["none"] else args.lm_sizes
    request = {
        "variants": [dict(v, cfg=dataclasses.asdict(v["cfg"])) for size in args.sizes for v in variants(size, schedules)],
        "lm_variants": [dict(v, cfg=dataclasses.asdict(v["cfg"])) for v in lm_variants(lm_sizes)],
        "lm_repeats": args.lm_repeats,
        "compile": {name: args.compile == "on" if args.compile != "auto" else compiled for name, compiled in defaults.items()},
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
    derive_lm(results, peak)
    t = targets(results)
    lm_t = lm_targets(results)
    record = {
        "batch_size": BATCH,
        "steps_per_epoch": STEPS_PER_EPOCH,
        "epochs": EPOCHS,
        "settings": {k: v for k, v in request.items() if k != "variants"},
        "machine_matmul_gflops": peak,
        "paper_table2_seconds": PAPER_TABLE2_SECONDS,
        "targets": t,
        "lm_targets": lm_t,
        "wall_s": time.perf_counter() - start,
        "environment": fingerprint(),
        "backends": results,
        "skipped": {k: v for k, v in skipped.items() if v},
    }
    text = table(results, peak)
    print(text)
    print(lm_table(results, peak))
    print(targets_text(t, lm_t))
    status = 0
    if args.against:
        flagged = regressions(record, json.loads(Path(args.against).read_text()))
        record["regressions"] = {"against": str(args.against), "bound": analysis.REGRESSION, "rows": flagged}
        print(regressions_text(record["regressions"]))
        status = 1 if flagged else 0
    out = Path(args.out) if args.out else RESULTS / f"{machine_slug()}.json"
    print(f"written: {write_json_atomic(out, record)}")
    if not args.out:
        print(f"written: {write_text_atomic(out.parent / 'README.md', readme(record, out.name))}")
    return status


def _installed() -> list[str]:
    return [name for name in backends.BACKENDS if not backends.missing_packages(name)]


def add_command(subparsers) -> None:
    """Register ``bench`` (``run_bench``) under ``python -m harness``'s subcommands."""
    p = subparsers.add_parser("bench", help="training/inference step speed per backend vs the matmul rate and a dense MLP")
    p.add_argument("--backends", nargs="+", choices=backends.BACKENDS, help="default: every backend installed here")
    p.add_argument("--sizes", nargs="+", default=["small"], choices=list(SIZES))
    p.add_argument("--schedules", nargs="+", default=list(SCHEDULES), help="DynaMoE schedules to time ('all' = every one)")
    p.add_argument("--repeats", type=int, default=7, help="interleaved timing rounds (median and spread over them)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant before timing")
    p.add_argument("--block-seconds", type=float, default=0.25, help="about how long one variant's block of steps takes")
    p.add_argument("--matmul-n", type=int, default=1024, help="size of the square fp32 matmul giving the machine's rate")
    p.add_argument(
        "--compile", choices=["auto", "on", "off"], default="auto", help="auto: per backend, as measured best (backends.COMPILE_BY_DEFAULT)"
    )
    p.add_argument("--no-dispatch", action="store_true", help="skip the expert-dispatch comparison (spec.dispatch)")
    p.add_argument("--threads", type=int, default=None, help="cap each worker's compute threads (default: the frameworks' own)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per backend worker")
    p.add_argument(
        "--lm-sizes", nargs="+", default=["tiny", "small"], choices=[*SIZES, "none"], help="language-model steps to time ('none': skip)"
    )
    p.add_argument("--lm-repeats", type=int, default=5, help="one-step samples per language-model step (each in its own process)")
    p.add_argument(
        "--against",
        default=None,
        help="a bench JSON (e.g. results/bench/<machine>.json): flag every row more than 25%% slower, each normalised by its run's "
        "matmul rate (exit status 1 when any is)",
    )
    p.add_argument("--out", default=None, help="JSON path (default results/bench/<machine>.json, with README.md beside it)")
    p.set_defaults(func=run_bench)
