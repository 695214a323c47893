"""``python -m harness``: train, inspect parameter counts, list backends (and data, when available)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np

import backends
from backends.spec import accounting
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
    p.add_argument("--scope", default=defaults.scope, choices=["batch", "token"], help="percentile scope (spec.routing)")
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


def _load_data(args):
    from harness.data import load

    return load(args.dataset, data_dir=args.data_dir, seed=args.seed, num_samples=args.num_samples)


def cmd_train(args) -> int:
    from tqdm import tqdm

    from harness.training import train

    backends.load(args.backend)  # a bad or missing backend fails before the data are read
    data = _load_data(args)
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
        from harness.environment import fingerprint
        from harness.files import write_json_atomic

        backend = backends.load(args.backend)
        record = {
            "backend": args.backend,
            "dataset": data.name,
            "train_samples": len(data.x_train),
            "test_samples": len(data.x_test),
            "seed": args.seed,
            "model": dataclasses.asdict(cfg),
            "train": dataclasses.asdict(train_cfg),
            "parameters": accounting.parameter_count(cfg),
            "epochs": [r.as_dict() for r in history],
            "environment": fingerprint(backend.runtime_info()),
        }
        write_json_atomic(args.json_out, record)
    return 0


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
    import json
    import tempfile

    from harness import parity
    from harness.environment import REPO, fingerprint, machine_slug
    from harness.files import write_json_atomic

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train one model and print per-epoch metrics")
    p.add_argument("--backend", default="torch", help=f"one of {', '.join(backends.BACKENDS)}")
    p.add_argument("--dataset", default="synthetic", help="synthetic, mnist, fashion_mnist, cifar10, wikitext2, recycling_the_web_1k")
    p.add_argument("--data-dir", default=None, help="directory holding the dataset files")
    p.add_argument("--num-samples", type=int, default=None, help="keep only the first N training samples")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=TrainConfig().lr)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compile", action="store_true", help="use the framework's compiler")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json-out", default=None, help="also write the config, per-epoch metrics and environment as JSON")
    _add_model_args(p)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("demo", help="the README's main job: a short Table 4 run on Fashion-MNIST on every installed backend")
    p.add_argument("--backends", nargs="+", choices=backends.BACKENDS, help="default: every backend installed here")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--num-samples", type=int, default=10_000, help="training samples kept (the test set is always whole)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results-dir", default=None, help="keep the runs in this store (default: a temporary one)")
    p.set_defaults(func=lambda a: __import__("harness.demo", fromlist=["main"]).main(a))
    p = sub.add_parser("parity", help="the backend x backend parity matrix, written as JSON under results/parity/")
    p.add_argument("--backends", nargs="+", choices=backends.BACKENDS, help="default: every backend installed here")
    p.add_argument("--steps", type=int, default=None, help="training-trajectory steps (default 100; 20 with --quick)")
    p.add_argument("--quick", action="store_true", help="20-step trajectories, written as <machine>-quick.json")
    p.add_argument("--out", default=None, help="JSON path (default results/parity/<device>-<machine>-<os>.json)")
    p.set_defaults(func=cmd_parity)
    sub.add_parser("params", help="our parameter counts beside the paper's (Tables 1-3)").set_defaults(func=cmd_params)
    sub.add_parser("backends", help="which backends can run here, and why not").set_defaults(func=cmd_backends)
    __import__("harness.bench", fromlist=["add_bench_command"]).add_bench_command(sub)
    from harness.commands import add_commands

    add_commands(sub)
    try:
        from harness.data.cli import add_data_commands, run_data_command
    except ImportError:  # the data package is optional at this stage
        pass
    else:
        add_data_commands(sub)
        for action in sub.choices.values():
            if action.prog.endswith(" data"):
                action.set_defaults(func=run_data_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    np.set_printoptions(precision=4, suppress=True)
    from harness.data import DataError
    from harness.store import StoreError

    try:
        return args.func(args)
    except (ValueError, DataError, StoreError, backends.BackendUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
