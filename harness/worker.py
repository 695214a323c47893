"""One run of a sweep: train a ``RunConfig``, summarise it, store the record.

``python -m harness.worker RUN_CONFIG_JSON RESULTS_DIR [--compile]`` runs in its own process (Keras fixes its
backend per process, and a crash takes down one run, not the sweep); it prints one ``epoch ...`` line
per epoch for the parent's progress display and writes ``<key>.json`` (or ``<key>.failed.json``). After
every epoch it leaves a checkpoint in the store, so a run that is killed continues from its last epoch
when the sweep is run again (``--rerun`` starts afresh). ``RUN_CONFIG_JSON`` is a file or ``-``, the
config on stdin (how the runner passes it: no temporary file to leave behind).

A worker dies with its sweep: given ``--parent-pid``, it asks Linux for SIGTERM when its parent dies
(``prctl(PR_SET_PDEATHSIG)``), and elsewhere checks its parent at every step; either way it stops at
once, its temporary files removed, and writes no failure record (the run is not at fault: the next
sweep continues it from its checkpoint). A run that is already finished when it starts, or that another
process finishes first, is left as it is and the worker exits with 0.
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import json
import math
import os
import signal
import sys
import time
import traceback

import numpy as np

import backends
from backends.spec import accounting, rng
from harness.experiments import RunConfig
from harness.probes_summary import add_probes
from harness.store import RecordExists, Store
from harness.training import EpochResult, step_noises, tokens_per_sample

GRADIENT_BATCHES = 8  # mini-batches over which the gate-gradient variance (Theorem 2) is measured
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class ParentGone(BaseException):
    """The sweep that started this worker is gone: stop without recording a failure."""


_parent: int | None = None  # the sweep's pid, when it gave one


def check_parent(*_) -> None:
    """Raise :class:`ParentGone` if the sweep that started this worker has died (a cheap getppid)."""
    if _parent is not None and os.getppid() != _parent:
        raise ParentGone


def _die_with_parent(parent: int) -> None:
    """SIGTERM (a clean exit, see ``main``) when ``parent`` dies: prctl on Linux, polling elsewhere."""
    global _parent
    _parent = parent
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl: the step checks alone
    check_parent()  # the parent may have died before prctl took effect


def _terminated(signum, frame) -> None:
    raise ParentGone  # unwinds: atomic writes remove their temporary files, no failure record


def epochs_to_fraction(accuracies: list[float], fraction: float = 0.95) -> int | None:
    """First epoch (1-based) whose accuracy reaches ``fraction`` of the final one (Table 2's column)."""
    if not accuracies:
        return None
    target = fraction * accuracies[-1]
    return next(i + 1 for i, a in enumerate(accuracies) if a >= target)


def gate_gradient_variance(backend, model, config: RunConfig, data) -> list[float]:
    """Per DynaMoE layer: the variance across ``GRADIENT_BATCHES`` training mini-batches of the gate
    weight's gradient, averaged over its entries (Theorem 2 measured, at the trained parameters).

    The batches are those of the epochs after the last (``rng.batches(seed, epochs, ...)`` on), with the
    gate noise of the steps after the last one, so the measurement uses no randomness of its own.
    """
    cfg = config.model
    if cfg.kind == "mlp":
        return []
    n, size = len(data.x_train), config.train.batch_size
    total = math.ceil(n / size) * config.train.epochs
    per_sample = tokens_per_sample(cfg, data.x_train)
    epochs = itertools.count(config.train.epochs)
    order = itertools.chain.from_iterable(rng.batches(config.seed, epoch, n, size) for epoch in epochs)
    grads: list[list[np.ndarray]] = []
    for i, idx in enumerate(itertools.islice(order, GRADIENT_BATCHES)):
        noises = step_noises(cfg, config.seed, total + i, len(idx) * per_sample)
        _, g = backend.gradients(model, data.x_train[idx], data.y_train[idx], noises)
        grads.append([np.asarray(v, dtype=np.float64) for name, v in sorted(g.items()) if name.endswith(".gate.weight")])
    if len(grads) < 2:
        return []
    return [float(np.var(np.stack([g[layer] for g in grads]), axis=0, ddof=1).mean()) for layer in range(len(grads[0]))]


def summarise(config: RunConfig, history: list[EpochResult]) -> dict:
    """The numbers a report needs, from the per-epoch history and ``backends.spec.accounting``."""
    cfg = config.model
    acc = [h.test_accuracy for h in history]
    ppl = [h.perplexity for h in history]
    last = history[-1]
    active = [layer["avg_active"] for layer in last.layers] or None
    params = accounting.parameter_count(cfg)
    return {
        "accuracy": acc[-1],
        "best_accuracy": max(acc),
        "final_ppl": ppl[-1],
        "best_ppl": min(ppl),
        "train_loss": last.train_loss,
        "test_loss": last.test_loss,
        "epochs_to_95": epochs_to_fraction(acc),
        "train_seconds": sum(h.seconds for h in history),
        "params": params,
        "efficiency": accounting.efficiency(100.0 * acc[-1], params),
        "active_mflops": accounting.active_flops_per_token(cfg, active) / 1e6,
        "layers": last.layers,
    }


def start_params(config: RunConfig, store: Store, *, compile: bool = False, data_dir: str | None = None, echo=print) -> dict | None:
    """The parameters ``config`` starts from: ``None`` (the spec's init), or its source run's trained
    ones, converted by ``spec.moue.moe_to_moue`` when a DynaMoE run starts a MoUE one.

    A source that has not run is run (record and parameters). A finished source that kept no parameters
    is trained again for them (same seeds, so the same weights) and its record is left as it is.
    """
    source = config.init_from
    if source is None:
        return None
    if not store.params_path(source.key).exists():
        tell = lambda line: echo(f"source {source.key}: {line}")  # noqa: E731
        if store.has(source.key):
            echo(f"source run {source.key} ({source.describe()}) kept no parameters: training it again for them")
            _, _, model, _ = _train(source, store, compile=compile, data_dir=data_dir, echo=tell)
            store.put_params(source.key, backends.load(source.backend).export_params(model))
            store.drop_checkpoint(source.key)
        else:
            echo(f"source run {source.key} ({source.describe()}) first")
            run(source, store, compile=compile, data_dir=data_dir, save_params=True, echo=tell)
    params = store.get_params(source.key)
    if source.model.kind == "dynamoe" and config.model.kind == "moue":
        from backends.spec.moue import moe_to_moue

        return moe_to_moue(params, source.model, config.model, seed=config.seed)
    return params


def _train(config: RunConfig, store: Store, *, compile: bool, data_dir: str | None, echo, fresh: bool = False):
    """Load the data and train ``config`` (from its start parameters, or from its checkpoint unless
    ``fresh``), checkpointing every epoch: ``(data, history, model, epochs taken from the checkpoint)``."""
    from harness.data import load
    from harness.training import Checkpoint, train

    data = load(config.dataset, data_dir=data_dir, seed=config.seed, num_samples=config.num_samples)
    if data.task != config.model.task or (data.task == "classify" and data.input_dim != config.model.input_dim):
        raise ValueError(f"{config.dataset} gives {data!r}, which does not fit the run's model config")
    if fresh:
        store.drop_checkpoint(config.key)
    saved = store.get_checkpoint(config.key)
    resume = None if saved is None else Checkpoint.from_arrays(saved)
    if resume is not None:
        echo(f"resuming after epoch {resume.epoch}/{config.train.epochs} ({store.checkpoint_path(config.key)})")
    initial = None if resume is not None else start_params(config, store, compile=compile, data_dir=data_dir, echo=echo)

    def on_epoch(r: EpochResult) -> None:
        ppl = f" ppl {r.perplexity:.1f}" if config.model.task == "lm" else ""
        echo(f"epoch {r.epoch}/{config.train.epochs} loss {r.train_loss:.4f} acc {100 * r.test_accuracy:.2f}{ppl} {r.seconds:.1f}s")

    history, model = train(
        config.backend,
        config.model,
        config.train,
        data,
        config.seed,
        compile=compile,
        dtype=config.dtype,
        on_epoch=on_epoch,
        on_step=check_parent,
        params=initial,
        resume=resume,
        on_checkpoint=lambda c: store.put_checkpoint(config.key, c.to_arrays()),
    )
    return data, history, model, 0 if resume is None else resume.epoch


def run(
    config: RunConfig,
    store: Store,
    *,
    compile: bool = False,
    data_dir: str | None = None,
    supersede: bool = False,
    save_params: bool = False,
    echo=print,
) -> dict:
    """Train ``config`` and store its record (and, with ``save_params``, its trained parameters)."""
    from harness.environment import fingerprint

    backend = backends.load(config.backend)
    started = time.time()
    data, history, model, resumed = _train(config, store, compile=compile, data_dir=data_dir, echo=echo, fresh=supersede)
    record = {
        "key": config.key,
        "status": "done",
        "spec": config.as_dict(),
        "compile": compile,
        "data": {"train_samples": len(data.x_train), "test_samples": len(data.x_test), "source": data.source, "notes": data.notes},
        "epochs": [h.as_dict() for h in history],
        "summary": summarise(config, history),
        "gate_gradient_variance": gate_gradient_variance(backend, model, config, data),
        "environment": fingerprint(backend.runtime_info()),  # of this process: a resumed run's first epochs ran before it
        "resumed_after_epoch": resumed,  # 0: trained in one go
        "started": started,
        "finished": time.time(),
    }
    add_probes(record["summary"], backend, model, config, data)  # a Transformer's probes per layer
    if save_params:  # before the record: a finished record then always has its parameters
        store.put_params(config.key, backend.export_params(model))
    store.put(record, supersede=supersede)
    store.drop_checkpoint(config.key)
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.worker")
    p.add_argument("run_config", metavar="RUN_CONFIG_JSON", help="JSON file holding RunConfig.as_dict(), or - for stdin")
    p.add_argument("results_dir")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--rerun", action="store_true", help="replace a finished record (the old one is kept under runs/superseded/)")
    p.add_argument("--save-params", action="store_true", help="also store the trained parameters (params/<key>.npz)")
    p.add_argument("--parent-pid", type=int, default=None, help="stop when this process (the sweep) is gone")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    try:
        if args.parent_pid is not None:
            _die_with_parent(args.parent_pid)
        return _work(args)
    except (ParentGone, BrokenPipeError):  # the sweep is gone (its pipe with it) or stopped this worker
        _quiet_stdout()
        return 128 + signal.SIGTERM


def _work(args) -> int:
    if args.run_config == "-":
        config_dict = json.load(sys.stdin)
    else:
        with open(args.run_config) as handle:
            config_dict = json.load(handle)
    store = Store(args.results_dir)
    try:
        config = RunConfig.from_dict(config_dict)
        if not args.rerun and store.has(config.key):
            print(f"already finished: {store.path(config.key)} (kept)", flush=True)
            return 0
        run(
            config,
            store,
            compile=args.compile,
            data_dir=args.data_dir,
            supersede=args.rerun,
            save_params=args.save_params,
            echo=_echo,
        )
    except RecordExists as exc:  # another process finished this run first: its record stands
        store.drop_checkpoint(config.key)
        print(f"kept: {exc}", file=sys.stderr, flush=True)
        return 0
    except Exception as exc:  # recorded, so the sweep goes on and the report can say what failed
        key = RunConfig.from_dict(config_dict).key if "model" in config_dict else "unknown"
        store.put_failure(key, config_dict, f"{type(exc).__name__}: {exc}", traceback.format_exc())
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


def _echo(line: str) -> None:
    check_parent()
    print(line, flush=True)


def _quiet_stdout() -> None:
    """Point stdout and stderr at /dev/null so the interpreter's exit does not fail on the dead pipes."""
    null = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(null, stream.fileno())
        except (OSError, ValueError):
            pass


if __name__ == "__main__":
    sys.exit(main())
