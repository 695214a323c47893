"""Runs claimed, not raced: one claim per run, a live owner's claim respected, a dead one's taken over;
a second sweep skips what the first holds; a worker dies with its sweep, leaving no failure and no file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import claims_lock
from harness.cli import main
from harness.experiments import get
from harness.runner import plan, run_configs
from harness.store import Store
from tests.conftest import REPO, backend_or_skip

TINY = ["--dataset", "synthetic", "--num-samples", "256", "--epochs", "1", "--seeds", "0"]


def _fake_claim(root, key: str, pid: int, host: str = claims_lock.HOST, age: float = 0.0) -> Path:
    path = claims_lock.claim_path(root, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "pid": pid, "host": host, "started": time.time() - age}))
    os.utime(path, (time.time() - age, time.time() - age))
    return path


@pytest.fixture
def other_sweep():
    """A live process standing in for another sweep."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_one_claim_per_run_and_release_frees_it(tmp_path):
    first = claims_lock.try_claim(tmp_path, "k")
    assert isinstance(first, claims_lock.Claim)
    second = claims_lock.try_claim(tmp_path, "k")
    assert isinstance(second, claims_lock.Owner) and second.pid == os.getpid() and second.host == claims_lock.HOST
    first.release()
    again = claims_lock.try_claim(tmp_path, "k")
    assert isinstance(again, claims_lock.Claim)
    again.release()
    assert not claims_lock.claim_path(tmp_path, "k").exists()


def test_a_live_owner_is_respected_and_a_dead_one_taken_over(tmp_path, other_sweep):
    _fake_claim(tmp_path, "live", other_sweep)
    assert isinstance(claims_lock.try_claim(tmp_path, "live"), claims_lock.Owner)
    _fake_claim(tmp_path, "far", 1, host="another-host", age=10)
    assert isinstance(claims_lock.try_claim(tmp_path, "far"), claims_lock.Owner)  # fresh heartbeat elsewhere: alive
    _fake_claim(tmp_path, "dead", _dead_pid())
    _fake_claim(tmp_path, "silent", other_sweep, host="another-host", age=claims_lock.STALE_AFTER_SECONDS + 5)
    for key in ("dead", "silent"):
        taken = claims_lock.try_claim(tmp_path, key)
        assert isinstance(taken, claims_lock.Claim) and taken.mine()


def test_the_heartbeat_refreshes_a_held_claim(tmp_path):
    claim = claims_lock.try_claim(tmp_path, "k")
    os.utime(claim.path, (0, 0))
    with claims_lock.Heartbeat(interval=0.05) as beat:
        beat.add(claim)
        time.sleep(0.3)
    assert time.time() - claim.path.stat().st_mtime < 5


def test_a_second_sweep_skips_the_runs_another_holds_and_says_whose(tmp_path, other_sweep, capsys):
    specs = plan(get("table2"), ["torch"], [0], epochs=1, dataset="synthetic", num_samples=256)[:3]
    for spec in specs:
        _fake_claim(tmp_path, spec.key, other_sweep)
    outcomes = run_configs(specs, Store(tmp_path))
    assert [o.status for o in outcomes] == ["claimed"] * 3
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing failed
    only = ["--only", "schedule=MLP baseline", "schedule=Uniform", "schedule=Descending"]
    assert main(["run", "table2", *TINY, *only, "--results-dir", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert f"3 runs claimed by another sweep (pid {other_sweep} on host {claims_lock.HOST}): skipped; rerun this command" in err
    assert sorted(p.stem for p in (tmp_path / "claims").glob("*.json")) == sorted(s.key for s in specs)  # theirs, untouched


def test_a_worker_whose_run_is_finished_exits_cleanly_without_a_failure(tmp_path):
    record = json.loads(next(p for p in sorted((REPO / "results" / "runs").glob("*.json"))).read_text())
    store = Store(tmp_path)
    store.put(record)
    cmd = [sys.executable, "-m", "harness.worker", "-", str(tmp_path)]
    done = subprocess.run(cmd, cwd=REPO, input=json.dumps(record["spec"]), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "already finished" in done.stdout, done.stderr
    assert store.failures() == [] and not store.failure_path(record["key"]).exists()


def _workers_of(store: Path) -> list[int]:
    """Pids of live ``harness.worker`` processes writing to ``store`` (from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue
        if b"harness.worker" in argv and str(store).encode() in argv:
            pids.append(int(entry.name))
    return pids


def _gone(pid: int) -> bool:
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True


@pytest.mark.torch
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds the worker in /proc")
def test_sigkill_to_the_sweep_alone_stops_its_worker_with_no_failure_and_no_temp_file(tmp_path):
    backend_or_skip("torch")
    temp = tmp_path / "tmp"
    temp.mkdir()
    cmd = [sys.executable, "-m", "harness", "run", "table2", *TINY, "--only", "schedule=Descending", "--results-dir", str(tmp_path / "s")]
    env = {**os.environ, "TMPDIR": str(temp)}
    sweep = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + 120
    while not (workers := _workers_of(tmp_path / "s")):
        assert sweep.poll() is None and time.time() < deadline, sweep.stdout.read()
        time.sleep(0.05)
    time.sleep(1.0)  # the worker is importing or training
    os.kill(sweep.pid, signal.SIGKILL)  # the sweep's process alone: its worker is not signalled
    sweep.wait()
    deadline = time.time() + 10  # at once: not when its run would have ended
    while not all(_gone(pid) for pid in workers):
        assert time.time() < deadline, f"worker {workers} outlived its sweep"
        time.sleep(0.1)
    store = Store(tmp_path / "s")
    assert store.failures() == []
    assert list(temp.iterdir()) == []
    assert not list((tmp_path / "s").rglob("*.tmp"))
