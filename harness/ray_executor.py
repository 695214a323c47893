"""``python -m harness run ... --executor ray``: each run's worker on a node of a Ray cluster.

The sweep (planning, claims, progress, outcomes) is :func:`harness.runner.run_configs`'s; this executor only
decides where a worker runs. Each run is one Ray task with declared resources (``--cpus-per-run``,
``--gpus-per-run``, and for ``--hardware KIND`` one unit of the custom resource ``hardware:KIND`` that a
node declares at ``ray start --resources``). The task starts ``python -m harness.worker`` as a
subprocess (Keras fixes its backend per process, so no Ray worker process trains two runs), in the
environment of ``backends.worker_env(backend, cpus)``, against a private store in a temporary folder on
its node: no filesystem is shared with the driver.

What travels: the driver hands the task the run's config, the newest checkpoint it holds (resuming) and
the parameters of a source run (``init_from``); the task pushes each checkpoint the worker writes, as
``.npz`` bytes, and each progress line to a relay actor the driver drains, and returns the record (or
the failure record) and any parameters to keep. The driver writes all of it into its own store through
:class:`harness.store.Store`, atomically, as the local runner's workers do. A task whose worker or node
dies is started again by the driver (``--retries``) from the newest checkpoint the driver holds, so at
most the epoch in flight is lost and the record equals an uninterrupted run's (timings and
environment aside). Ctrl-C cancels the tasks (``ray.cancel(force=True)``) and keeps the checkpoints.

Connecting: without an address a local runtime is started on this machine, on 127.0.0.1 only (Ray's
single-machine mode, the one it uses on macOS and Windows); ``auto``, ``HOST:PORT`` or
``ray://HOST:PORT`` join an existing cluster. Every wait is bounded: the address is tried with a socket
first, ``ray.init`` runs under a timeout, and the cluster's nodes are checked for the resources the runs
ask for before anything is submitted or written. Ray is an optional dependency (``pip install
'dynamoe-harness[ray]'``), imported only here.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from harness.experiments import RunConfig
from harness.runner import WorkerArgs, start_worker
from harness.store import Store, StoreError
from harness.training import Checkpoint

CONNECT_TIMEOUT_S = 60.0  # ray.init, after the address answered a socket
PROBE_TIMEOUT_S = 5.0  # the socket pre-check of an address
POLL_S = 0.25  # how often a task looks for a new checkpoint, and the driver drains the relay
GPU_KINDS = ("cuda", "rocm", "gpu")  # kinds whose runs ask for one GPU unless --gpus-per-run says otherwise
KIND_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")
LOOPBACK_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # 0: Ray's single-machine mode, every process on 127.0.0.1
INSTALL = "pip install 'dynamoe-harness[ray]' (or pip install 'ray>=2.9')"


class RayExecutorError(ValueError):
    """A sweep the Ray executor cannot start: one line saying why and what to do (the CLI exits 2)."""


def hardware_resource(kind: str) -> str:
    """The custom resource a node declares to take runs of ``kind`` (``ray start --resources``)."""
    return f"hardware:{kind}"


def check_kinds(kinds: list[str] | None) -> None:
    for kind in kinds or []:
        if not KIND_PATTERN.match(kind):
            raise RayExecutorError(f"--hardware {kind!r}: a kind is letters, digits, '.', '_' or '-' (e.g. cpu, cuda, metal)")


def import_ray():
    """``ray``, or a :class:`RayExecutorError` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise RayExecutorError(f"--executor ray: Ray is not installed here ({exc}): {INSTALL}, or use --executor local") from None
    return ray


def loopback_only() -> None:
    """Keep the Ray processes this process starts, and its own, on 127.0.0.1 (Ray's single-machine mode);
    without it Ray resolves 127.0.0.1 to the machine's network address and listens on every interface."""
    os.environ[LOOPBACK_VARIABLE] = "0"
    import ray._private.ray_constants as constants

    constants.ENABLE_RAY_CLUSTER = False


def _split(address: str) -> tuple[str, int]:
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise RayExecutorError(f"--ray-address {address!r}: give auto, HOST:PORT (the head's GCS port, 6379) or ray://HOST:10001")
    return host.strip("[]"), int(port)


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def _resolve(address: str) -> str:
    """``address`` with ``auto`` replaced by the cluster Ray finds (``RAY_ADDRESS``, or the last ``ray start``)."""
    if address != "auto":
        return address
    from ray._private.services import get_ray_address_from_environment

    try:
        found = get_ray_address_from_environment("auto", None)
    except Exception as exc:  # Ray's own "could not find any running Ray instance"
        raise RayExecutorError(f"--ray-address auto: no Ray cluster found ({exc}); start one with `ray start --head`") from None
    if not found:
        raise RayExecutorError("--ray-address auto: no Ray cluster found on this machine; start one with `ray start --head`")
    return found


def _probe(address: str) -> None:
    host, port = _split(address)
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        raise RayExecutorError(
            f"--ray-address {address}: no Ray cluster answers there ({exc}); start one with `ray start --head` on that machine, "
            "or leave out --ray-address for a runtime on this machine"
        ) from None


def _translate(exc: BaseException, where: str) -> RayExecutorError:
    text = str(exc)
    if "Version mismatch" in text:
        lines = [line.strip() for line in text[text.index("Version mismatch") :].splitlines() if line.strip()]
        versions = " ".join(lines).removeprefix("Version mismatch:").strip()
        return RayExecutorError(
            f"{where}: Ray version mismatch ({versions}): install on this machine the Ray and Python versions the cluster runs"
        )
    if type(exc).__name__ == "AuthenticationError" or "authentication token" in text:
        return RayExecutorError(
            f"{where}: the cluster uses token authentication and this driver has no token or the wrong one: put the cluster's "
            "token (`ray get-auth-token` on the head node) in RAY_AUTH_TOKEN or ~/.ray/auth_token"
        )
    first = text.strip().splitlines()[0] if text.strip() else ""
    return RayExecutorError(f"{where}: cannot connect to Ray ({type(exc).__name__}: {first})")


def connect(ray, address: str | None, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Connect this process to Ray; ``True`` if it started (and must stop) the runtime. A process
    already connected (a library caller) keeps its connection."""
    if ray.is_initialized():
        return False
    kwargs = {"log_to_driver": False, "logging_level": logging.WARNING, "configure_logging": True}
    if address is None:
        loopback_only()
        kwargs.update(address="local", _node_ip_address="127.0.0.1", include_dashboard=False)
        where = "--executor ray (a local Ray runtime)"
    else:
        target = _resolve(address)
        _probe(target)
        host, _ = _split(target)
        if _is_loopback(host):
            loopback_only()  # a driver looking for the machine's address would retry for minutes
            if not target.startswith("ray://"):
                kwargs["_node_ip_address"] = "127.0.0.1"
        kwargs["address"] = target
        where = f"--ray-address {address}"
    if address is None:  # in this thread: Ray's processes die with the thread that started them (PR_SET_PDEATHSIG)
        try:
            ray.init(**kwargs)
        except Exception as exc:
            raise _translate(exc, where) from None
        return True
    outcome: dict = {}

    def init() -> None:  # joining starts no process: a thread bounds the wait (Ray retries for minutes)
        try:
            ray.init(**kwargs)
            outcome["ok"] = True
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=init, name="ray-init", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise RayExecutorError(f"{where}: Ray did not connect within {timeout:.0f} s; check the address and that the cluster is up")
    if "error" in outcome:
        raise _translate(outcome["error"], where) from None
    return False


class _Relay:
    """Driver-side mailbox: tasks push progress lines and checkpoints, the driver takes them."""

    def __init__(self) -> None:
        self.boxes: dict[str, list] = {}

    def push(self, box: str, kind: str, payload) -> None:
        self.boxes.setdefault(box, []).append((kind, payload))

    def take(self, box: str) -> list:
        return self.boxes.pop(box, [])


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def run_on_node(spec_dict: dict, args: dict, threads: int, checkpoint: bytes | None, params: dict, relay, box: str) -> dict:
    """The Ray task: one run's worker as a subprocess on this node, against a private store; checkpoints
    and lines go to ``relay`` as they come, the record (or failure) and parameters come back."""
    import ray

    from backends import worker_env
    from harness.environment import HARDWARE_VARIABLE, NODE_VARIABLE

    config = RunConfig.from_dict(spec_dict)
    key = config.key
    root = Path(tempfile.mkdtemp(prefix=f"dynamoe-ray-{key}-"))
    store = Store(root)
    try:
        if checkpoint is not None:
            store.checkpoint_path(key).parent.mkdir(parents=True, exist_ok=True)
            store.checkpoint_path(key).write_bytes(checkpoint)
        for source, data in params.items():
            store.params_path(source).parent.mkdir(parents=True, exist_ok=True)
            store.params_path(source).write_bytes(data)
        context = ray.get_runtime_context()
        node = f"{context.get_node_id()[:12]} at {ray.util.get_node_ip_address()}"
        env = worker_env(config.backend, threads)
        env[NODE_VARIABLE] = node
        if config.hardware:
            env[HARDWARE_VARIABLE] = config.hardware
        if config.hardware == "cpu":  # a GPU node taking CPU runs keeps them off its GPUs
            env.update(CUDA_VISIBLE_DEVICES="", DYNAMOE_TORCH_DEVICE="cpu", JAX_PLATFORMS="cpu")
        proc = start_worker(config, root, WorkerArgs(**args), env)
        relay.push.remote(box, "line", f"running on node {node} (pid {proc.pid})")
        done = threading.Event()

        def watch() -> None:  # the worker checkpoints after the epoch line: look for the file itself
            seen = None
            path = store.checkpoint_path(key)
            while True:
                stopping = done.wait(POLL_S)
                try:
                    stat = path.stat()
                    now = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
                    if now != seen:
                        data = path.read_bytes()  # written atomically: a whole file or the previous one
                        seen = now
                        ray.get(relay.push.remote(box, "checkpoint", data), timeout=120)  # held by the driver before the next
                except FileNotFoundError:
                    pass
                if stopping:
                    return

        errors: list[str] = []
        watcher = threading.Thread(target=watch, daemon=True)
        reader = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)
        watcher.start()
        reader.start()
        for line in proc.stdout:
            relay.push.remote(box, "line", line.rstrip())
        code = proc.wait()
        reader.join()
        done.set()
        watcher.join()
        saved = store.params_path(key)
        return {
            "code": code,
            "stderr": "".join(errors),
            "record": _read_json(store.path(key)),
            "failure": _read_json(store.failure_path(key)),
            "params": saved.read_bytes() if args.get("save_params") and saved.exists() else None,
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _arrays(data: bytes) -> dict:
    import numpy as np

    with np.load(io.BytesIO(data)) as arrays:
        return {name: arrays[name] for name in arrays.files}


class RayExecutor:
    """Runs each worker as a Ray task (see the module docstring); use through :func:`open_executor`."""

    name = "ray"

    def __init__(self, ray, *, cpus_per_run: float = 1.0, gpus_per_run: float | None = None, retries: int = 2) -> None:
        self.ray = ray
        self.cpus = float(cpus_per_run)
        self.gpus = gpus_per_run
        self.retries = retries
        self.threads = max(1, int(self.cpus))
        self.concurrency = 1
        self._lock = threading.Lock()
        self._live: set = set()
        self._stopped = False
        self._relay = None
        self._task = ray.remote(run_on_node)

    # what a run asks of a node
    def demand(self, config: RunConfig) -> dict[str, float]:
        kind = config.hardware
        gpus = 0.0 if kind == "cpu" else float(self.gpus if self.gpus is not None else (1 if kind in GPU_KINDS else 0))
        need = {"CPU": self.cpus}
        if gpus:
            need["GPU"] = gpus
        if kind:
            need[hardware_resource(kind)] = 1.0
        return need

    def prepare(self, configs: list[RunConfig]) -> None:
        """Refuse, before anything is submitted or written, runs no live node of the cluster can take."""
        ray = self.ray
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        for need in {tuple(sorted(self.demand(s).items())) for s in configs}:
            need = dict(need)
            if any(all(n["Resources"].get(r, 0.0) >= v for r, v in need.items()) for n in nodes):
                continue
            kinds = [r for r in need if r.startswith("hardware:")]
            if kinds and not any(n["Resources"].get(kinds[0], 0.0) >= 1 for n in nodes):
                kind = kinds[0].split(":", 1)[1]
                raise RayExecutorError(
                    f"--hardware {kind}: no node of the Ray cluster declares that kind (the custom resource {kinds[0]}); start one "
                    f"with `ray start --address HEAD:6379 --resources '{{\"{kinds[0]}\": 1000}}'`"
                )
            have = "; ".join(
                f"{n.get('NodeManagerAddress', '?')}: " + ", ".join(f"{r} {v:g}" for r, v in sorted(n["Resources"].items()) if _shown(r))
                for n in nodes
            )
            asked = ", ".join(f"{r} {v:g}" for r, v in need.items())
            raise RayExecutorError(
                f"no node of the Ray cluster can take a run asking for {asked} (nodes: {have}); lower --cpus-per-run or "
                "--gpus-per-run, or add a node that has them"
            )
        self.concurrency = max(1, min(len(configs), 256))  # Ray queues what does not fit; the threads only wait
        if self._relay is None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            here = ray.get_runtime_context().get_node_id()
            strategy = NodeAffinitySchedulingStrategy(node_id=here, soft=True)
            self._relay = ray.remote(num_cpus=0)(_Relay).options(scheduling_strategy=strategy).remote()

    def run(self, config: RunConfig, store: Store, args: WorkerArgs, say) -> tuple[int | None, str]:
        ray = self.ray
        from ray import exceptions as rex

        key = config.key
        if args.rerun:
            store.drop_checkpoint(key)  # a rerun starts afresh; its own checkpoints then carry its retries
        remote_args = {"compile": args.compile, "rerun": False, "save_params": args.save_params, "data_dir": args.data_dir}
        params = {}
        if config.init_from is not None and store.params_path(config.init_from.key).exists():
            params[config.init_from.key] = store.params_path(config.init_from.key).read_bytes()
        lost, attempt = "", 0
        while True:
            checkpoint_path = store.checkpoint_path(key)
            checkpoint = checkpoint_path.read_bytes() if checkpoint_path.exists() else None
            box = f"{key}/{attempt}"
            need = self.demand(config)
            resources = {r: v for r, v in need.items() if r not in ("CPU", "GPU")}
            options = {"num_cpus": need["CPU"], "num_gpus": need.get("GPU", 0), "max_retries": 0, "name": f"dynamoe {key}"}
            if resources:
                options["resources"] = resources
            with self._lock:
                if self._stopped:
                    return None, ""
                task = self._task.options(**options)
                ref = task.remote(config.as_dict(), remote_args, self.threads, checkpoint, params, self._relay, box)
                self._live.add(ref)
            try:
                while not ray.wait([ref], timeout=POLL_S)[0]:
                    self._deliver(ray.get(self._relay.take.remote(box)), store, key, say)
                    if self._stopped:
                        break
                result, lost = ray.get(ref, timeout=60), ""
            except (rex.TaskCancelledError, rex.GetTimeoutError):
                result, lost = None, "cancelled"
            except (rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError, rex.RaySystemError, rex.OwnerDiedError) as exc:
                result, lost = None, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            except rex.RayTaskError as exc:  # the task's own code raised: not the worker's fault, not retried
                with self._lock:
                    self._live.discard(ref)
                return 1, str(exc)
            finally:
                with self._lock:
                    self._live.discard(ref)
            self._deliver(ray.get(self._relay.take.remote(box)), store, key, say)
            if self._stopped:
                return None, ""
            if result is not None and (result["record"] is not None or result["failure"] is not None):
                return self._finish(config, store, result, args, say)
            if result is not None:
                lost = f"the worker exited with status {result['code']} without a record"
            attempt += 1
            if attempt > self.retries:
                details = (result or {}).get("stderr", "")
                store.put_failure(key, config.as_dict(), f"worker lost {attempt} times (last: {lost})", details[-4000:])
                return (result or {}).get("code", 1), details
            saved = store.get_checkpoint(key)
            after = f"from its checkpoint after epoch {Checkpoint.from_arrays(saved).epoch}" if saved else "from the start"
            say(f"worker lost ({lost}); trying again {after} ({attempt}/{self.retries})")

    def _deliver(self, messages: list, store: Store, key: str, say) -> None:
        for kind, payload in messages:
            if kind == "line":
                say(payload)
            elif kind == "checkpoint":
                store.put_checkpoint(key, _arrays(payload))

    def _finish(self, config: RunConfig, store: Store, result: dict, args: WorkerArgs, say) -> tuple[int, str]:
        key = config.key
        if result["failure"] is not None:
            failure = result["failure"]
            store.put_failure(key, failure.get("spec", config.as_dict()), failure["error"], failure.get("details", ""))
            return result["code"], result["stderr"]
        if result["params"] is not None:  # before the record, as the worker does
            store.put_params(key, _arrays(result["params"]))
        record = {k: v for k, v in result["record"].items() if k not in ("version", "schema_version")}
        try:
            store.put(record, supersede=args.rerun)
        except StoreError as exc:  # another sweep finished the run first: its record stands
            say(f"kept: {exc}")
        store.drop_checkpoint(key)
        return result["code"], result["stderr"]

    def stop(self) -> None:
        """Cancel every task (force: its worker process goes, its subprocess with it); checkpoints stay."""
        with self._lock:
            self._stopped = True
            live = list(self._live)
        for ref in live:
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # finished meanwhile
                pass

    def close(self) -> None:
        if self._relay is not None:
            try:
                self.ray.kill(self._relay)
            except Exception:
                pass
            self._relay = None


def _shown(resource: str) -> bool:
    return resource in ("CPU", "GPU") or resource.startswith("hardware:")


@contextmanager
def open_executor(address: str | None = None, *, cpus_per_run: float = 1.0, gpus_per_run: float | None = None, retries: int = 2):
    """A connected :class:`RayExecutor`; a runtime this started is shut down on leaving."""
    ray = import_ray()
    started = time.perf_counter()
    owned = connect(ray, address)
    executor = RayExecutor(ray, cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run, retries=retries)
    executor.connect_seconds = time.perf_counter() - started
    try:
        yield executor
    finally:
        executor.close()
        if owned:
            ray.shutdown()
