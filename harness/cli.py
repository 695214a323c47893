"""``python -m harness``: train, sweep the paper's experiments, report, plot, compare, benchmark, fetch data.

Every subcommand is registered one way: a function ``add(subparsers)`` that adds its parser and sets
``func``, the handler that takes the parsed arguments and returns the exit code. :data:`COMMANDS` lists
them in the order ``--help`` shows them. Those defined here are made by :func:`command` from a name, a
help line, a handler and a function adding the arguments; a package with its own command exposes the
same kind of function as ``add_command`` (``harness.bench``, ``harness.data.cli``). The frameworks
(torch, Keras, MLX) are imported only when a backend is loaded, and matplotlib only by ``figures``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

import backends
from backends.spec import accounting, kinds
from backends.spec.config import (
    MODEL_KINDS,
    ROUTER_KINDS,
    SCHEDULES,
    SIZES,
    ModelConfig,
    MoUEConfig,
    RouterConfig,
    ScheduleConfig,
    TrainConfig,
)
from harness import bench, claims, compare, demo, parity, report, results_index
from harness.data import DataError, load, locate
from harness.data import cli as data_cli
from harness.environment import REPO, fingerprint, machine_slug
from harness.experiments import REGISTRY, get, run_source
from harness.files import write_json_atomic, write_text_atomic
from harness.runner import on_hardware, plan, run_configs
from harness.store import Store, StoreError
from harness.store_check import add_command as add_store_command
from harness.training import train
from harness.writable import existing_store, writable_dir, writable_file

DEFAULT_RESULTS = REPO / "results"
Handler = Callable[[argparse.Namespace], int]
Registrar = Callable[[argparse._SubParsersAction], object]  # adds one subcommand


def command(name: str, help: str, handler: Handler, add_arguments: Callable[[argparse.ArgumentParser], None] | None = None) -> Registrar:
    """The registration function of subcommand ``name``: it adds the parser, its arguments and ``func``."""

    def add(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
        p = subparsers.add_parser(name, help=help)
        if add_arguments is not None:
            add_arguments(p)
        p.set_defaults(func=handler)
        return p

    return add


# --- argument checks: one line naming the flag and what it takes, exit 2, before any work ----------


class Parser(argparse.ArgumentParser):
    """argparse with its errors as one line on stderr (``error: ...``, exit 2), without the usage block."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")

    def _get_values(self, action, arg_strings):
        if action.nargs is None and arg_strings == ["--"]:  # argparse drops the "--" and hands on an empty list
            self.error(f"argument {'/'.join(action.option_strings)}: expected one value, not --")
        return super()._get_values(action, arg_strings)


def positive_int(text: str) -> int:
    """An argparse type: a whole number of 1 or more (0 or less is not "the default": it is refused)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number: give 1 or more") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed: give 1 or more (leave the flag out for the default)")
    return value


def seed_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number: give 0 or more") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is not allowed: give 0 or more")
    return value


def _check_router_bounds(args, cfg: ModelConfig) -> None:
    """Refuse a K the router could never use: more experts than any layer has (the spec would clamp it)."""
    widths = kinds.layer_widths(cfg)
    if not widths:
        return
    most = max(widths)
    asked = {"topk": [("--top-k", cfg.router.top_k)], "dynamic": [("--k-min", cfg.router.k_min), ("--k-max", cfg.router.k_max)]}
    for flag, value in asked.get(cfg.router.kind, []):
        if value is not None and value > most:
            raise ValueError(
                f"{flag} {value}: no layer has that many experts (the most is {most}, layers {' '.join(map(str, widths))}); "
                f"give {flag} between 1 and {most}, or raise --e-max"
            )


# --- train, demo, parity, params, backends ---------------------------------------------------------


def _add_model_args(p: argparse.ArgumentParser) -> None:
    defaults = RouterConfig()
    p.add_argument("--size", default="small", choices=list(SIZES), help="model size (Table 1)")
    p.add_argument("--kind", default="dynamoe", choices=MODEL_KINDS, help="DynaMoE, the dense MLP baseline, or MoUE")
    p.add_argument("--schedule", default="descending", choices=SCHEDULES, help="expert schedule (Eq. 8-12)")
    p.add_argument("--e-min", type=int, default=1, help="E_min of the schedule")
    p.add_argument("--e-max", type=int, default=8, help="E_max of the schedule")
    p.add_argument("--tau", type=float, default=defaults.tau, help="percentile threshold in percent (Eq. 4)")
    p.add_argument("--temperature", type=float, default=defaults.temperature, help="T of Eq. 6")
    p.add_argument("--noise", type=float, default=defaults.noise_std, help="gate-noise sigma of Eq. 7")
    p.add_argument("--k-min", type=int, default=defaults.k_min, help="minimum active experts (Eq. 5)")
    p.add_argument("--k-max", type=int, default=None, help="maximum active experts (default: E_l)")
    p.add_argument("--scope", default=defaults.scope, choices=["batch", "token"], help="percentile scope (spec.dynamic)")
    p.add_argument("--router", default=defaults.kind, choices=ROUTER_KINDS, help="routing rule (spec.routers)")
    p.add_argument("--top-k", type=int, default=defaults.top_k, help="K of the top-k router")
    p.add_argument("--capacity-factor", type=float, default=defaults.capacity_factor, help="Switch / GShard / expert-choice capacity")
    p.add_argument("--balance-weight", type=float, default=defaults.balance_weight, help="auxiliary balancing-loss weight (0: none)")
    moue = MoUEConfig()
    p.add_argument("--pool-size", type=int, default=moue.pool_size, help="MoUE: universal experts U")
    p.add_argument("--stride", type=int, default=moue.stride, help="MoUE: window rotation per layer (default U // L)")
    p.add_argument("--local-experts", type=int, default=moue.local_experts, help="MoUE: layer-local experts per layer")
    p.add_argument("--trajectory-dim", type=int, default=moue.trajectory_dim, help="MoUE: router trajectory-state size (0: none)")
    p.add_argument("--no-exposure-correction", action="store_true", help="MoUE: balancing loss without the depth-aware exposure correction")


def _model_config(args, input_dim: int, num_classes: int, task: str = "classify", vocab_size: int = 50_257) -> ModelConfig:
    router = RouterConfig(
        args.tau,
        args.temperature,
        args.noise,
        args.k_min,
        args.k_max,
        args.scope,
        kind=args.router,
        top_k=args.top_k,
        capacity_factor=args.capacity_factor,
        balance_weight=args.balance_weight,
    )
    moue = None
    if args.kind == "moue":
        moue = MoUEConfig(args.pool_size, args.stride, args.local_experts, args.trajectory_dim, not args.no_exposure_correction)
    return ModelConfig(
        size=args.size,
        kind=args.kind,
        task=task,
        input_dim=input_dim,
        num_classes=num_classes if task == "classify" else 10,
        vocab_size=vocab_size,
        schedule=ScheduleConfig(args.schedule, args.e_min, args.e_max),
        router=router,
        moue=moue,
    )


def cmd_train(args) -> int:
    _check_router_bounds(args, _model_config(args, 1, 10))  # the flags alone, before any import or data
    if args.json_out:
        writable_file(args.json_out, "--json-out")
    backends.load(args.backend)  # a bad or missing backend fails before the data are read
    data = load(args.dataset, data_dir=args.data_dir, seed=args.seed, num_samples=args.num_samples)
    cfg = _model_config(args, data.input_dim, data.num_classes, data.task, data.num_classes if data.task == "lm" else 50_257)
    train_cfg = TrainConfig(lr=args.lr, batch_size=args.batch_size, epochs=args.epochs)
    print(
        f"{args.backend}: {cfg.kind} {cfg.size} {cfg.schedule.name if cfg.kind != 'mlp' else ''} "
        f"experts {cfg.experts_per_layer() if cfg.kind != 'mlp' else '-'}, {accounting.parameter_count(cfg):,} parameters, "
        f"{len(data.x_train):,} train / {len(data.x_test):,} test samples ({data.name})"
    )
    bar = tqdm(total=None, unit="step", leave=False, disable=not sys.stderr.isatty() or args.quiet)

    def on_step(i: int, n: int) -> None:
        bar.total = n
        bar.update(1)

    def on_epoch(r) -> None:
        bar.reset()
        active = " ".join(f"{s['avg_active']:.2f}" for s in r.layers)
        metric = f"ppl {r.perplexity:9.2f}" if cfg.task == "lm" else f"test acc {100 * r.test_accuracy:6.2f} %"
        tqdm.write(
            f"epoch {r.epoch:3d}/{train_cfg.epochs}  train loss {r.train_loss:.4f}  test loss {r.test_loss:.4f}  {metric}  "
            f"{r.seconds:6.1f} s" + (f"  active/layer {active}" if active else "")
        )

    history, model = train(args.backend, cfg, train_cfg, data, args.seed, compile=args.compile, on_epoch=on_epoch, on_step=on_step)
    bar.close()
    if args.json_out:
        backend = backends.load(args.backend)
        record = {
            "backend": args.backend,
            "dataset": data.name,
            "train_samples": len(data.x_train),
            "test_samples": len(data.x_test),
            "seed": args.seed,
            "model": dataclasses.asdict(cfg),
            "train": train_cfg.as_dict(),
            "parameters": accounting.parameter_count(cfg),
            "epochs": [r.as_dict() for r in history],
            "environment": fingerprint(backend.runtime_info()),
        }
        write_json_atomic(args.json_out, record)
    return 0


def _train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="torch", help=f"one of {', '.join(backends.BACKENDS)}")
    p.add_argument("--dataset", default="synthetic", help="synthetic, mnist, fashion_mnist, cifar10, wikitext2, recycling_the_web_1k")
    p.add_argument("--data-dir", default=None, help="directory holding the dataset files")
    p.add_argument("--num-samples", type=positive_int, default=None, help="keep only the first N training samples")
    p.add_argument("--epochs", type=positive_int, default=2)
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--lr", type=float, default=TrainConfig().lr)
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--compile", action="store_true", help="use the framework's compiler")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json-out", default=None, help="also write the config, per-epoch metrics and environment as JSON")
    _add_model_args(p)


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backends", nargs="+", choices=backends.BACKENDS, help="default: every backend installed here")
    p.add_argument("--epochs", type=positive_int, default=3)
    p.add_argument("--num-samples", type=positive_int, default=10_000, help="training samples kept (the test set is always whole)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results-dir", default=None, help="keep the runs in this store (default: a temporary one)")


def cmd_params(args) -> int:
    print(f"{'table':8} {'row':14} {'paper':>10} {'ours':>10} {'gap':>8}")
    for row in accounting.paper_comparison():
        print(f"{row['table']:8} {row['row']:14} {row['paper']:>10,} {row['ours']:>10,} {100 * row['gap']:>+7.1f}%")
    return 0


def cmd_backends(args) -> int:
    for name in backends.BACKENDS:
        reason = backends.unavailable_reason(name)
        print(f"{name:12} {'available' if reason is None else 'unavailable: ' + reason}")
    return 0


def cmd_parity(args) -> int:
    names = args.backends or backends.available()
    for name in names:
        reason = backends.unavailable_reason(name)
        if reason:
            raise backends.BackendUnavailable(reason)
    steps = args.steps or (20 if args.quick else 100)
    print(f"parity matrix: {', '.join(names)}; {steps}-step trajectories (each backend in its own process)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        results = parity.run_workers(names, steps, tmp)
    matrix = parity.compare(results)
    failures = parity.verdicts(matrix)
    print(parity.format_matrix(matrix))
    runtimes = {name: json.loads(str(r["runtime"])) for name, r in results.items()}
    device = "gpu" if any(rt.get("device") in ("cuda", "gpu") for rt in runtimes.values()) else "cpu"
    out = args.out or REPO / "results" / "parity" / f"{machine_slug(device)}{'-quick' if args.quick else ''}.json"
    record = {
        "steps": steps,
        "tolerances": parity.TOLERANCES,
        "environment": fingerprint(),
        "runtimes": runtimes,
        **matrix,
        "failures": failures,
    }
    print(f"written: {write_json_atomic(out, record)}")
    for failure in failures:
        print(f"OUT OF TOLERANCE: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _parity_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backends", nargs="+", choices=backends.BACKENDS, help="default: every backend installed here")
    p.add_argument("--steps", type=positive_int, default=None, help="training-trajectory steps (default 100; 20 with --quick)")
    p.add_argument("--quick", action="store_true", help="20-step trajectories, written as <machine>-quick.json")
    p.add_argument("--out", default=None, help="JSON path (default results/parity/<device>-<machine>-<os>.json)")


# --- the sweep commands: list, run, report, figures, compare --------------------------------------


def _results(args) -> Path:
    return Path(args.results_dir) if args.results_dir else DEFAULT_RESULTS


def cmd_list(args) -> int:
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
    if not only:
        return experiment
    wanted = [item.split("=", 1) for item in only]
    for item in wanted:
        if len(item) != 2 or item[0] not in experiment.label_keys:
            raise ValueError(f"--only {'='.join(item)}: use LABEL=VALUE with LABEL one of {', '.join(experiment.label_keys)}")
    allowed: dict[str, set[str]] = {}
    for k, v in wanted:
        allowed.setdefault(k, set()).add(v)
    for k, vs in allowed.items():
        known = sorted({str(r.labels.get(k)) for r in experiment.rows if k in r.labels})
        unknown = sorted(vs - set(known))
        if unknown:
            raise ValueError(f"--only {k}={unknown[0]}: {experiment.name} has no such {k}; its values are: {', '.join(known)}")
    rows = tuple(r for r in experiment.rows if all(r.labels.get(k) in vs for k, vs in allowed.items()))
    if not rows:
        raise ValueError(f"--only {' '.join(only)} selects no row of {experiment.name}")
    return dataclasses.replace(experiment, rows=rows)


def cmd_run(args) -> int:
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
    writable_dir(_results(args), "--results-dir")
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    _check_executor_args(args)
    configs = plan(source, names, seeds, args.epochs, args.dataset, args.quick, args.num_samples, args.patience)
    runs = on_hardware(configs, args.hardware)
    if not args.dataset and not (args.executor == "ray" and args.ray_address):  # a cluster's nodes hold their own data
        _require_data(source, runs, args.data_dir)
    with _executor(args) as executor:
        return _sweep(args, source, names, seeds, runs, executor)


def _check_executor_args(args) -> None:
    """The Ray flags need ``--executor ray``; the values are checked before anything connects."""
    ray_flags = {"--ray-address": args.ray_address, "--hardware": args.hardware, "--cpus-per-run": args.cpus_per_run}
    ray_flags.update({"--gpus-per-run": args.gpus_per_run, "--retries": args.retries})
    given = [flag for flag, value in ray_flags.items() if value is not None]
    if args.executor != "ray" and given:
        raise ValueError(f"{given[0]} needs --executor ray (the local executor runs every run on this machine)")
    if args.executor == "ray":
        from harness.ray_executor import check_kinds

        check_kinds(args.hardware)


def _executor(args):
    """The executor of ``run``: ``None`` (the local one, ``--jobs`` processes here) or a connected Ray one."""
    if args.executor != "ray":
        import contextlib

        return contextlib.nullcontext(None)
    from harness.ray_executor import open_executor

    return open_executor(
        args.ray_address,
        cpus_per_run=args.cpus_per_run or 1.0,
        gpus_per_run=args.gpus_per_run,
        retries=2 if args.retries is None else args.retries,
    )


def _sweep(args, source, names, seeds, runs, executor) -> int:
    store = Store(_results(args))
    done = sum(store.has(s.key) for s in runs)
    for damage in filter(None, (store.damaged(s.key) for s in runs)):
        print(f"note: {damage}: recomputed (the file goes to {store.root / 'quarantine'} when its run is written)", file=sys.stderr)
    print(
        f"{source.name} ({source.paper_ref}): {len(runs)} runs on {', '.join(names)}, seeds {' '.join(map(str, seeds))}; "
        f"{done} already in {store.root}, {len(runs) - done if not args.rerun else len(runs)} to run, "
        + (f"{args.jobs} at a time" if executor is None else f"on Ray as its nodes take them ({executor.cpus:g} CPUs a run)"),
        flush=True,
    )
    outcomes = run_configs(
        runs,
        store,
        jobs=args.jobs,
        compile=args.compile,
        rerun=args.rerun,
        data_dir=args.data_dir,
        wait_claimed=args.wait,
        executor=executor,
    )
    failed = [o for o in outcomes if o.status == "failed"]
    claimed = [o for o in outcomes if o.status == "claimed"]
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
        print(f"  FAILED {o.config.describe()}: {o.message} (details: {store.failure_path(o.config.key)})", file=sys.stderr)
    if claimed:
        owners = sorted({o.message.removesuffix(" (its source run)") for o in claimed})
        print(
            f"{len(claimed)} runs claimed by another sweep ({'; '.join(owners)}): skipped; rerun this command when it ends "
            f"(or add --wait to wait for it)",
            file=sys.stderr,
        )
    elif not failed:
        print(f"next: python -m harness report {shlex.quote(source.name)}" + _results_flag(args))
    return 1 if failed else 0


def _results_flag(args) -> str:
    return f" --results-dir {shlex.quote(str(args.results_dir))}" if args.results_dir else ""


def _run_hint(experiment, args) -> str:
    """The command that produces ``experiment``'s runs, on Fashion-MNIST where MNIST is not here."""
    hint = f"python -m harness run {shlex.quote(experiment.name)} --backend torch"
    if experiment.dataset == "mnist" and not locate("mnist", getattr(args, "data_dir", None)).complete:
        hint += " --dataset fashion_mnist"
    return hint + _results_flag(args)


def _require_data(experiment, runs, data_dir) -> None:
    """Fail before any run when the protocol's dataset is missing, naming both ways out."""
    for name in sorted({s.dataset for s in runs} - {"synthetic"}):
        try:
            locate(name, data_dir).require()
        except DataError as exc:
            raise ValueError(
                f"{experiment.name} needs {name}, which is not here: {exc}\n"
                f"Or run the protocol on another dataset with --dataset (e.g. fashion_mnist)."
            ) from exc


def cmd_report(args) -> int:
    writable_dir(existing_store(_results(args)) / "tables", "--results-dir")
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
            print(f"{name}: no runs in {store.root} yet: {_run_hint(experiment, args)}")
            continue
        md = report.to_markdown(experiment, secs, records)
        write_text_atomic(out / f"{name}.md", md)
        write_text_atomic(out / f"{name}.csv", report.to_csv(secs))
        write_text_atomic(out / f"{name}.tex", report.to_latex(secs))
        print(md)
    index = write_text_atomic(_results(args) / "README.md", results_index.render(_results(args), records, sections))
    print(f"tables written to {out}; summary: {index}")
    return 0


def cmd_figures(args) -> int:
    store_root = existing_store(_results(args))
    out = writable_dir(store_root / "figures", "--results-dir")

    import matplotlib.pyplot as plt

    from harness import plots  # matplotlib: loaded by this command alone

    records = list(Store(store_root).records())
    names = args.figures or [n for n, e in REGISTRY.items() if e.kind == "figure"]
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
                print(f"{name}: no runs yet; produce them with: {_run_hint(source, args)}")
                continue
            protocol, rows = max(groups.items(), key=lambda kv: (sum(len(r) for _, r in kv[1]), str(kv[0])))
            backend, dataset, epochs, cut, _patience = protocol
            title = f"{fig_exp.paper_ref}: {fig_exp.title}\n{backend}, {dataset}, {epochs} epochs" + (
                f", first {cut:,} samples" if cut else ""
            )
            if fig_exp.beside is None:
                fig = draw(rows, title)
            else:  # the other experiment's runs on the same backend and dataset, of every protocol
                beside = [
                    rec
                    for (b, d, *_), pairs in report.match(get(fig_exp.beside), records).items()
                    if (b, d) == (backend, dataset)
                    for _, recs in pairs
                    for rec in recs
                ]
                fig = draw(rows, title, beside)
        for ext in ("png", "pdf"):
            fig.savefig(
                out / f"{name}.{ext}", dpi=120, bbox_inches="tight", metadata={"CreationDate": None} if ext == "pdf" else {"Software": None}
            )
        plt.close(fig)
        print(f"{name}: {out / name}.png, .pdf")
    return 0


def cmd_claims(args) -> int:
    records = list(Store(_results(args)).records())
    print(claims.to_text(claims.judgements(records)), end="")
    return 0


def cmd_compare(args) -> int:
    if args.out:
        writable_file(args.out, "--out")
    a, b = Store(args.store_a), Store(args.store_b)
    for s in (a, b):
        if not s.runs.is_dir():
            raise ValueError(f"{s.root} holds no results store (no runs/ folder): give a --results-dir of `harness run`")
    pairs = compare.compare(a, b, args.backend_a, args.backend_b, args.kind_a, args.kind_b)
    command = " ".join(
        ["python -m harness compare", shlex.quote(args.store_a), shlex.quote(args.store_b)]
        + [f"--backend-a {shlex.quote(args.backend_a)}"] * bool(args.backend_a)
        + [f"--backend-b {shlex.quote(args.backend_b)}"] * bool(args.backend_b)
        + [f"--kind-a {shlex.quote(args.kind_a)}"] * bool(args.kind_a)
        + [f"--kind-b {shlex.quote(args.kind_b)}"] * bool(args.kind_b)
        + [f"--out {shlex.quote(args.out)}"] * bool(args.out)
    )
    text = compare.to_markdown(
        pairs,
        f"{a.root}" + "".join(f" [{x}]" for x in (args.backend_a, args.kind_a) if x),
        f"{b.root}" + "".join(f" [{x}]" for x in (args.backend_b, args.kind_b) if x),
        command,
    )
    print(text)
    if args.out:
        print(f"written: {write_text_atomic(args.out, text)}")
    return 0 if all(p["ok"] for p in pairs) else 1


def _results_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results-dir", default=None, help=f"results store (default {DEFAULT_RESULTS})")


def _run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", help="table1..table7, figure1..figure11, or another name of `list`")
    p.add_argument("--backend", nargs="+", choices=backends.BACKENDS, help="backends to run on (default torch)")
    p.add_argument("--seeds", nargs="+", type=seed_int, default=None, help="seeds (default 0 1 2; 0 with --quick)")
    p.add_argument("--epochs", type=positive_int, default=None, help="epochs (default: the paper's protocol, 20 or 25)")
    p.add_argument("--dataset", default=None, help="run the protocol on this dataset instead of the paper's")
    p.add_argument("--num-samples", type=positive_int, default=None, help="keep the first N training samples")
    p.add_argument(
        "--patience",
        type=positive_int,
        default=None,
        metavar="N",
        help="early stopping: end a run when its held-out metric (perplexity, or accuracy) has not improved for N epochs",
    )
    p.add_argument("--quick", action="store_true", help="2 epochs on 2,000 images (64 text windows), seed 0: a smoke run")
    p.add_argument(
        "--only",
        nargs="+",
        action="extend",
        default=[],
        metavar="LABEL=VALUE",
        help="only rows with these labels (values of one label: any; different labels: all), e.g. size=Tiny",
    )
    p.add_argument("--jobs", type=positive_int, default=1, help="runs in parallel (processes); threads are split between them")
    p.add_argument(
        "--wait", action="store_true", help="wait for runs another sweep has claimed, instead of skipping them"
    )
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="framework compiler (default: keras-jax, mlx)")
    p.add_argument("--rerun", action="store_true", help="recompute finished runs (their old records are kept under runs/superseded/)")
    p.add_argument("--data-dir", default=None, help="the datasets' folder (with --executor ray: on every node, the same path)")
    p.add_argument("--executor", choices=["local", "ray"], default="local", help="where the workers run: here (default) or on Ray")
    p.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDRESS",
        help="join this Ray cluster: auto, HOST:6379 or ray://HOST:10001 (default: start a runtime on this machine, 127.0.0.1 only)",
    )
    p.add_argument("--cpus-per-run", type=positive_float, default=None, help="Ray: CPUs a run takes, and its threads (default 1)")
    p.add_argument("--gpus-per-run", type=non_negative_float, default=None, help="Ray: GPUs a run takes (default 1 on cuda, else 0)")
    p.add_argument(
        "--hardware",
        nargs="+",
        default=None,
        metavar="KIND",
        help="Ray: run each run once per kind (e.g. cpu cuda metal), on nodes declaring the resource hardware:KIND",
    )
    p.add_argument("--retries", type=seed_int, default=None, help="Ray: restarts of a run whose worker or node died (default 2)")
    _results_argument(p)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number: give more than 0") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value:g} is not allowed: give more than 0")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number: give 0 or more") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{value:g} is not allowed: give 0 or more")
    return value


def _report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiments", nargs="*", help="default: every table with runs")
    _results_argument(p)


def _figures_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("figures", nargs="*", help="default: all")
    _results_argument(p)


def _compare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("store_a")
    p.add_argument("store_b")
    p.add_argument("--backend-a", default=None, help="only this backend's runs of STORE_A")
    p.add_argument("--backend-b", default=None, help="only this backend's runs of STORE_B")
    p.add_argument("--kind-a", default=None, help="only STORE_A's runs on this kind of hardware (run --hardware), e.g. cpu")
    p.add_argument("--kind-b", default=None, help="only STORE_B's runs on this kind of hardware, e.g. cuda")
    p.add_argument("--out", default=None, help="also write the Markdown here")


# --- the table of subcommands -----------------------------------------------------------------------

COMMANDS: tuple[Registrar, ...] = (
    command("train", "train one model and print per-epoch metrics", cmd_train, _train_arguments),
    command("demo", "the README's main job: a short Table 4 run on Fashion-MNIST on every installed backend", demo.main, _demo_arguments),
    command("parity", "the backend x backend parity matrix, written as JSON under results/parity/", cmd_parity, _parity_arguments),
    command("params", "our parameter counts beside the paper's (Tables 1-3)", cmd_params),
    command("backends", "which backends can run here, and why not", cmd_backends),
    bench.add_command,
    command("list", "every experiment: the paper's tables and figures, and the extra ones", cmd_list),
    command("run", "run an experiment's sweep; finished runs are skipped, so an interrupted sweep resumes", cmd_run, _run_arguments),
    command("report", "paper-vs-measured tables (Markdown, CSV, LaTeX) from the store", cmd_report, _report_arguments),
    command("figures", "Figures 1-11 (PNG and PDF) from the store", cmd_figures, _figures_arguments),
    command("compare", "pair the runs of two stores by config and report the differences", cmd_compare, _compare_arguments),
    command("claims", "the papers' claims, each tested within our own runs over seeds (Welch's t-test)", cmd_claims, _results_argument),
    data_cli.add_command,
    add_store_command,
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m harness", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    np.set_printoptions(precision=4, suppress=True)
    try:
        return args.func(args)
    except (ValueError, DataError, StoreError, backends.BackendUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
