"""Sweeps: expand an experiment into runs, skip the finished ones, run the rest in worker processes.

Each run is ``python -m harness.worker`` in its own process; ``jobs`` of them at once, each given
``cpu_count // jobs`` threads. A run's record is written only when it has finished, atomically, and
a run checkpoints after every epoch, so a sweep killed at any moment (SIGKILL included) loses at most
the epochs in flight, and the next invocation continues exactly those runs from their checkpoints.
Interrupting the sweep itself (Ctrl-C, or SIGTERM to its process alone, as ``kill`` or a batch
scheduler sends it) stops its workers too, so none goes on unseen; their runs are not marked failed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from backends import COMPILE_BY_DEFAULT, worker_env
from harness.experiments import Experiment, RunConfig
from harness.store import Store

QUICK_SAMPLES = {"classify": 2000, "lm": 64}
QUICK_EPOCHS = 2


@dataclass
class Outcome:
    spec: RunConfig
    status: str  # "done", "skipped" (already in the store), "failed" or "interrupted"
    message: str = ""


def plan(
    experiment: Experiment,
    backends: list[str],
    seeds: list[int],
    epochs: int | None = None,
    dataset: str | None = None,
    quick: bool = False,
    num_samples: int | None = None,
) -> list[RunConfig]:
    """The distinct runs of ``experiment`` on ``backends`` x ``seeds`` (``quick``: 2 epochs, a cut
    training set; the records say so through their config)."""
    if not experiment.rows:
        return []
    if quick:
        epochs = epochs or QUICK_EPOCHS
    specs: dict[str, RunConfig] = {}
    for backend in backends:
        for _row, spec in experiment.runs(backend, seeds, epochs, dataset):
            cut = num_samples or (QUICK_SAMPLES[spec.model.task] if quick else None)
            if cut is not None:
                spec = _with_cut(spec, cut)
            if spec.init_from is not None:
                specs.setdefault(spec.init_from.key, spec.init_from)  # a source runs before the runs from it
            specs.setdefault(spec.key, spec)
    return list(specs.values())


def _depth(spec: RunConfig) -> int:
    return 0 if spec.init_from is None else 1 + _depth(spec.init_from)


def _with_cut(spec: RunConfig, cut: int) -> RunConfig:
    source = None if spec.init_from is None else _with_cut(spec.init_from, cut)
    return dataclasses.replace(spec, num_samples=cut, init_from=source)


def run_specs(
    specs: list[RunConfig],
    store: Store,
    *,
    jobs: int = 1,
    compile: bool | None = None,
    rerun: bool = False,
    data_dir: str | None = None,
    echo=print,
) -> list[Outcome]:
    """Run every spec not yet finished in ``store``; failures are recorded and the sweep goes on."""
    from tqdm import tqdm

    todo = [s for s in specs if rerun or not store.has(s.key)]
    outcomes = [Outcome(s, "skipped", "already in the store") for s in specs if s not in todo]
    if not todo:
        return outcomes
    sources = {s.init_from.key for s in specs if s.init_from is not None}
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else 0
    bar = tqdm(total=len(todo), unit="run", desc="runs", disable=not sys.stderr.isatty())
    lock = threading.Lock()
    counter = iter(range(1, len(todo) + 1))
    live: set[subprocess.Popen] = set()
    interrupted = threading.Event()

    def one(spec: RunConfig) -> Outcome:
        with lock:
            if interrupted.is_set():
                return Outcome(spec, "interrupted", "not started")
            number = next(counter)
        tag = f"[{number}/{len(todo)}] {spec.describe()}"
        use_compile = COMPILE_BY_DEFAULT[spec.backend] if compile is None else compile
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump(spec.as_dict(), handle)
        cmd = [sys.executable, "-m", "harness.worker", handle.name, str(store.root)]
        cmd += ["--compile"] * use_compile + ["--rerun"] * rerun + (["--data-dir", data_dir] if data_dir else [])
        cmd += ["--save-params"] * (spec.key in sources)
        try:
            with lock:
                if interrupted.is_set():
                    return Outcome(spec, "interrupted", "not started")
                bar.write(f"{tag}: started")
                env = worker_env(spec.backend, threads)
                proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                live.add(proc)
            for line in proc.stdout:
                with lock:
                    bar.write(f"{tag}: {line.rstrip()}")
            stderr = proc.stderr.read()
            code = proc.wait()
        finally:
            Path(handle.name).unlink(missing_ok=True)
        with lock:
            live.discard(proc)
            bar.update(1)
        if store.has(spec.key):  # its record is written: a signal during the worker's exit changes nothing
            return Outcome(spec, "done")
        if interrupted.is_set():
            return Outcome(spec, "interrupted", "stopped at its last checkpoint")
        failure = store.failure(spec.key)
        if failure is None:  # killed or crashed before it could write its own failure record
            tail = stderr.strip().splitlines()[-20:]
            store.put_failure(spec.key, spec.as_dict(), f"worker exited with status {code}", "\n".join(tail))
            failure = store.failure(spec.key)
        with lock:
            bar.write(f"{tag}: FAILED: {failure['error']}")
        return Outcome(spec, "failed", failure["error"])

    def stop(*_):
        raise KeyboardInterrupt

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop) if main_thread else None
    submitted = {}
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            try:
                for depth in sorted({_depth(s) for s in todo}):  # sources finish before the runs that start from them
                    submitted.update({s.key: pool.submit(one, s) for s in todo if _depth(s) == depth})
                    while wait(submitted.values(), timeout=0.5).not_done:
                        pass  # a signal may land on a reader thread; the main thread sees it only when it wakes
            except KeyboardInterrupt:
                with lock:
                    interrupted.set()
                    for proc in live:
                        proc.terminate()  # a worker checkpoints after each epoch; the next sweep resumes there
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        bar.close()
    return outcomes + [submitted[s.key].result() if s.key in submitted else Outcome(s, "interrupted", "not started") for s in todo]
