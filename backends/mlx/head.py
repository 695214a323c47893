"""The language-model head's sums on MLX (``spec.forward.head_sums`` and ``head_loss_and_grads``): the
spec's chunks of tokens and its per-chunk functions (``head_chunk_sums``, ``head_chunk_grads``) on
lanes: on the CPU, chunk ``i`` runs on CPU stream ``i % 2``, and each chunk waits for the one before it
on its lane (``mx.depends``).

Why the order: MLX evaluates the step's graph lazily, and nothing in the spec's loop orders one chunk's
logits after another's gradients, so its evaluation started chunks before the earlier ones were
consumed: peak resident memory of a Tiny LM training step 1.79 GB, 0.53 GB with one lane (measured on
the 2-core CPU machine with OpenBLAS, same step time).

Why two lanes: MLX's CPU element-wise kernels (the chunk's exp, about half of the step) run on one
thread per stream, so two streams keep both cores busy: Tiny LM training step 4.4 s -> 3.0 s
(interleaved, quiet machine), 0.75 GB. On a GPU, or given one thread, one lane (the default stream).

Why one BLAS thread per lane (``blas_threads_per_lane``, around the evaluation of a language-model step):
each lane's matrix products otherwise start OpenBLAS's own two threads, four busy threads on two cores.
Tiny LM step, compiled, interleaved in one process on the 2-core machine: training 2.17 -> 1.59 s,
evaluation 1.35 -> 1.04 s. The image models keep OpenBLAS's threads (their steps have no lanes: one
thread made the Small step 9 -> 13 ms).

The sums are the spec's; each lane adds its chunks in order and the lanes are added at the end, so only
the order of the additions over chunks differs from the spec's loop.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os

import mlx.core as mx

from backends.spec.forward import head_chunk_grads, head_chunk_sums

CPU_LANES = 2
_STREAMS: list = []


def cpu_lanes() -> int:
    """``CPU_LANES``, or 1 where the process is given one compute thread (``OMP_NUM_THREADS=1``, as a sweep's
    worker running beside others is): a second stream would only take another worker's core."""
    return 1 if os.environ.get("OMP_NUM_THREADS") == "1" else CPU_LANES


def _streams() -> list:
    """The streams chunks run on: ``cpu_lanes()`` CPU streams (the default one first), or the default stream."""
    if mx.default_device() != mx.cpu:
        return [mx.default_stream(mx.default_device())]
    if not _STREAMS:
        _STREAMS.extend([mx.default_stream(mx.cpu), *(mx.new_stream(mx.cpu) for _ in range(cpu_lanes() - 1))])
    return _STREAMS


@functools.cache
def _openblas():
    """The process's OpenBLAS thread controls ``(get, set)`` (preloaded: ``backends.process_env``), or ``None``
    where another BLAS serves."""
    process = ctypes.CDLL(None)
    try:
        return process.openblas_get_num_threads, process.openblas_set_num_threads
    except AttributeError:
        return None


@contextlib.contextmanager
def blas_threads_per_lane(task: str):
    """While the block runs, OpenBLAS's threads divided among the head's lanes, for a language model's step
    (``task == "lm"``) on the CPU; else nothing changes."""
    controls = _openblas() if task == "lm" and len(_streams()) > 1 else None
    if controls is None:
        yield
        return
    get, set_threads = controls
    threads = get()
    set_threads(max(1, threads // len(_streams())))
    try:
        yield
    finally:
        set_threads(threads)


def _lanes(chunks, chunk_fn, h, labels, summed: tuple[int, ...], kept: tuple[int, ...] = ()):
    """``chunk_fn(states, labels)`` per chunk, chunk ``i`` on lane ``i % lanes`` once the lane's previous
    chunk's results and the lane's sums up to it are computed. Returns the results at the positions ``kept`` of every chunk (in chunk
    order) and the sums over all chunks of those at ``summed`` (each lane's, then the lanes'). Nothing else
    of a chunk is held, so its arrays are freed once used."""
    streams = _streams()
    previous: list = [None] * len(streams)
    totals: list = [None] * len(streams)
    out = []
    for i, (start, stop) in enumerate(chunks):
        lane = i % len(streams)
        with mx.stream(streams[lane]):
            hc = h[start:stop] if previous[lane] is None else mx.depends(h[start:stop], previous[lane])
            part = chunk_fn(hc, labels[start:stop])
        out.append([part[k] for k in kept])
        parts = [part[k] for k in summed]
        totals[lane] = parts if totals[lane] is None else [t + p for t, p in zip(totals[lane], parts)]
        previous[lane] = [*totals[lane], *out[-1]]  # the running sums too, so each chunk's parts are added and freed
    totals = [t for t in totals if t is not None]
    return out, [sum(values[1:], values[0]) for values in zip(*totals)]


class SequencedChunks:
    """``Ops.head_blocks`` for MLX: the spec's chunk loop on lanes (``_streams``), chunk ``i + lanes``'s
    states depending on chunk ``i``'s results, so one chunk's logits per lane are alive at a time."""

    def __init__(self, ops):
        self.ops = ops

    def sums(self, h, weight, bias, labels, chunks):
        _, (loss, correct) = _lanes(chunks, lambda hc, y: head_chunk_sums(self.ops, hc, weight, bias, y), h, labels, (0, 1))
        return loss, correct

    def loss_and_grads(self, h, weight, bias, labels, scale: float, chunks):
        def chunk(hc, y):
            return head_chunk_grads(self.ops, hc, weight, bias, y, scale)

        kept, (loss, dweight, dbias) = _lanes(chunks, chunk, h, labels, (0, 2, 3), kept=(1,))
        dh = [k[0] for k in kept]
        return loss * scale, (mx.concatenate(dh, axis=0) if len(dh) > 1 else dh[0], dweight, dbias)
