"""The README's main job: Table 4's Fashion-MNIST row (MLP, uniform, descending; Small), shortened, on
every installed backend, through the runner and a results store, printed beside the paper's numbers.

The runs are ``table4``'s, restricted to Fashion-MNIST with ``--num-samples`` and ``--epochs``; each
backend trains in its own worker process on the same seed, batches and gate noise. The store is a
temporary folder unless ``--results-dir`` is given (then a rerun skips what is done).
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile

import backends
from harness.data.registry import info
from harness.experiments import get
from harness.runner import plan, run_configs
from harness.store import Store


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
    experiment = get("table4")
    rows = [r for r in experiment.rows if r.dataset == "fashion_mnist"]
    print(
        f"Table 4 ({info(dataset).title}, Small) on {', '.join(names)}: {args.num_samples:,} training images, "
        f"{args.epochs} epochs (the paper: 60,000 images, 20 epochs), seed {args.seed}\n",
        flush=True,
    )
    source = dataclasses.replace(experiment, rows=tuple(dataclasses.replace(r, dataset=dataset) for r in rows))
    specs = plan(source, names, [args.seed], args.epochs, num_samples=args.num_samples)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(args.results_dir or tmp)
        outcomes = run_configs(specs, store, data_dir=args.data_dir)
        measured = {(s.backend, s.model.kind, s.model.schedule.name): store.get(s.key) for s in specs}
    print()
    print(format_table(names, rows, measured))
    return 0 if all(o.status != "failed" for o in outcomes) else 1


def format_table(names: list[str], rows, measured: dict) -> str:
    head = f"| {'configuration':13} | {'paper %':>8} | " + " | ".join(f"{n:>11}" for n in names) + f" | {'parameters':>10} |"
    lines = [head, "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"]
    for row in rows:
        paper = get("table4").paper_row(row)["accuracy"]
        cfg = row.model_config("fashion_mnist")
        cells, params = [], ""
        for name in names:
            rec = measured.get((name, cfg.kind, cfg.schedule.name))
            cells.append(f"{100 * rec['summary']['accuracy']:11.2f}" if rec else f"{'failed':>11}")
            params = params or (f"{rec['summary']['params']:,}" if rec else "")
        lines.append(f"| {row.labels['config']:13} | {paper:8.2f} | " + " | ".join(cells) + f" | {params:>10} |")
    return "\n".join(lines)
