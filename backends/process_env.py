"""How a worker process for a backend is started: its environment, whether it compiles, and its BLAS.

Every harness command that runs a backend in a child process (sweeps, the parity matrix, the benchmark)
takes the child's environment from ``worker_env``, and the compile default from ``COMPILE_BY_DEFAULT``.

The BLAS: the PyPI ``mlx[cpu]`` wheel links netlib's reference BLAS (``mlx_cpu.libs/libblas-*.so``);
OpenBLAS, when the system has it (Debian: ``apt-get install libopenblas0-pthread``), is put first in an
MLX worker's ``LD_PRELOAD``, so MLX's ``cblas_sgemm`` binds to it. Measured on the 2-core CPU machine
(``python -m harness bench --backends mlx``): the 1024^3 float32 matmul 11.9 -> 274.5 GFLOP/s, the
compiled Small descending training step (batch 256) 133.4 -> 14.4 ms. ``DYNAMOE_MLX_BLAS`` chooses
otherwise: ``bundled`` (the wheel's own) or a library path. ``blas_in_use`` says which BLAS serves the
current process, for the records.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

# Compile or not, per backend, from measurements: torch.compile of the step costs 60-150 s per model on
# 2 cores (~7 s from a warm TORCHINDUCTOR_CACHE_DIR) and makes the Small descending step ~25% faster
# (eager 14.4 vs compiled 10.8 ms, interleaved, one thread): ~17 s saved over a 20-epoch run (~4,700
# steps), less than a cold compile, so eager stays the default; Keras on JAX compiles the whole step with jax.jit (eager is ~20x
# slower); Keras on torch falls back to eager anyway; mx.compile fuses the element-wise work around
# MLX's matmuls (and compiles per shape).
COMPILE_BY_DEFAULT = {"torch": False, "keras-jax": True, "keras-torch": False, "mlx": True}

# glibc serves every allocation over 32 MB with a fresh mmap and returns it on free, so each of a
# language-model step's vocabulary-wide tensors (4,096 x 50,257 floats, 823 MB) is page-faulted in
# anew, 4 KB at a time. Measured on the 2-core CPU machine (torch, Tiny LM step): 5.9 s by default,
# 3.8 s with transparent huge pages for those mappings (glibc >= 2.35; memory still goes back to the
# system); keeping freed blocks on the heap (MALLOC_MMAP_MAX_=0) gave 2.2 s but grew a worker to 21 GB.
# A user's own GLIBC_TUNABLES wins.
WORKER_MALLOC = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
# OpenMP (PyTorch's intra-op pool reads it at start-up), MKL, and OpenBLAS (MLX's, when preloaded).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# XLA's CPU client has no thread-count setting: one thread means no multi-threaded Eigen.
XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
BLAS_VARIABLE = "DYNAMOE_MLX_BLAS"
_OPENBLAS_DIRS = ("openblas-pthread", "openblas-openmp", "openblas-serial", "")


def keras_backend(backend: str) -> str | None:
    """The ``KERAS_BACKEND`` value of backend ``backend`` (``None`` when it is not Keras)."""
    return backend.split("-", 1)[1] if backend.startswith("keras-") else None


def worker_env(backend: str, threads: int, base: dict | None = None) -> dict:
    """The environment a worker process for ``backend`` runs with: ``base`` (default ``os.environ``) plus
    the malloc tunables (``base``'s own win), ``KERAS_BACKEND`` for the Keras backends, ``threads``
    compute threads when non-zero (OpenMP, MKL, OpenBLAS; XLA when 1), and for MLX a fast BLAS in
    ``LD_PRELOAD`` (``mlx_blas``) in front of any preload ``base`` has."""
    env = {**WORKER_MALLOC, **(os.environ if base is None else base)}
    keras = keras_backend(backend)
    if keras:
        env["KERAS_BACKEND"] = keras
    if threads:
        env.update(dict.fromkeys(THREAD_VARIABLES, str(threads)))
        if threads == 1:
            env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {XLA_ONE_THREAD}".strip()
    if backend == "mlx":
        library = mlx_blas(env)
        preloads = env.get("LD_PRELOAD", "").replace(":", " ").split()
        if library and library not in preloads:
            env["LD_PRELOAD"] = " ".join([library, *preloads])
    return env


def mlx_blas(env: dict | None = None) -> str | None:
    """The BLAS library an MLX worker preloads: ``env[DYNAMOE_MLX_BLAS]`` when it is a path, none when it
    is ``bundled`` (the wheel's reference BLAS serves), else the system's OpenBLAS (``find_openblas``)."""
    choice = (os.environ if env is None else env).get(BLAS_VARIABLE, "auto")
    if choice == "bundled":
        return None
    if choice != "auto":
        if not Path(choice).is_file():
            raise ValueError(f"{BLAS_VARIABLE}={choice!r}: no such library (give a path, 'bundled' or 'auto')")
        return choice
    return find_openblas()


def mlx_blas_reason(env: dict | None = None) -> str | None:
    """Why an MLX worker runs on the wheel's reference BLAS, or ``None`` when it gets a fast one."""
    choice = (os.environ if env is None else env).get(BLAS_VARIABLE, "auto")
    if choice == "bundled":
        return f"{BLAS_VARIABLE}=bundled"
    try:
        if mlx_blas(env):
            return None
    except ValueError as exc:
        return str(exc)
    return "no OpenBLAS found (Debian/Ubuntu: apt-get install libopenblas0-pthread)"


@functools.lru_cache(maxsize=1)
def find_openblas() -> str | None:
    """The system's OpenBLAS (``libopenblas.so.0``): the Debian multiarch directories (pthread build
    first), the usual library directories, then ``ldconfig -p``; ``None`` if there is none (or not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    triplet = f"{platform.machine()}-linux-gnu"
    roots = (f"/usr/lib/{triplet}", f"/lib/{triplet}", "/usr/lib64", "/usr/lib", "/usr/local/lib")
    for root in roots:
        for sub in _OPENBLAS_DIRS:
            path = Path(root, sub, "libopenblas.so.0")
            if path.is_file():
                return str(path)
    try:
        listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"^\s*libopenblas\.so\.0 \(([^)]*)\) => (\S+)$", listing, re.MULTILINE)
    return match.group(2) if match and Path(match.group(2)).is_file() else None


# --- which BLAS serves this process -------------------------------------------------------------------


class _DlInfo(ctypes.Structure):
    _fields_ = [("fname", ctypes.c_char_p), ("fbase", ctypes.c_void_p), ("sname", ctypes.c_char_p), ("saddr", ctypes.c_void_p)]


def _mapped_libraries() -> list[str]:
    try:
        text = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    fields = (line.split(None, 5) for line in text.splitlines())
    return list(dict.fromkeys(f[5] for f in fields if len(f) == 6 and ".so" in f[5]))


def _global_symbol_library(symbol: str) -> str | None:
    """The library a symbol lookup in the global scope (the executable, ``LD_PRELOAD``, ``RTLD_GLOBAL``
    libraries) finds ``symbol`` in: the dynamic linker looks there before a library's own dependencies."""
    try:
        libc = ctypes.CDLL(None)
        address = ctypes.cast(getattr(libc, symbol), ctypes.c_void_p)
        info = _DlInfo()
        if libc.dladdr(address, ctypes.byref(info)) and info.fname:
            return os.path.realpath(info.fname.decode())
    except (AttributeError, OSError):
        return None
    return None


def _describe(path: str) -> dict:
    name = Path(path).name
    if "openblas" in name and "scipy_openblas" not in name:
        out = {"name": "openblas", "path": path}
        try:
            lib = ctypes.CDLL(path)
            lib.openblas_get_config.restype = ctypes.c_char_p
            out["config"] = lib.openblas_get_config().decode().strip()
        except (AttributeError, OSError):
            pass
        return out
    if "mkl" in name:
        return {"name": "mkl", "path": path}
    if name.startswith("libblas") and "mlx_cpu.libs" in path:
        return {"name": "reference", "path": path, "config": "netlib reference BLAS bundled with the mlx wheel"}
    return {"name": Path(path).name.split(".so")[0].removeprefix("lib"), "path": path}


def blas_in_use(backend: str | None = None) -> dict:
    """The BLAS that serves ``backend``'s matrix products in this process (default: the framework already
    imported here): ``{"name": "openblas" | "reference" | "mkl" | ..., "path", "config"}``, plus the
    reason when MLX runs on the reference BLAS. MLX: the library ``cblas_sgemm`` binds to (the global
    scope first, as the dynamic linker does, then the wheel's own); PyTorch: its build's BLAS; JAX: XLA's
    own kernels; none imported: NumPy's."""
    if backend is None:
        loaded = [name for module, name in (("mlx.core", "mlx"), ("torch", "torch"), ("jax", "keras-jax")) if module in sys.modules]
        backend = loaded[0] if loaded else "numpy"
    if backend == "mlx":
        path = _global_symbol_library("cblas_sgemm")
        if path is None:
            path = next((p for p in _mapped_libraries() if "mlx_cpu.libs" in p and Path(p).name.startswith("libblas")), None)
        if path is None:
            return {"name": "unknown", "path": None, "config": "no BLAS library found in this process"}
        out = _describe(path)
        if out["name"] == "reference":
            out["reason"] = mlx_blas_reason() or "OpenBLAS was found but not preloaded in this process"
        return out
    if backend in ("torch", "keras-torch"):
        import torch

        match = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
        return {"name": match.group(1) if match else "unknown", "path": None, "config": "linked into PyTorch"}
    if backend == "keras-jax":
        return {"name": "xla", "path": None, "config": "XLA's own CPU kernels (Eigen), no BLAS library"}
    for path in _mapped_libraries():
        if "openblas" in Path(path).name:
            return {"name": "openblas", "path": path, "config": "NumPy's bundled OpenBLAS"}
    return {"name": "unknown", "path": None, "config": "no BLAS library found in this process"}
