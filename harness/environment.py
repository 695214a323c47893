"""Environment fingerprint recorded with every result: versions, device, CPU/GPU model, OS, git commit,
the BLAS serving this process's framework (``backends.blas_in_use``), and the digests of the dataset files
the process loaded (``harness.data.checksums.loaded``).

``cpu`` is /proc/cpuinfo's model name, which a virtual machine may cut to the vendor's family ("AMD EPYC");
``cpu_id`` adds the vendor, family, model and stepping numbers, which tell the generations apart. Records
written before these fields existed lack ``cpu_id`` and ``data_files``: readers treat them as unknown.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
NODE_VARIABLE = "DYNAMOE_NODE"  # set by the Ray executor for its workers: the Ray node (id and address)
HARDWARE_VARIABLE = "DYNAMOE_HARDWARE"  # set by the Ray executor: the kind of hardware the run was placed on
COMMIT_VARIABLE = "DYNAMOE_GIT_COMMIT"  # names the commit of a copy of the tree that has no .git


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    if match:
        return match.group(1).strip()
    if sys.platform == "darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            pass
    return platform.processor() or platform.machine()


def cpu_id() -> str:
    """Vendor, family, model and stepping of the first CPU in /proc/cpuinfo (e.g. ``AuthenticAMD 25/17/1``); "" elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    fields = {}
    for key in ("vendor_id", "cpu family", "model", "stepping"):
        match = re.search(rf"^{key}\s*:\s*(.+)$", text, re.MULTILINE)
        fields[key] = match.group(1).strip() if match else "?"
    if all(v == "?" for v in fields.values()):
        return ""
    return f"{fields['vendor_id']} {fields['cpu family']}/{fields['model']}/{fields['stepping']}"


def git_commit() -> str:
    """The checkout's commit, with ``+dirty`` when tracked files differ from it; outside git (a copy of
    the tree on a cluster node or an accelerator machine) ``$DYNAMOE_GIT_COMMIT`` when set, else "unknown"."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True).stdout
        return commit + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get(COMMIT_VARIABLE) or "unknown"


def fingerprint(runtime: dict | None = None) -> dict:
    """The machine and software a result was produced on; ``runtime`` = a backend's ``runtime_info()``."""
    from backends import blas_in_use
    from harness.data.checksums import loaded

    info = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "os": f"{platform.system()} {platform.release()}",
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_id": cpu_id(),
        "cpu_count": os.cpu_count(),
        "git_commit": git_commit(),
        "blas": blas_in_use(),
    }
    info["node"] = platform.node()
    if os.environ.get(NODE_VARIABLE):  # a Ray executor's worker: which node of the cluster
        info["ray_node"] = os.environ[NODE_VARIABLE]
    if runtime:
        info["backend"] = runtime
        if runtime.get("device"):
            info["device"] = runtime["device"]
    if os.environ.get(HARDWARE_VARIABLE):  # the kind of hardware `run --hardware` placed the run on
        info["hardware"] = os.environ[HARDWARE_VARIABLE]
    files = loaded()
    if files:  # the dataset files this process checked and used, with their digests
        info["data_files"] = files
    return info


def machine_slug(device: str = "cpu") -> str:
    """A file-name-safe name of this machine's kind, e.g. ``cpu-x86_64-linux``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{device}-{platform.machine()}-{platform.system()}".lower())
