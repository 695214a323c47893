"""``backends.worker_env`` (the environment of every backend worker process), the compile defaults, and
the BLAS an MLX worker gets (``backends.blas_in_use``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import backends
from backends import process_env


def test_worker_env_sets_keras_threads_xla_and_malloc_and_keeps_the_rest():
    base = {"PATH": "/bin", "XLA_FLAGS": "--mine", "GLIBC_TUNABLES": "user"}
    env = backends.worker_env("keras-jax", 1, base)
    assert env["PATH"] == "/bin" and env["KERAS_BACKEND"] == "jax" and env["GLIBC_TUNABLES"] == "user"
    assert all(env[v] == "1" for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"))
    assert env["XLA_FLAGS"] == "--mine --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    env = backends.worker_env("torch", 0, {})
    assert env == {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    assert backends.worker_env("keras-torch", 4, {})["KERAS_BACKEND"] == "torch" and "XLA_FLAGS" not in backends.worker_env("torch", 4, {})
    assert base == {"PATH": "/bin", "XLA_FLAGS": "--mine", "GLIBC_TUNABLES": "user"}  # not modified


def test_compile_defaults_cover_every_backend():
    assert list(backends.COMPILE_BY_DEFAULT) == list(backends.BACKENDS)
    assert [name for name, on in backends.COMPILE_BY_DEFAULT.items() if on] == ["keras-jax", "mlx"]


def test_mlx_worker_preloads_openblas_in_front_and_only_once(tmp_path):
    lib = tmp_path / "libopenblas.so.0"
    lib.write_bytes(b"")
    env = backends.worker_env("mlx", 2, {"LD_PRELOAD": "/other.so", process_env.BLAS_VARIABLE: str(lib)})
    assert env["LD_PRELOAD"] == f"{lib} /other.so" and env["OPENBLAS_NUM_THREADS"] == "2"
    assert backends.worker_env("mlx", 0, env)["LD_PRELOAD"] == env["LD_PRELOAD"]
    assert "LD_PRELOAD" not in backends.worker_env("mlx", 0, {process_env.BLAS_VARIABLE: "bundled"})
    assert "LD_PRELOAD" not in backends.worker_env("torch", 0, {process_env.BLAS_VARIABLE: str(lib)})
    assert process_env.mlx_blas_reason({process_env.BLAS_VARIABLE: "bundled"}) == "DYNAMOE_MLX_BLAS=bundled"
    with pytest.raises(ValueError, match="no such library"):
        backends.worker_env("mlx", 0, {process_env.BLAS_VARIABLE: str(tmp_path / "missing.so")})


def test_without_openblas_an_mlx_worker_runs_on_the_bundled_blas_and_says_why(monkeypatch):
    monkeypatch.setattr(process_env, "find_openblas", lambda: None)
    assert "LD_PRELOAD" not in backends.worker_env("mlx", 0, {})
    assert "apt-get install libopenblas0-pthread" in process_env.mlx_blas_reason({})


def test_find_openblas_names_a_library_or_none():
    found = process_env.find_openblas()
    assert found is None or "libopenblas" in found
    if found is None:
        assert "libopenblas0-pthread" in process_env.mlx_blas_reason({})


_PROBE = "import json, mlx.core as mx, backends; mx.eval(mx.ones((8, 8)) @ mx.ones((8, 8))); print(json.dumps(backends.blas_in_use()))"


@pytest.mark.mlx
@pytest.mark.parametrize("choice", ["auto", "bundled"])
def test_an_mlx_worker_runs_on_the_blas_its_environment_chose(choice):
    pytest.importorskip("mlx.core")
    if choice == "auto" and process_env.find_openblas() is None:
        pytest.skip("no OpenBLAS on this machine")
    env = backends.worker_env("mlx", 0, {**os.environ, process_env.BLAS_VARIABLE: choice})
    blas = json.loads(subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True).stdout)
    assert blas["name"] == ("openblas" if choice == "auto" else "reference"), blas
    if choice == "bundled":
        assert blas["reason"] == "DYNAMOE_MLX_BLAS=bundled"


def test_a_copy_of_the_tree_without_git_names_its_commit_from_the_environment(tmp_path, monkeypatch):
    from harness import environment

    monkeypatch.setattr(environment, "REPO", tmp_path)  # not a git checkout
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.delenv(environment.COMMIT_VARIABLE, raising=False)
    assert environment.git_commit() == "unknown"
    monkeypatch.setenv(environment.COMMIT_VARIABLE, "0123abc")
    assert environment.git_commit() == "0123abc"
    monkeypatch.setattr(environment, "REPO", environment.Path(__file__).resolve().parents[1])
    assert environment.git_commit() != "0123abc"  # a checkout's own commit wins
