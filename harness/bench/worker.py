"""The bench's measurement: one backend's worker process, ``python -m harness.bench.worker BACKEND
REQUEST.json OUT.json``.

Every requested variant is built and warmed up first (compilation and warm-up are timed apart, never
counted), then the variants are timed in interleaved rounds (variant A's block of steps, B's, ..., then
the next round), so that a noisy machine slows all of them alike. A block ends with one host sync (the
loss as a float), none inside a step. Last, the backend's own square fp32 matmul rate. The result holds
the raw samples, the backend's runtime, the BLAS that served it (``backends.blas_in_use``) and the
process's peak resident memory. A language-model step (``lm_worker``) is timed alone in its own process
(its peak memory is the variant's), ``lm_repeats`` one-step samples after the warm-up.
"""

from __future__ import annotations

import contextlib
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import backends
from backends.spec.config import ModelConfig, TrainConfig

BATCH = 256
LM_BATCH = (32, 128)  # windows x tokens: a language-model training batch (Table 5's protocol)


def matmul_rate(backend_name: str, n: int, repeats: int) -> list[float]:
    """GFLOP/s of the backend's own fp32 ``n x n`` matrix product, one sample per repeat."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    if backend_name == "torch":
        import torch

        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        run = lambda: torch.matmul(ta, tb)  # noqa: E731
        sync = lambda r: None  # noqa: E731
    elif backend_name == "mlx":
        import mlx.core as mx

        ma, mb = mx.array(a), mx.array(b)
        run = lambda: mx.matmul(ma, mb)  # noqa: E731
        sync = mx.eval
    else:
        import keras

        from backends.keras.train import compile_fn

        ka, kb = keras.ops.convert_to_tensor(a), keras.ops.convert_to_tensor(b)
        fn = compile_fn(keras.ops.matmul)
        run = lambda: fn(ka, kb)  # noqa: E731
        sync = keras.ops.convert_to_numpy
    sync(run())
    samples = []
    for _ in range(repeats):
        count = max(2, int(2e9 / (2 * n**3)))
        start = time.perf_counter()
        for _ in range(count):
            result = run()
        sync(result)
        samples.append(2 * n**3 * count / (time.perf_counter() - start) / 1e9)
    return samples


def _dispatch(method: str | None):
    from backends.spec import dispatch

    return dispatch.use(method) if method else contextlib.nullcontext()


class _Timed:
    """One timed variant: a zero-argument step function, its last result, and how to sync on it."""

    def __init__(self, key: str, step, sync, method: str | None):
        self.key, self.step, self.sync, self.method = key, step, sync, method
        self.samples: list[float] = []
        self.per_block = 2

    def run(self, count: int) -> float:
        with _dispatch(self.method):
            start = time.perf_counter()
            for _ in range(count):
                result = self.step()
            self.sync(result)
            return time.perf_counter() - start


def _make(backend, cfg: ModelConfig, mode: str, compile: bool):
    """A zero-argument step of ``mode`` for ``cfg`` on ``backend``, with its sync."""
    from backends.spec import init_params
    from harness.training import step_noises

    rng = np.random.default_rng(1)
    x = rng.random((BATCH, cfg.input_dim), dtype=np.float32)
    y = rng.integers(0, cfg.num_classes, BATCH)
    model = backend.build_model(cfg, init_params(cfg, 0), "float32")
    if mode == "train":
        trainer = backend.Trainer(model, TrainConfig(batch_size=BATCH), compile=compile)
        noises = step_noises(cfg, 0, 0, BATCH)
        return (lambda: trainer.step(x, y, noises, 1e-4)), backend.to_float
    return (lambda: backend.forward(model, x)[0]), (lambda r: None)


def worker(backend_name: str, request: dict) -> dict:
    """Measure every requested variant on one backend (this process); returns the rows. Compute threads
    are the process environment's (``backends.worker_env``)."""
    from backends.spec import dispatch

    backend = backends.load(backend_name)
    compile = request["compile"]
    timed: list[_Timed] = []
    rows: list[dict] = []
    warmup: dict[str, float] = {}
    for v in request["variants"]:
        cfg = ModelConfig.from_dict(v["cfg"])
        methods = [None]
        if v["label"] == "descending" and request["dispatch"]:
            default = dispatch.method(backend.OPS, cfg.hidden_dim)
            usable = [m for m in dispatch.METHODS if m != "sparse" or (not compile and backend.OPS.supports_nonzero)]
            methods += [m for m in usable if m != default]
        for mode in ("train", "infer") if v.get("infer", True) else ("train",):
            for method in methods if mode == "train" else [None]:
                key = f"{v['size']}/{v['label']}/{mode}" + (f"/{method}" if method else "")
                start = time.perf_counter()
                with _dispatch(method):
                    step, sync = _make(backend, cfg, mode, compile)
                    t = _Timed(key, step, sync, method)
                    t.run(request["warmup"])
                    probe = t.run(1)
                warmup[key] = time.perf_counter() - start
                t.per_block = max(2, min(50, round(request["block_seconds"] / max(probe, 1e-6))))
                timed.append(t)
                rows.append({**{k: v[k] for k in ("label", "size", "table2") if k in v}, "equal_to": v.get("equal_to"), "mode": mode})
                rows[-1].update(key=key, dispatch=method or dispatch.method(backend.OPS, cfg.hidden_dim), cfg=v["cfg"])
    for _ in range(request["repeats"]):
        for t in timed:
            t.samples.append(t.run(t.per_block) / t.per_block * 1e3)
    for row, t in zip(rows, timed):
        row.update(ms=statistics.median(t.samples), ms_min=min(t.samples), ms_max=max(t.samples), samples_ms=t.samples)
        row.update(steps_per_block=t.per_block, warmup_s=warmup[t.key])
    rates = matmul_rate(backend_name, request["matmul_n"], request["repeats"])
    return {
        "peak_rss_mb": peak_rss_mb(),
        "runtime": backend.runtime_info(),
        "blas": backends.blas_in_use(backend_name),
        "compile": compile,
        "matmul_gflops": statistics.median(rates),
        "matmul_samples": rates,
        "rows": rows,
    }


def peak_rss_mb() -> float:
    """This process's peak resident memory (``ru_maxrss``, KiB on Linux) in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def lm_worker(backend_name: str, request: dict) -> dict:
    """Time one language-model step (``request["lm"]``: its cfg and mode, ``train`` or ``eval``) on a
    batch of ``LM_BATCH`` windows, alone in this process, so that the process's peak resident memory is
    the variant's: build, warm up (untimed), then ``lm_repeats`` samples of one step each."""
    from backends.spec import init_params
    from harness.training import step_noises

    backend = backends.load(backend_name)
    v = request["lm"]
    cfg = ModelConfig.from_dict(v["cfg"])
    gen = np.random.default_rng(1)
    x, y = (gen.integers(0, cfg.vocab_size, LM_BATCH) for _ in range(2))
    start = time.perf_counter()
    model = backend.build_model(cfg, init_params(cfg, 0), "float32")
    if v["mode"] == "train":
        trainer = backend.Trainer(model, TrainConfig(batch_size=LM_BATCH[0]), compile=request["compile"])
        noises = step_noises(cfg, 0, 0, LM_BATCH[0] * LM_BATCH[1])
        t = _Timed(v["key"], lambda: trainer.step(x, y, noises, 1e-4), backend.to_float, None)
    else:
        t = _Timed(v["key"], lambda: backend.evaluate_batch(model, x, y), lambda r: None, None)
    t.run(max(1, request.get("lm_warmup", 1)))
    warmup_s = time.perf_counter() - start
    t.samples = [t.run(1) * 1e3 for _ in range(max(1, request.get("lm_repeats", 5)))]
    row = {"label": v["label"], "size": v["size"], "mode": v["mode"], "key": v["key"], "cfg": v["cfg"], "task": "lm"}
    row.update(ms=statistics.median(t.samples), ms_min=min(t.samples), ms_max=max(t.samples), samples_ms=t.samples)
    row.update(steps_per_block=1, warmup_s=warmup_s, peak_rss_mb=peak_rss_mb())
    return {"runtime": backend.runtime_info(), "blas": backends.blas_in_use(backend_name), "compile": request["compile"], "rows": [row]}


def main(argv: list[str]) -> int:
    backend_name, request_path, out_path = argv
    request = json.loads(Path(request_path).read_text())
    result = lm_worker(backend_name, request) if request.get("lm") else worker(backend_name, request)
    Path(out_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
