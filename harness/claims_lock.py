"""Run claims: a sweep claims a run before it trains it, so two sweeps on one store never train the same run.

A claim is ``<root>/claims/<key>.json``, created with ``O_CREAT | O_EXCL`` (of two sweeps, exactly one
creates it), holding the owner's pid, host, start time and command. Its mtime is the heartbeat: the
owner touches it every :data:`HEARTBEAT_SECONDS` while the run is in flight (:class:`Heartbeat`, one
thread for all the claims a sweep holds) and removes it when the run ends.

A claim whose owner is dead is taken over: on the same host, its pid is gone; anywhere, its heartbeat
is older than :data:`STALE_AFTER_SECONDS` (a SIGKILLed sweep, a crashed machine, a pid reused). Taking
over is serialised by an ``flock`` on ``claims/.takeover.lock`` (POSIX; elsewhere only the heartbeat
rule holds and two takers racing is possible), so a fresh claim is never mistaken for the stale one.

For an executor's driver (the local runner, a Ray driver): ``try_claim(root, key)`` gives a held
:class:`Claim` or the live :class:`Owner` that holds it; keep held claims in a :class:`Heartbeat`; call
``Claim.release()`` when the run has ended, however it ended.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: the heartbeat rule alone
    fcntl = None

HEARTBEAT_SECONDS = 10.0
STALE_AFTER_SECONDS = 120.0  # 12 missed heartbeats: the owner is dead or hung
HOST = socket.gethostname()


def claims_dir(root) -> Path:
    return Path(root) / "claims"


def claim_path(root, key: str) -> Path:
    return claims_dir(root) / f"{key}.json"


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would end the process there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


@dataclass(frozen=True)
class Owner:
    """Who holds a claim, as its file says (``pid`` -1: the file could not be read yet)."""

    key: str
    pid: int
    host: str
    started: float
    heartbeat: float  # the claim file's mtime
    path: Path

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host}"

    def alive(self, stale_after: float = STALE_AFTER_SECONDS, now: float | None = None) -> bool:
        if (time.time() if now is None else now) - self.heartbeat > stale_after:
            return False
        if self.host == HOST and self.pid > 0:
            return _pid_alive(self.pid)
        return True


def read_owner(root, key: str) -> Owner | None:
    """The owner of ``key``'s claim, or ``None`` if it has none."""
    path = claim_path(root, key)
    try:
        mtime = path.stat().st_mtime
        data = json.loads(path.read_text(encoding="utf-8"))
        return Owner(key, int(data["pid"]), str(data["host"]), float(data["started"]), mtime, path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):  # being written this instant, or damaged: judged by its age
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return None
        return Owner(key, -1, "unknown", mtime, mtime, path)


class Claim:
    """A claim this process holds."""

    def __init__(self, root, key: str, started: float) -> None:
        self.root, self.key, self.started = Path(root), key, started
        self.path = claim_path(root, key)

    def mine(self) -> bool:
        owner = read_owner(self.root, self.key)
        return owner is not None and owner.pid == os.getpid() and owner.host == HOST and owner.started == self.started

    def beat(self) -> bool:
        """Refresh the heartbeat; ``False`` if the claim file is gone."""
        try:
            os.utime(self.path)
            return True
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Remove the claim if it is still this process's (idempotent)."""
        if self.mine():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _create(root, key: str) -> Claim | None:
    path = claim_path(root, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return None
    started = time.time()
    body = {"key": key, "pid": os.getpid(), "host": HOST, "started": started, "command": " ".join(sys.argv)}
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(body, handle)
        handle.flush()
        os.fsync(handle.fileno())
    return Claim(root, key, started)


@contextlib.contextmanager
def _takeover_lock(root):
    if fcntl is None:
        yield
        return
    lock = claims_dir(root) / ".takeover.lock"
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def try_claim(root, key: str, *, stale_after: float = STALE_AFTER_SECONDS) -> Claim | Owner:
    """Claim ``key``: a held :class:`Claim`, or the live :class:`Owner` of the claim another process holds.
    A dead owner's claim is taken over."""
    owner = None
    for _ in range(5):
        claim = _create(root, key)
        if claim is not None:
            return claim
        owner = read_owner(root, key)
        if owner is None:
            continue  # released between the two calls
        if owner.alive(stale_after):
            return owner
        with _takeover_lock(root):
            again = read_owner(root, key)  # under the lock: still the same dead owner?
            if again is not None and (again.pid, again.host, again.started) == (owner.pid, owner.host, owner.started):
                again.path.unlink(missing_ok=True)
    if owner is None:
        raise OSError(f"cannot claim {claim_path(root, key)}: it keeps appearing and vanishing")
    return owner  # a dead owner's claim that could not be removed (permissions): reported as held


def wait_for_claim(
    root, key: str, *, stop: threading.Event | None = None, poll: float = 2.0, stale_after: float = STALE_AFTER_SECONDS
) -> Claim | None:
    """Block until ``key`` is claimed by this process; ``None`` if ``stop`` is set first."""
    stop = stop or threading.Event()
    while True:
        got = try_claim(root, key, stale_after=stale_after)
        if isinstance(got, Claim):
            return got
        if stop.wait(poll):
            return None


class Heartbeat:
    """One daemon thread refreshing the heartbeat of every claim added, until ``stop`` (or the ``with`` ends)."""

    def __init__(self, interval: float = HEARTBEAT_SECONDS) -> None:
        self.interval = interval
        self._claims: set[Claim] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="claim-heartbeat", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                held = list(self._claims)
            for claim in held:
                claim.beat()

    def add(self, claim: Claim) -> None:
        with self._lock:
            self._claims.add(claim)

    def discard(self, claim: Claim) -> None:
        with self._lock:
            self._claims.discard(claim)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> Heartbeat:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
