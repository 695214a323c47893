"""The sweep commands of ``python -m harness``: list, run, report, figures, compare."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import backends
from harness.environment import REPO

DEFAULT_RESULTS = REPO / "results"


def _results(args) -> Path:
    return Path(args.results_dir) if args.results_dir else DEFAULT_RESULTS


def cmd_list(args) -> int:
    from harness.experiments import REGISTRY, run_source
    from harness.runner import plan

    print(f"{'name':20} {'paper':10} {'runs/backend/seed':>18}  title")
    for name, e in REGISTRY.items():
        source = run_source(e)
        if source is e and e.rows:
            count = str(len(plan(e, ["torch"], [0])))
        elif source is not None:
            count = f"runs of {source.name}"
        else:
            count = "spec only"
        print(f"{name:20} {e.paper_ref:10} {count:>18}  {e.title}")
    return 0


def _filter_rows(experiment, only: list[str]):
    import dataclasses

    if not only:
        return experiment
    wanted = [item.split("=", 1) for item in only]
    for item in wanted:
        if len(item) != 2 or item[0] not in experiment.label_keys:
            raise ValueError(f"--only {'='.join(item)}: use LABEL=VALUE with LABEL one of {', '.join(experiment.label_keys)}")
    allowed: dict[str, set[str]] = {}
    for k, v in wanted:
        allowed.setdefault(k, set()).add(v)
    rows = tuple(r for r in experiment.rows if all(r.labels.get(k) in vs for k, vs in allowed.items()))
    if not rows:
        raise ValueError(f"--only {' '.join(only)} selects no row of {experiment.name}")
    return dataclasses.replace(experiment, rows=rows)


def cmd_run(args) -> int:
    from harness.experiments import get, run_source
    from harness.runner import plan, run_specs
    from harness.store import Store

    experiment = get(args.experiment)
    source = run_source(experiment)
    if source is None:
        print(f"{experiment.name} is computed from the spec alone: nothing to train (python -m harness figures {experiment.name})")
        return 0
    source = _filter_rows(source, args.only)
    names = args.backend or ["torch"]
    for name in names:
        reason = backends.unavailable_reason(name)
        if reason:
            raise backends.BackendUnavailable(reason)
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    specs = plan(source, names, seeds, args.epochs, args.dataset, args.quick, args.num_samples)
    if not args.dataset:
        _require_data(source, specs, args.data_dir)
    store = Store(_results(args))
    done = sum(store.has(s.key) for s in specs)
    print(
        f"{source.name} ({source.paper_ref}): {len(specs)} runs on {', '.join(names)}, seeds {' '.join(map(str, seeds))}; "
        f"{done} already in {store.root}, {len(specs) - done if not args.rerun else len(specs)} to run, {args.jobs} at a time",
        flush=True,
    )
    outcomes = run_specs(specs, store, jobs=args.jobs, compile=args.compile, rerun=args.rerun, data_dir=args.data_dir)
    failed = [o for o in outcomes if o.status == "failed"]
    stopped = [o for o in outcomes if o.status == "interrupted"]
    if stopped:
        print(
            f"interrupted: {sum(o.status == 'done' for o in outcomes)} trained, {len(stopped)} stopped or not started "
            f"(the same command resumes them from their last finished epoch)",
            file=sys.stderr,
        )
        return 130
    print(
        f"done: {sum(o.status == 'done' for o in outcomes)} trained, "
        f"{sum(o.status == 'skipped' for o in outcomes)} skipped, {len(failed)} failed"
    )
    for o in failed:
        print(f"  FAILED {o.spec.describe()}: {o.message} (details: {store.failure_path(o.spec.key)})", file=sys.stderr)
    if not failed:
        print(f"next: python -m harness report {source.name}" + (f" --results-dir {args.results_dir}" if args.results_dir else ""))
    return 1 if failed else 0


def _require_data(experiment, specs, data_dir) -> None:
    """Fail before any run when the protocol's dataset is missing, naming both ways out."""
    from harness.data import DataError, locate

    for name in sorted({s.dataset for s in specs} - {"synthetic"}):
        try:
            locate(name, data_dir).require()
        except DataError as exc:
            raise ValueError(
                f"{experiment.name} needs {name}, which is not here ({exc}). Fetch it with `python -m harness data fetch {name}` "
                f"or give --data-dir, or run the protocol on another dataset with --dataset (e.g. fashion_mnist)"
            ) from exc


def cmd_report(args) -> int:
    from harness import report, results_index
    from harness.experiments import REGISTRY, get
    from harness.files import write_text_atomic
    from harness.store import Store

    store = Store(_results(args))
    records = list(store.records())
    names = args.experiments or [n for n, e in REGISTRY.items() if e.kind != "figure"]
    for name in names:
        if get(name).kind == "figure":
            raise ValueError(f"{name} is a figure: python -m harness figures {name}")
    sections = {n: report.sections(e, records) for n, e in REGISTRY.items() if e.kind != "figure"}
    out = _results(args) / "tables"
    for name in names:
        experiment, secs = get(name), sections[name]
        if not secs:
            print(
                f"{name}: no runs in {store.root} yet: python -m harness run {name} --backend torch"
                + (" --dataset fashion_mnist" if experiment.dataset == "mnist" else "")
            )
            continue
        md = report.to_markdown(experiment, secs)
        write_text_atomic(out / f"{name}.md", md)
        write_text_atomic(out / f"{name}.csv", report.to_csv(secs))
        write_text_atomic(out / f"{name}.tex", report.to_latex(secs))
        print(md)
    index = write_text_atomic(_results(args) / "README.md", results_index.render(_results(args), records, sections))
    print(f"tables written to {out}; summary: {index}")
    return 0


def cmd_figures(args) -> int:
    from harness import plots, report
    from harness.experiments import REGISTRY, get

    store_root = _results(args)
    from harness.store import Store

    records = list(Store(store_root).records())
    out = store_root / "figures"
    out.mkdir(parents=True, exist_ok=True)
    names = args.figures or [n for n, e in REGISTRY.items() if e.kind == "figure"]
    import matplotlib.pyplot as plt

    for name in names:
        fig_exp = get(name)
        if fig_exp.plot is None:
            raise ValueError(f"{name} is not a figure: python -m harness report {name}")
        draw = getattr(plots, fig_exp.plot)
        if fig_exp.source is None:
            fig = draw()
        else:
            source = get(fig_exp.source)
            groups = report.match(source, records)
            if not groups:
                print(f"{name}: no runs yet; produce them with: python -m harness run {source.name} --backend torch")
                continue
            protocol, rows = max(groups.items(), key=lambda kv: (sum(len(r) for _, r in kv[1]), str(kv[0])))
            backend, dataset, epochs, cut = protocol
            title = f"{fig_exp.paper_ref}: {fig_exp.title}\n{backend}, {dataset}, {epochs} epochs" + (
                f", first {cut:,} samples" if cut else ""
            )
            fig = draw(rows, title)
        for ext in ("png", "pdf"):
            fig.savefig(
                out / f"{name}.{ext}", dpi=120, bbox_inches="tight", metadata={"CreationDate": None} if ext == "pdf" else {"Software": None}
            )
        plt.close(fig)
        print(f"{name}: {out / name}.png, .pdf")
    return 0


def cmd_compare(args) -> int:
    from harness import compare
    from harness.files import write_text_atomic
    from harness.store import Store

    a, b = Store(args.store_a), Store(args.store_b)
    for s in (a, b):
        if not s.runs.is_dir():
            raise ValueError(f"{s.root} holds no results store (no runs/ folder): give a --results-dir of `harness run`")
    pairs = compare.compare(a, b, args.backend_a, args.backend_b)
    command = " ".join(
        ["python -m harness compare", args.store_a, args.store_b]
        + [f"--backend-a {args.backend_a}"] * bool(args.backend_a)
        + [f"--backend-b {args.backend_b}"] * bool(args.backend_b)
        + [f"--out {args.out}"] * bool(args.out)
    )
    text = compare.to_markdown(
        pairs,
        f"{a.root}" + (f" [{args.backend_a}]" if args.backend_a else ""),
        f"{b.root}" + (f" [{args.backend_b}]" if args.backend_b else ""),
        command,
    )
    print(text)
    if args.out:
        print(f"written: {write_text_atomic(args.out, text)}")
    return 0 if all(p["ok"] for p in pairs) else 1


def add_commands(sub) -> None:
    sub.add_parser("list", help="every experiment: the paper's tables and figures, and the extra ones").set_defaults(func=cmd_list)

    def results_arg(p):
        p.add_argument("--results-dir", default=None, help=f"results store (default {DEFAULT_RESULTS})")

    p = sub.add_parser("run", help="run an experiment's sweep; finished runs are skipped, so an interrupted sweep resumes")
    p.add_argument("experiment", help="table1..table7, figure1..figure11, or another name of `list`")
    p.add_argument("--backend", nargs="+", choices=backends.BACKENDS, help="backends to run on (default torch)")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="seeds (default 0 1 2; 0 with --quick)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: the paper's protocol, 20 or 25)")
    p.add_argument("--dataset", default=None, help="run the protocol on this dataset instead of the paper's")
    p.add_argument("--num-samples", type=int, default=None, help="keep the first N training samples")
    p.add_argument("--quick", action="store_true", help="2 epochs on 2,000 images (64 text windows), seed 0: a smoke run")
    p.add_argument(
        "--only",
        nargs="+",
        action="extend",
        default=[],
        metavar="LABEL=VALUE",
        help="only rows with these labels (values of one label: any; different labels: all), e.g. size=Tiny",
    )
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes); threads are split between them")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="framework compiler (default: keras-jax, mlx)")
    p.add_argument("--rerun", action="store_true", help="recompute finished runs (their old records are kept under runs/superseded/)")
    p.add_argument("--data-dir", default=None)
    results_arg(p)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("report", help="paper-vs-measured tables (Markdown, CSV, LaTeX) from the store")
    p.add_argument("experiments", nargs="*", help="default: every table with runs")
    results_arg(p)
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("figures", help="Figures 1-11 (PNG and PDF) from the store")
    p.add_argument("figures", nargs="*", help="default: all")
    results_arg(p)
    p.set_defaults(func=cmd_figures)
    p = sub.add_parser("compare", help="pair the runs of two stores by config and report the differences")
    p.add_argument("store_a")
    p.add_argument("store_b")
    p.add_argument("--backend-a", default=None, help="only this backend's runs of STORE_A")
    p.add_argument("--backend-b", default=None, help="only this backend's runs of STORE_B")
    p.add_argument("--out", default=None, help="also write the Markdown here")
    p.set_defaults(func=cmd_compare)
