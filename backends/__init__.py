"""DynaMoE in several frameworks behind one set of names.

``backends.spec`` is the framework-free specification and ``backends.reference`` its float64 NumPy
evaluation. Each framework backend (``backends.torch``, ``backends.keras``, ``backends.mlx``) exposes the
same names (``backends.api`` documents them); ``load(name)`` imports one lazily, so a machine with only
one framework installed runs that one. A backend run in a child process gets its environment from
``worker_env`` and its compile default from ``COMPILE_BY_DEFAULT`` (``backends.process_env``).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType

from .process_env import COMPILE_BY_DEFAULT, blas_in_use, keras_backend, worker_env

__all__ = [
    "BACKENDS",
    "COMPILE_BY_DEFAULT",
    "BackendUnavailable",
    "available",
    "blas_in_use",
    "load",
    "missing_packages",
    "unavailable_reason",
    "worker_env",
]

BACKENDS = ("torch", "keras-jax", "keras-torch", "mlx")
_REQUIREMENTS = {
    "torch": ("backends.torch", ("torch",), "torch"),
    "keras-jax": ("backends.keras", ("keras", "jax"), "keras"),
    "keras-torch": ("backends.keras", ("keras", "torch"), "keras"),
    "mlx": ("backends.mlx", ("mlx",), "mlx"),
}


class BackendUnavailable(RuntimeError):
    """The backend exists but its framework is not installed (or cannot run in this process)."""


def _check_name(name: str) -> None:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")


def missing_packages(name: str) -> list[str]:
    """The packages backend ``name`` needs that are not installed."""
    _check_name(name)
    return [pkg for pkg in _REQUIREMENTS[name][1] if importlib.util.find_spec(pkg) is None]


def unavailable_reason(name: str) -> str | None:
    """Why backend ``name`` cannot run in this process, or ``None`` if it can."""
    missing = missing_packages(name)
    if missing:
        extra = _REQUIREMENTS[name][2]
        return f"backend {name!r} needs {', '.join(missing)}, not installed: pip install -e '.[{extra}]'"
    wanted = keras_backend(name)
    if wanted and "keras" in sys.modules:
        current = sys.modules["keras"].backend.backend()
        if current != wanted:
            return (
                f"backend {name!r} needs Keras on {wanted}, but this process already runs Keras on {current}: "
                f"Keras picks its backend once per process; run it in another process (KERAS_BACKEND={wanted})"
            )
    return None


def available() -> list[str]:
    """The backends that can run in this process."""
    return [name for name in BACKENDS if unavailable_reason(name) is None]


def load(name: str) -> ModuleType:
    """Import backend ``name`` (one of ``BACKENDS``) and return its module."""
    _check_name(name)
    reason = unavailable_reason(name)
    if reason:
        raise BackendUnavailable(reason)
    if keras_backend(name):
        os.environ["KERAS_BACKEND"] = keras_backend(name)
    return importlib.import_module(_REQUIREMENTS[name][0])
