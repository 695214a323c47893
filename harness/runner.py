"""Sweeps: expand an experiment into runs, skip the finished ones, run the rest in worker processes.

Each run is ``python -m harness.worker`` in its own process; ``jobs`` of them at once, each given
``cpu_count // jobs`` threads. A run's record is written only when it has finished, atomically, and
a run checkpoints after every epoch, so a sweep killed at any moment (SIGKILL included) loses at most
the epochs in flight, and the next invocation continues exactly those runs from their checkpoints.
Interrupting the sweep itself (Ctrl-C, or SIGTERM to its process alone, as ``kill`` or a batch
scheduler sends it) stops its workers too, so none goes on unseen; their runs are not marked failed.
A worker whose sweep is SIGKILLed stops as well (``harness.worker``: it dies with its parent).

A run is claimed (``harness.claims_lock``) before it is handed to a worker, so two sweeps sharing a
store split the runs instead of each training all of them: :func:`claim_run` gives the claim, or the
outcome of a run another sweep holds (``"claimed"``; with ``wait_claimed``, it waits for that sweep to end and
then skips the run if it finished). An executor other than this one claims the same way, in the
store the driver writes to, before dispatching.

Where a worker runs is an executor's one decision: :class:`LocalExecutor` (``run --executor local``, the
default) starts it here; ``harness.ray_executor.RayExecutor`` (``--executor ray``) on a Ray cluster's
node, against a private store there, copying each checkpoint and the record back into this one. The
planning, claims, progress lines and bar, outcomes and failure records are :func:`run_configs`'s, the same
for both.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

from backends import COMPILE_BY_DEFAULT, worker_env
from harness import claims_lock
from harness.experiments import Experiment, RunConfig
from harness.store import Store

QUICK_SAMPLES = {"classify": 2000, "lm": 64}
QUICK_EPOCHS = 2


@dataclass
class Outcome:
    config: RunConfig
    status: str  # "done", "skipped" (already in the store), "failed", "interrupted" or "claimed" (by another sweep)
    message: str = ""


def plan(
    experiment: Experiment,
    backends: list[str],
    seeds: list[int],
    epochs: int | None = None,
    dataset: str | None = None,
    quick: bool = False,
    num_samples: int | None = None,
    patience: int | None = None,
) -> list[RunConfig]:
    """The distinct runs of ``experiment`` on ``backends`` x ``seeds`` (``quick``: 2 epochs, a cut
    training set; ``patience``: early stopping; the records say so through their config)."""
    if not experiment.rows:
        return []
    for name, value in (("epochs", epochs), ("num_samples", num_samples), ("patience", patience)):
        if value is not None and value < 1:
            raise ValueError(f"{name} = {value}: give 1 or more (or leave it out for the protocol's)")
    if quick:
        epochs = epochs or QUICK_EPOCHS
    configs: dict[str, RunConfig] = {}
    for backend in backends:
        for _row, config in experiment.runs(backend, seeds, epochs, dataset, patience=patience):
            cut = num_samples or (QUICK_SAMPLES[config.model.task] if quick else None)
            if cut is not None:
                config = _with_cut(config, cut)
            if config.init_from is not None:
                configs.setdefault(config.init_from.key, config.init_from)  # a source runs before the runs from it
            configs.setdefault(config.key, config)
    return list(configs.values())


def _depth(config: RunConfig) -> int:
    return 0 if config.init_from is None else 1 + _depth(config.init_from)


def _with_cut(config: RunConfig, cut: int) -> RunConfig:
    source = None if config.init_from is None else _with_cut(config.init_from, cut)
    return dataclasses.replace(config, num_samples=cut, init_from=source)


def on_hardware(configs: list[RunConfig], kinds: list[str] | None) -> list[RunConfig]:
    """Each run once per kind of hardware (``run --hardware cpu cuda``); the kind enters the run's key, so
    the records of one config on two kinds are two records. No kinds: ``configs`` as they are."""
    if not kinds:
        return configs
    out: dict[str, RunConfig] = {}
    for kind in kinds:
        for config in configs:
            placed = _with_hardware(config, kind)
            out.setdefault(placed.key, placed)
    return list(out.values())


def _with_hardware(config: RunConfig, kind: str) -> RunConfig:
    source = None if config.init_from is None else _with_hardware(config.init_from, kind)
    return dataclasses.replace(config, hardware=kind, init_from=source)


@dataclass(frozen=True)
class WorkerArgs:
    """What a worker is told besides its config: the flags of ``python -m harness.worker``."""

    compile: bool = False
    rerun: bool = False
    save_params: bool = False
    data_dir: str | None = None

    def command(self, results_dir, parent_pid: int) -> list[str]:
        """The worker's argv, writing to ``results_dir`` and dying with ``parent_pid``; its config goes on stdin."""
        cmd = [sys.executable, "-m", "harness.worker", "-", str(results_dir), "--parent-pid", str(parent_pid)]
        cmd += ["--compile"] * self.compile + ["--rerun"] * self.rerun + (["--data-dir", self.data_dir] if self.data_dir else [])
        return cmd + ["--save-params"] * self.save_params


def start_worker(config: RunConfig, results_dir, args: WorkerArgs, env: dict, **popen) -> subprocess.Popen:
    """Start ``python -m harness.worker`` for ``config`` in ``env`` (text pipes for stdout and stderr), its
    config written to its stdin; the same for every executor."""
    cmd = args.command(results_dir, os.getpid())
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    try:  # the config on stdin: no temporary file to leave behind
        proc.stdin.write(json.dumps(config.as_dict()))
        proc.stdin.close()
    except BrokenPipeError:  # the worker died at once; its stderr says why
        pass
    return proc


class LocalExecutor:
    """Each run's worker a process on this machine, writing to the store itself; ``jobs`` at once, each
    given ``cpu_count // jobs`` threads (the frameworks' own default for one job)."""

    name = "local"

    def __init__(self, jobs: int = 1) -> None:
        self.concurrency = jobs
        self.threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else 0
        self._lock = threading.Lock()
        self._live: set[subprocess.Popen] = set()
        self._stopped = False

    def prepare(self, configs: list[RunConfig]) -> None:
        """Check, before any run starts, that these runs can run here (nothing to check on this machine)."""

    def run(self, config: RunConfig, store: Store, args: WorkerArgs, say) -> tuple[int | None, str]:
        """Run ``config``'s worker to its end, each line of its stdout to ``say``: its exit status (``None``:
        not started, the sweep was stopped) and its stderr."""
        with self._lock:
            if self._stopped:
                return None, ""
            proc = start_worker(config, store.root, args, worker_env(config.backend, self.threads))
            self._live.add(proc)
        for line in proc.stdout:
            say(line.rstrip())
        stderr = proc.stderr.read()
        code = proc.wait()
        with self._lock:
            self._live.discard(proc)
        return code, stderr

    def stop(self) -> None:
        """Stop every worker (a worker checkpoints after each epoch; the next sweep resumes there)."""
        with self._lock:
            self._stopped = True
            for proc in self._live:
                proc.terminate()

    def close(self) -> None:
        pass


def claim_run(
    config: RunConfig, store: Store, *, rerun: bool = False, wait_claimed: bool = False, stop: threading.Event | None = None
) -> claims_lock.Claim | Outcome:
    """Claim ``config``'s run in ``store`` before it is trained: the held claim (release it when the run
    ends), or the run's outcome without training it: ``"claimed"`` (another live sweep holds it),
    ``"skipped"`` (finished meanwhile; not with ``rerun``), ``"interrupted"`` (``stop`` set while waiting)."""
    got = claims_lock.try_claim(store.root, config.key)
    if isinstance(got, claims_lock.Owner):
        if not wait_claimed:
            return Outcome(config, "claimed", got.describe())
        got = claims_lock.wait_for_claim(store.root, config.key, stop=stop)
        if got is None:
            return Outcome(config, "interrupted", "not started")
    if not rerun and store.has(config.key):
        got.release()
        return Outcome(config, "skipped", "finished by another sweep")
    return got


def run_configs(
    configs: list[RunConfig],
    store: Store,
    *,
    jobs: int = 1,
    compile: bool | None = None,
    rerun: bool = False,
    data_dir: str | None = None,
    wait_claimed: bool = False,
    echo=print,
    executor=None,
) -> list[Outcome]:
    """Run every config not yet finished in ``store``; failures are recorded and the sweep goes on.
    Runs another sweep has claimed come back ``"claimed"`` (with ``wait_claimed``: waited for).
    ``executor`` decides where each worker runs (default :class:`LocalExecutor` with ``jobs``); its
    ``prepare`` refuses runs it cannot place before anything is claimed or written."""
    from tqdm import tqdm

    todo = [s for s in configs if rerun or not store.has(s.key)]
    outcomes = [Outcome(s, "skipped", "already in the store") for s in configs if s not in todo]
    if not todo:
        return outcomes
    executor = executor if executor is not None else LocalExecutor(jobs)
    executor.prepare(todo)
    sources = {s.init_from.key for s in configs if s.init_from is not None}
    bar = tqdm(total=len(todo), unit="run", desc="runs", disable=not sys.stderr.isatty())
    lock = threading.Lock()
    counter = iter(range(1, len(todo) + 1))
    interrupted = threading.Event()
    held: dict[str, Outcome] = {}  # runs another sweep holds: the runs from them wait for them too
    heartbeat = claims_lock.Heartbeat().start()

    def one(config: RunConfig) -> Outcome:
        source = None if config.init_from is None else held.get(config.init_from.key)
        if source is not None:
            return Outcome(config, "claimed", f"{source.message} (its source run)")
        claim = claim_run(config, store, rerun=rerun, wait_claimed=wait_claimed, stop=interrupted)
        if isinstance(claim, Outcome):
            if claim.status == "claimed":
                held[config.key] = claim
            return claim
        heartbeat.add(claim)
        try:
            return train_one(config)
        finally:
            heartbeat.discard(claim)
            claim.release()

    def train_one(config: RunConfig) -> Outcome:
        with lock:
            if interrupted.is_set():
                return Outcome(config, "interrupted", "not started")
            number = next(counter)
        tag = f"[{number}/{len(todo)}] {config.describe()}"
        use_compile = COMPILE_BY_DEFAULT[config.backend] if compile is None else compile
        args = WorkerArgs(use_compile, rerun, config.key in sources, data_dir)
        with lock:
            if interrupted.is_set():
                return Outcome(config, "interrupted", "not started")
            bar.write(f"{tag}: started")

        def say(line: str) -> None:
            with lock:
                bar.write(f"{tag}: {line}")

        code, stderr = executor.run(config, store, args, say)
        with lock:
            bar.update(1)
        if store.has(config.key):  # its record is written: a signal during the worker's exit changes nothing
            return Outcome(config, "done")
        if interrupted.is_set():
            return Outcome(config, "interrupted", "stopped at its last checkpoint")
        failure = store.failure(config.key)
        if failure is None:  # killed or crashed before it could write its own failure record
            tail = stderr.strip().splitlines()[-20:]
            store.put_failure(config.key, config.as_dict(), f"worker exited with status {code}", "\n".join(tail))
            failure = store.failure(config.key)
        with lock:
            bar.write(f"{tag}: FAILED: {failure['error']}")
        return Outcome(config, "failed", failure["error"])

    def stop(*_):
        raise KeyboardInterrupt

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop) if main_thread else None
    submitted = {}
    try:
        with ThreadPoolExecutor(max_workers=executor.concurrency) as pool:
            try:
                for depth in sorted({_depth(s) for s in todo}):  # sources finish before the runs that start from them
                    submitted.update({s.key: pool.submit(one, s) for s in todo if _depth(s) == depth})
                    while wait(submitted.values(), timeout=0.5).not_done:
                        pass  # a signal may land on a reader thread; the main thread sees it only when it wakes
            except KeyboardInterrupt:
                with lock:
                    interrupted.set()
                executor.stop()  # a worker checkpoints after each epoch; the next sweep resumes there
    finally:
        executor.close()
        heartbeat.stop()
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        bar.close()
    return outcomes + [submitted[s.key].result() if s.key in submitted else Outcome(s, "interrupted", "not started") for s in todo]
