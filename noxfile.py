"""nox sessions: one per backend, the parity matrix, lint.

Sessions run in the current environment (``python=False``): the project's venv from ``.ci/setup``
already holds the frameworks, and re-installing PyTorch per session would cost minutes for nothing.

    nox -s tests-spec tests-torch tests-keras-jax tests-keras-torch tests-mlx tests-ray parity lint
"""

from __future__ import annotations

import sys

import nox

nox.options.sessions = ["tests-spec", "tests-torch", "tests-keras-jax", "tests-keras-torch", "tests-mlx", "tests-ray", "parity", "lint"]

FRAMEWORK_MARKS = "torch or keras_jax or keras_torch or mlx or parity or ray"
BACKEND_TESTS = {
    "spec": ({}, f"not ({FRAMEWORK_MARKS})"),
    "torch": ({}, "torch and not parity"),
    "keras-jax": ({"KERAS_BACKEND": "jax"}, "keras_jax and not parity"),
    "keras-torch": ({"KERAS_BACKEND": "torch"}, "keras_torch and not parity"),
    "mlx": ({}, "mlx and not parity"),
}


def _backend_session(backend: str):
    env, marks = BACKEND_TESTS[backend]

    def session(session: nox.Session) -> None:
        session.run(sys.executable, "-m", "pytest", "-m", marks, *session.posargs, env=env)

    session.__doc__ = (
        "The spec, reference, data and harness tests (no framework)" if backend == "spec" else f"The {backend} backend's tests"
    )
    return nox.session(name=f"tests-{backend}", python=False)(session)


for _backend in BACKEND_TESTS:
    _backend_session(_backend)


@nox.session(name="tests-ray", python=False)
def tests_ray(session: nox.Session) -> None:
    """The Ray executor's tests on local Ray runtimes (127.0.0.1 only); skipped, with the reason, without Ray."""
    session.run(sys.executable, "-m", "pytest", "-m", "ray", *session.posargs)


@nox.session(python=False)
def parity(session: nox.Session) -> None:
    """The cross-backend parity matrix: the tests, then the matrix written under results/parity/."""
    session.run(sys.executable, "-m", "pytest", "-m", "parity", *session.posargs)
    session.run(sys.executable, "-m", "harness", "parity", "--quick")


@nox.session(python=False)
def lint(session: nox.Session) -> None:
    session.run(sys.executable, "-m", "ruff", "check", "backends", "harness", "tests", "noxfile.py")
