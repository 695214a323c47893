"""The README's main job: Table 4's Fashion-MNIST row (MLP, uniform, descending; Small), shortened, on
every installed backend, printed beside the paper's numbers.

Each backend trains in its own process (Keras fixes its backend per process) through
``python -m harness train --json-out``; all see the same seed, batches and gate noise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import backends

# Table 4, Fashion-MNIST, Small, 20 epochs on 60,000 images (test accuracy, %).
PAPER = {"MLP": 84.15, "Uniform": 86.82, "Descending": 88.34}
RUNS = {"MLP": ["--kind", "mlp"], "Uniform": ["--schedule", "uniform"], "Descending": ["--schedule", "descending"]}


def _dataset(args) -> str:
    from harness.data import DataError, locate

    try:
        locate("fashion_mnist", args.data_dir).require()
        return "fashion_mnist"
    except DataError as exc:
        print(f"Fashion-MNIST not found ({exc}); running on synthetic data instead.\n", file=sys.stderr)
        return "synthetic"


def main(args) -> int:
    names = args.backends or backends.available()
    if not names:
        print("error: no backend is installed: pip install -e '.[torch]' (see README)", file=sys.stderr)
        return 2
    dataset = _dataset(args)
    print(
        f"Table 4 (Fashion-MNIST, Small) on {', '.join(names)}: {args.num_samples:,} training images, {args.epochs} epochs "
        f"(the paper: 60,000 images, 20 epochs), seed {args.seed}\n",
        flush=True,
    )
    measured: dict[tuple[str, str], dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            env = dict(os.environ, **({"KERAS_BACKEND": name.split("-", 1)[1]} if name.startswith("keras-") else {}))
            for row, extra in RUNS.items():
                out = Path(tmp) / f"{name}-{row}.json"
                cmd = [
                    sys.executable,
                    "-m",
                    "harness",
                    "train",
                    "--backend",
                    name,
                    "--dataset",
                    dataset,
                    "--epochs",
                    str(args.epochs),
                    "--num-samples",
                    str(args.num_samples),
                    "--seed",
                    str(args.seed),
                    "--json-out",
                    str(out),
                    "--quiet",
                    *extra,
                ]
                if name in ("keras-jax", "mlx"):
                    cmd.append("--compile")
                if args.data_dir:
                    cmd += ["--data-dir", args.data_dir]
                start = time.perf_counter()
                print(f"[{name}] {row} ...", end=" ", flush=True)
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if proc.returncode != 0:
                    print("failed")
                    print(proc.stderr[-2000:], file=sys.stderr)
                    continue
                measured[(name, row)] = json.loads(out.read_text())
                last = measured[(name, row)]["epochs"][-1]
                print(f"{100 * last['test_accuracy']:.2f} % ({time.perf_counter() - start:.0f} s)", flush=True)
    print()
    print(format_table(names, measured))
    return 0 if len(measured) == len(names) * len(RUNS) else 1


def format_table(names: list[str], measured: dict) -> str:
    head = f"| {'configuration':13} | {'paper %':>8} | " + " | ".join(f"{n:>11}" for n in names) + f" | {'parameters':>10} |"
    lines = [head, "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"]
    for row, paper in PAPER.items():
        cells, params = [], ""
        for name in names:
            rec = measured.get((name, row))
            cells.append(f"{100 * rec['epochs'][-1]['test_accuracy']:11.2f}" if rec else f"{'failed':>11}")
            params = params or (f"{rec['parameters']:,}" if rec else "")
        lines.append(f"| {row:13} | {paper:8.2f} | " + " | ".join(cells) + f" | {params:>10} |")
    return "\n".join(lines)
