"""``run --executor ray`` on real Ray runtimes on this machine, on 127.0.0.1 only: a local runtime gives
the local executor's records, a two-node cluster with two hardware kinds runs ``--hardware`` and
``compare`` pairs the kinds, a worker killed mid-run is retried to the same record, bad input fails at
once with one line and writes nothing, and nothing of Ray listens beyond loopback.

One simulated cluster (``ray.cluster_utils.Cluster``) serves the module; every wait is bounded and
what a test starts is shut down. Token authentication stays on with a token of the module's own
(``RAY_AUTH_TOKEN``), so nothing is written to ``~/.ray``."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.store import Store
from tests.conftest import REPO, backend_or_skip

pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (pip install 'dynamoe-harness[ray]')"),
    pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads listening sockets from /proc"),
]

TINY = ["--dataset", "synthetic", "--num-samples", "256", "--epochs", "1", "--seeds", "0"]
TWO_ROWS = ["--only", "schedule=MLP baseline", "schedule=Descending"]
ONE_ROW = ["--only", "schedule=Descending"]
AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@pytest.fixture(scope="module", autouse=True)
def _environment():
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {**AUTH, **LOOPBACK}.items():
            mp.setenv(name, value)
        yield


@contextlib.contextmanager
def _deadline(seconds: int, what: str):
    """Raise in the main thread if ``what`` takes longer than ``seconds`` (Ray's own waits can be minutes)."""

    def expire(*_):
        raise TimeoutError(f"{what} took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def cluster():
    """Two nodes on 127.0.0.1: the head declaring hardware kind cpu, the other kind cuda; this process its driver."""
    backend_or_skip("torch")
    import ray
    from ray.cluster_utils import Cluster

    from harness.ray_executor import hardware_resource, loopback_only

    loopback_only()
    with _deadline(120, "starting a two-node Ray cluster"):
        made = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 2, "node_ip_address": "127.0.0.1", "resources": {hardware_resource("cpu"): 1000}},
        )
        made.add_node(num_cpus=1, node_ip_address="127.0.0.1", resources={hardware_resource("cuda"): 1000})
        ray.init(address=made.address, _node_ip_address="127.0.0.1", log_to_driver=False)
        made.wait_for_nodes(timeout=60)
    try:
        yield made
    finally:
        with _deadline(60, "stopping the cluster"):
            ray.shutdown()
            made.shutdown()


# --- what runs where ------------------------------------------------------------------------------


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _listening(pids: set[int]) -> list[tuple[str, str]]:
    """(address, command) of every TCP socket in LISTEN that one of ``pids`` holds, from /proc."""
    owners = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        owners[target[8:-1]] = pid
        except OSError:
            continue
    out = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in owners:  # 0A: LISTEN
                with contextlib.suppress(OSError):
                    command = Path(f"/proc/{owners[fields[9]]}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
                    out.append((fields[1], command))
    return out


def _loopback(address: str) -> bool:
    host = address.split(":")[0]
    if len(host) == 8:  # IPv4, little-endian hex
        return host.endswith("7F")
    return host in ("00000000000000000000000001000000", "0000000000000000FFFF00000100007F")  # ::1, ::ffff:127.0.0.1


def _assert_loopback_only(root: int) -> int:
    sockets = _listening(_descendants(root) | {root})
    beyond = [s for s in sockets if not _loopback(s[0])]
    assert not beyond, f"Ray listens beyond loopback: {beyond}"
    return len(sockets)


def _worker_pids(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
            if b"harness.worker" in argv and any(marker.encode() in a for a in argv):
                pids.append(int(entry.name))
    return pids


def _cli(*argv, timeout=600, env=None, code=None):
    cmd = [sys.executable, *(["-c", code] if code else ["-m", "harness"]), *argv]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def _untimed(record: dict) -> dict:
    out = {k: v for k, v in record.items() if k not in ("environment", "started", "finished", "resumed_after_epoch")}
    out["epochs"] = [{**e, "seconds": 0} for e in record["epochs"]]
    out["summary"] = {**record["summary"], "train_seconds": 0}
    return out


def _records(root: Path) -> dict[str, dict]:
    return {r["key"]: r for r in Store(root).records()}


def _nothing_written(root: Path) -> bool:
    return not root.exists() or not any(p.is_file() for p in root.rglob("*"))


# --- the tests ------------------------------------------------------------------------------------


def test_a_local_runtime_gives_the_local_executors_records_and_listens_on_loopback_only(tmp_path):
    """No address: Ray starts a runtime here (2 CPUs, 1 a run), on 127.0.0.1; the records are the local
    executor's with 2 jobs (1 thread a run either way), timings and environment aside."""
    backend_or_skip("torch")
    started = time.perf_counter()
    local = _cli("run", "table2", *TINY, *TWO_ROWS, "--jobs", "2", "--results-dir", str(tmp_path / "local"))
    local_s = time.perf_counter() - started
    assert local.returncode == 0 and "2 trained" in local.stdout, local.stdout + local.stderr
    cmd = [sys.executable, "-m", "harness", "run", "table2", *TINY, *TWO_ROWS, "--executor", "ray", "--results-dir", str(tmp_path / "ray")]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    checked = 0
    try:
        deadline = time.time() + 300
        while proc.poll() is None:
            assert time.time() < deadline, "".join(lines)
            if any("running on node" in line for line in lines):
                checked = max(checked, _assert_loopback_only(proc.pid))  # the runtime's processes are the sweep's
            time.sleep(0.3)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
        reader.join(timeout=10)
    ray_s = time.perf_counter() - started
    out = "".join(lines)
    assert proc.returncode == 0 and "2 trained" in out and "at 127.0.0.1" in out, out
    assert checked >= 3, f"saw only {checked} listening sockets of Ray: the check looked at nothing"
    local_records, ray_records = _records(tmp_path / "local"), _records(tmp_path / "ray")
    assert local_records.keys() == ray_records.keys() and len(ray_records) == 2
    assert all(_untimed(ray_records[k]) == _untimed(local_records[k]) for k in local_records)
    assert all(r["environment"]["ray_node"].endswith("at 127.0.0.1") for r in ray_records.values())
    print(f"\nsame sweep (2 runs): local executor {local_s:.1f} s, Ray executor with its own runtime {ray_s:.1f} s")


def test_two_hardware_kinds_on_two_nodes_and_compare_pairs_them(cluster, tmp_path, capsys):
    import ray

    store = tmp_path / "store"
    argv = ["run", "table2", *TINY, *ONE_ROW, "--executor", "ray", "--hardware", "cpu", "cuda", "--gpus-per-run", "0"]
    assert main([*argv, "--results-dir", str(store)]) == 0
    records = list(Store(store).records())
    assert sorted(r["spec"]["hardware"] for r in records) == ["cpu", "cuda"]
    assert len({r["key"] for r in records}) == 2  # one config, two kinds: two records
    nodes = {n["NodeID"][:12]: n["Resources"] for n in ray.nodes() if n["Alive"]}
    for r in records:
        env = r["environment"]
        assert env["hardware"] == r["spec"]["hardware"] and env["device"] == "cpu"
        assert f"hardware:{env['hardware']}" in nodes[env["ray_node"].split()[0]]  # placed on the node declaring its kind
    capsys.readouterr()
    assert main(["compare", str(store), str(store), "--kind-a", "cpu", "--kind-b", "cuda"]) == 0
    out = capsys.readouterr().out
    assert "1 paired runs, 1 within tolerance" in out and " on cpu" in out, out
    # a sweep again: both finished, nothing runs; the same config without --hardware is a third key
    assert main([*argv, "--results-dir", str(store)]) == 0
    assert "0 trained, 2 skipped" in capsys.readouterr().out


def test_a_worker_killed_after_its_first_checkpoint_is_retried_to_the_same_record(cluster, tmp_path, capsys):
    argv = ["run", "table2", "--dataset", "synthetic", "--num-samples", "2048", "--epochs", "3", "--seeds", "0", *ONE_ROW]
    argv += ["--executor", "ray", "--hardware", "cpu"]
    assert main([*argv, "--results-dir", str(tmp_path / "whole")]) == 0
    (whole,) = Store(tmp_path / "whole").records()
    store = Store(tmp_path / "killed")
    result: list[int] = []
    sweep = threading.Thread(target=lambda: result.append(main([*argv, "--results-dir", str(store.root)])), daemon=True)
    sweep.start()
    deadline = time.time() + 300
    while not store.checkpoint_path(whole["key"]).exists():  # epoch 1's checkpoint, in the driver's store
        assert sweep.is_alive() and time.time() < deadline, capsys.readouterr()
        time.sleep(0.05)
    (worker,) = _worker_pids(whole["key"])
    ray_worker = int(Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()[1])
    os.kill(ray_worker, signal.SIGKILL)  # the Ray worker running the task; its harness.worker dies with it
    sweep.join(timeout=300)
    assert not sweep.is_alive() and result == [0]
    out = capsys.readouterr().out
    assert "worker lost" in out and "trying again from its checkpoint after epoch" in out, out
    record = store.get(whole["key"])
    assert record["resumed_after_epoch"] >= 1 and _untimed(record) == _untimed(whole)
    assert not store.checkpoint_path(whole["key"]).exists() and store.failures() == []


def test_a_cluster_without_the_asked_resources_or_kind_is_refused_at_once(cluster, tmp_path, capsys):
    store = tmp_path / "store"
    cases = [
        (["--cpus-per-run", "3"], "no node of the Ray cluster can take a run asking for CPU 3"),  # 3 CPUs in all, 2 at most on a node
        (["--hardware", "metal"], "--hardware metal: no node of the Ray cluster declares that kind"),
        (["--hardware", "cuda", "--gpus-per-run", "1"], "asking for CPU 1, GPU 1, hardware:cuda 1"),
    ]
    for flags, message in cases:
        started = time.perf_counter()
        assert main(["run", "table2", *TINY, *ONE_ROW, "--executor", "ray", *flags, "--results-dir", str(store)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and time.perf_counter() - started < 10, err
        assert _nothing_written(store)


def test_ray_flags_need_the_ray_executor():
    with pytest.raises(ValueError, match="--hardware needs --executor ray"):
        from harness import cli

        cli.cmd_run(cli.build_parser().parse_args(["run", "table2", *TINY, "--hardware", "cuda"]))


def test_an_unreachable_address_fails_within_seconds(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        started = time.perf_counter()
        argv = ["run", "table2", *TINY, *ONE_ROW, "--executor", "ray", "--ray-address", address, "--results-dir", str(tmp_path)]
        done = _cli(*argv, timeout=60)
        assert done.returncode == 2 and f"--ray-address {address}: no Ray cluster answers there" in done.stderr, done.stderr
        assert time.perf_counter() - started < 30 and _nothing_written(tmp_path)


def test_a_driver_of_another_ray_version_gets_one_line(cluster, tmp_path):
    from ray.experimental import internal_kv

    original = internal_kv._internal_kv_get(b"CLUSTER_METADATA", namespace=b"cluster")
    other = {**json.loads(original), "ray_version": "2.0.0"}  # as a cluster started by another Ray would say
    internal_kv._internal_kv_put(b"CLUSTER_METADATA", json.dumps(other).encode(), overwrite=True, namespace=b"cluster")
    try:
        argv = ["run", "table2", *TINY, *ONE_ROW, "--executor", "ray", "--ray-address", cluster.address, "--results-dir", str(tmp_path)]
        done = _cli(*argv, timeout=120)
    finally:
        internal_kv._internal_kv_put(b"CLUSTER_METADATA", original, overwrite=True, namespace=b"cluster")
    assert done.returncode == 2 and "Ray version mismatch (The cluster was started with: Ray: 2.0.0" in done.stderr, done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")] == done.stderr.strip().splitlines()[-1:]
    assert _nothing_written(tmp_path)


def test_without_ray_installed_the_executor_says_how_to_install_it(tmp_path):
    code = "import sys; sys.modules['ray'] = None; from harness.cli import main; sys.exit(main(sys.argv[1:]))"
    done = _cli("run", "table2", *TINY, *ONE_ROW, "--executor", "ray", "--results-dir", str(tmp_path), code=code, timeout=120)
    assert done.returncode == 2 and "Ray is not installed here" in done.stderr and "dynamoe-harness[ray]" in done.stderr, done.stderr
    assert _nothing_written(tmp_path)


def test_the_cluster_listens_on_loopback_only(cluster):
    assert _assert_loopback_only(os.getpid()) >= 6  # two nodes' GCS, raylets, agents and workers


def _alive(pid: int, command: bytes) -> bool:
    """``pid`` still runs ``command`` (not a zombie, not a reused pid)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z" and Path(f"/proc/{pid}/cmdline").read_bytes() == command
    except (OSError, IndexError):
        return False


def _commands(pids: set[int]) -> dict[int, bytes]:
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            out[pid] = Path(f"/proc/{pid}/cmdline").read_bytes()
    return out


@pytest.mark.parametrize("to", ["group", "driver"])
def test_ctrl_c_stops_the_sweep_keeps_its_checkpoint_and_the_same_command_resumes_it(tmp_path, to):
    """Ctrl-C during a run on the sweep's own Ray runtime, as a terminal sends it (SIGINT to the sweep's
    process group) and to the driver alone (then only the executor's ``ray.cancel`` can stop the task):
    the sweep exits 130 within seconds with no failure record, the checkpoint stays, every process of the
    runtime is gone, and the same command resumes from the checkpoint to the uninterrupted run's record
    (timings and environment aside)."""
    backend_or_skip("torch")
    argv = ["run", "table2", "--dataset", "synthetic", "--num-samples", "16384", "--epochs", "8", "--seeds", "0", *ONE_ROW]
    jobs = ["--jobs", str(max(2, os.cpu_count() or 1))]  # one thread, as each Ray run has (--cpus-per-run 1)
    whole = _cli(*argv, *jobs, "--results-dir", str(tmp_path / "whole"), timeout=300)
    assert whole.returncode == 0, whole.stdout + whole.stderr
    ((key, record),) = _records(tmp_path / "whole").items()
    store = Store(tmp_path / "stopped")
    cmd = [sys.executable, "-m", "harness", *argv, "--executor", "ray", "--results-dir", str(store.root)]
    started = time.perf_counter()
    # as a terminal's foreground command has it: SIGINT at its default (a background job of a shell without
    # job control inherits it ignored, and Python then installs no KeyboardInterrupt handler)
    default_sigint = functools.partial(signal.signal, signal.SIGINT, signal.SIG_DFL)
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, preexec_fn=default_sigint
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.time() + 300
        runtime: dict = {}
        workers: list[int] = []
        # the Ray runtime the sweep started, and its workers, read while waiting; 16,384 samples make an epoch
        # about a second on a quiet machine, so the run is still going when the stop (1-2 s) takes effect
        while not store.checkpoint_path(key).exists():  # epoch 1's checkpoint, in the driver's store
            assert proc.poll() is None and time.time() < deadline, "".join(lines)
            runtime, workers = _commands(_descendants(proc.pid)), _worker_pids(key) or workers
            time.sleep(0.02)
        (os.killpg if to == "group" else os.kill)(proc.pid, signal.SIGINT)
        assert any(b"raylet" in c for c in runtime.values()) and workers, runtime
        interrupted = time.perf_counter()
        code = proc.wait(timeout=60)
        stop_s = time.perf_counter() - interrupted
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        reader.join(timeout=10)
    out = "".join(lines)
    assert code == 130 and "interrupted: 0 trained, 1 stopped" in out, out
    assert stop_s < 30, f"the sweep took {stop_s:.1f} s to stop"
    assert store.failures() == [] and not store.has(key) and store.checkpoint_path(key).exists(), out
    deadline = time.time() + 30
    while left := [c.split(b"\0")[0].decode() for p, c in runtime.items() if _alive(p, c)]:
        assert time.time() < deadline, f"Ray processes left after the sweep stopped: {left}"
        time.sleep(0.2)
    resumed = _cli(*argv, "--executor", "ray", "--results-dir", str(store.root), timeout=300)
    assert resumed.returncode == 0 and "1 trained" in resumed.stdout, resumed.stdout + resumed.stderr
    again = store.get(key)
    assert again["resumed_after_epoch"] >= 1 and _untimed(again) == _untimed(record)
    assert not store.checkpoint_path(key).exists() and store.failures() == []
    print(f"\nCtrl-C to the {to}: exit 130 {stop_s:.1f} s after SIGINT ({time.perf_counter() - started:.0f} s with the resumed run)")
