"""Comparison measures used by the parity tests and ``python -m harness parity``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

import backends
from backends.spec.dynamic import gate_threshold


def max_abs_error(a, ref) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(ref, dtype=np.float64))))


def max_rel_error(a, ref) -> float:
    """``max|a - ref| / max|ref|``: the error relative to the tensor's scale (robust to zeros in ref)."""
    scale = float(np.max(np.abs(np.asarray(ref, dtype=np.float64))))
    return max_abs_error(a, ref) / (scale if scale > 0 else 1.0)


def norm_rel_error(a, ref) -> float:
    """``||a - ref|| / ||ref||`` (Frobenius), used for gradients."""
    a, ref = np.asarray(a, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    scale = float(np.linalg.norm(ref))
    return float(np.linalg.norm(a - ref)) / (scale if scale > 0 else 1.0)


def near_threshold_tokens(noisy_gates, tau: float, scope: str, tol: float = 1e-6) -> np.ndarray:
    """Tokens (bool, (N,)) with a gate within ``tol`` of the threshold or of another gate at a rank
    boundary: the only tokens whose selected set may legitimately differ between float orders."""
    g = np.asarray(noisy_gates, dtype=np.float64)
    thr = np.asarray(gate_threshold(g, tau, scope))
    near = np.abs(g - thr) <= tol
    srt = np.sort(g, axis=1)
    near_tie = np.zeros(len(g), dtype=bool) if g.shape[1] < 2 else (np.diff(srt, axis=1) <= tol).any(axis=1)
    return near.any(axis=1) | near_tie


def mask_disagreement(mask, ref_mask, noisy_gates_ref, tau: float, scope: str, tol: float = 1e-6) -> tuple[int, int]:
    """``(differing, unexplained)``: tokens whose selected set differs from the reference's, and of those
    the ones with no gate within ``tol`` of the threshold or of a tie (those are real disagreements)."""
    differs = (np.asarray(mask, dtype=bool) != np.asarray(ref_mask, dtype=bool)).any(axis=1)
    near = near_threshold_tokens(noisy_gates_ref, tau, scope, tol)
    return int(differs.sum()), int((differs & ~near).sum())


def near_decision_tokens(noisy_gates, router, tol: float = 1e-6) -> np.ndarray:
    """Tokens (bool, (N,)) whose selection float rounding may legitimately change, by ``router.kind``.

    DynaMoE: ``near_threshold_tokens``. Top-K: a tie within ``tol`` among the token's gates. Switch and
    GShard: such a tie, and every later token (a flipped choice moves the capacity positions of all the
    tokens after it). Expert choice: a gate within ``tol`` of its expert's C-th largest gate.
    """
    from backends.spec.routers import capacity

    g = np.asarray(noisy_gates, dtype=np.float64)
    if router.kind == "dynamic":
        return near_threshold_tokens(g, router.tau, router.scope, tol)
    if router.kind == "expert_choice":
        cap = capacity(g.shape[0], g.shape[1], router.top_k, router.capacity_factor)
        threshold = np.sort(g, axis=0)[g.shape[0] - cap]
        return (np.abs(g - threshold) <= tol).any(axis=1)
    srt = np.sort(g, axis=1)
    near = np.zeros(len(g), dtype=bool) if g.shape[1] < 2 else (np.diff(srt, axis=1) <= tol).any(axis=1)
    if router.kind in ("switch", "gshard") and near.any():
        near[np.argmax(near) :] = True
    return near


def routing_disagreement(mask, ref_mask, noisy_gates_ref, router, tol: float = 1e-6) -> tuple[int, int]:
    """``mask_disagreement`` for any router kind (``near_decision_tokens``)."""
    differs = (np.asarray(mask, dtype=bool) != np.asarray(ref_mask, dtype=bool)).any(axis=1)
    near = near_decision_tokens(noisy_gates_ref, router, tol)
    return int(differs.sum()), int((differs & ~near).sum())


# --- the backend x backend matrix (``python -m harness parity``) -------------------------------------

TOLERANCES = {
    "forward_float32_rel": 1e-5,  # ~10 float32 matmuls of width <= 784: ~1e-6 of the logits' scale
    "forward_float64_abs": 1e-10,  # same formulas, other summation order: ~1e-15
    "mask_unexplained": 0,  # differing selections allowed only for gates within 1e-6 of the threshold
    "gradient_float32_rel": 1e-4,
    "gradient_float64_rel": 1e-10,
    "trajectory_float64_rel": 1e-8,  # at every step: same batches, noise and optimiser formula
    "trajectory_float32_rel": 1e-3,  # at every step of the first TRAJECTORY_FLOAT32_STEPS
}
# float32 trajectories part slowly (Adam normalises float32 noise of near-zero gradients to lr-sized
# steps, and the discrete routing amplifies it); the 1e-3 bound is enforced over this many steps and the
# whole trajectory's divergence is reported, with the first step over 1e-6 and over 1e-3.
TRAJECTORY_FLOAT32_STEPS = 20


def run_workers(names: list[str], steps: int, workdir) -> dict[str, dict]:
    """Run ``harness.parity_worker`` for each backend in its own process (``backends.worker_env``, the
    frameworks' own thread counts); returns its arrays by backend."""
    results = {}
    for name in names:
        path = Path(workdir) / f"{name}.npz"
        cmd = [sys.executable, "-m", "harness.parity_worker", name, str(steps), str(path)]
        proc = subprocess.run(cmd, env=backends.worker_env(name, 0), capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"parity worker for {name} failed:\n{proc.stderr[-4000:]}")
        with np.load(path) as data:
            results[name] = {key: data[key] for key in data.files}
    return results


def _reference(case: str):
    from backends import reference
    from backends.spec import init_params
    from harness.parity_cases import CONFIGS
    from harness.parity_worker import case_inputs

    cfg = CONFIGS[case]
    x, _, noises = case_inputs(cfg)
    params = init_params(cfg, 7)
    out = {}
    for mode, noise in (("eval", None), ("train", noises)):
        logits, routings = reference.forward(params, x, cfg, noise)
        out[mode] = (logits, routings, noise)
    return cfg, out


def head_reference(case: dict | None = None) -> tuple[float, dict[str, np.ndarray]]:
    """The head case's loss and gradients in float64 from the full logits: ``cross_entropy`` of
    ``z = h W + b`` and ``dz = (softmax(z) - onehot) / N``, ``dh = dz W^T``, ``dW = h^T dz``, ``db = sum dz``."""
    from backends.spec.forward import cross_entropy
    from backends.spec.ops import NumpyOps
    from harness.parity_cases import HEAD_CASE
    from harness.parity_worker import head_inputs

    h, w, b, y = head_inputs(case or HEAD_CASE)
    z = h @ w + b
    p = np.exp(z - z.max(axis=1, keepdims=True))
    dz = p / p.sum(axis=1, keepdims=True)
    dz[np.arange(len(y)), y] -= 1.0
    dz /= len(y)
    return float(cross_entropy(NumpyOps(), z, y)), {"h": dz @ w.T, "head.weight": h.T @ dz, "head.bias": dz.sum(axis=0)}


def head_errors(loss: float, grads: dict, ref: tuple[float, dict]) -> dict[str, float]:
    """``{"loss_rel": |loss - ref| / |ref|, "grad_rel": the largest norm-relative gradient error}``."""
    ref_loss, ref_grads = ref
    return {"loss_rel": abs(loss - ref_loss) / abs(ref_loss), "grad_rel": max(norm_rel_error(grads[k], ref_grads[k]) for k in ref_grads)}


def compare(results: dict[str, dict]) -> dict:
    """Every backend against the float64 reference, and every pair of backends against each other."""
    from harness.parity_cases import CONFIGS
    from harness.parity_worker import DTYPES

    names = list(results)
    per_backend: dict[str, dict] = {name: {} for name in names}
    for case in CONFIGS:
        cfg, ref = _reference(case)
        for name in names:
            r = results[name]
            entry = per_backend[name]
            for mode, (logits, routings, noise) in ref.items():
                rel32 = max_rel_error(r[f"{case}/float32/{mode}/logits"], logits)
                abs64 = max_abs_error(r[f"{case}/float64/{mode}/logits"], logits)
                entry["forward_float32_rel"] = max(entry.get("forward_float32_rel", 0.0), rel32)
                entry["forward_float64_abs"] = max(entry.get("forward_float64_abs", 0.0), abs64)
                for dtype in DTYPES:
                    for layer, routing in enumerate(routings):
                        noisy = routing.probs if noise is None else routing.probs + noise[layer]
                        differing, unexplained = routing_disagreement(
                            r[f"{case}/{dtype}/{mode}/mask{layer}"], routing.mask, noisy, cfg.router
                        )
                        entry[f"mask_differing_{dtype}"] = entry.get(f"mask_differing_{dtype}", 0) + differing
                        entry["mask_unexplained"] = entry.get("mask_unexplained", 0) + unexplained
    head_ref = head_reference()
    for name in names:
        r = results[name]
        for dtype in DTYPES:
            grads = {k.rsplit("/", 1)[1]: r[k] for k in r if k.startswith(f"lm-head/{dtype}/headgrad/")}
            errors = head_errors(float(r[f"lm-head/{dtype}/loss"]), grads, head_ref)
            per_backend[name][f"head_loss_{dtype}_rel"] = errors["loss_rel"]
            per_backend[name][f"head_gradient_{dtype}_rel"] = errors["grad_rel"]
    pairs: dict[str, dict] = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            ra, rb = results[a], results[b]
            pair = {}
            for dtype in DTYPES:
                keys = [k for k in ra if k.split("/")[1:3] == [dtype, "grad"]]
                # a gradient that is zero but for rounding in both (top-1's renormalised weight is 1, so its gate
                # gets none) has no scale to be relative to: compared only above 1e-9 in norm
                live = [k for k in keys if max(np.linalg.norm(ra[k]), np.linalg.norm(rb[k])) > 1e-9]
                pair[f"gradient_{dtype}_rel"] = max(norm_rel_error(ra[k], rb[k]) for k in live)
            for dtype in DTYPES:
                # every trajectory (``parity_cases.TRAJECTORIES``) end to end: the worst of them at each step
                keys = sorted(k for k in ra if k.startswith("trajectory") and k.endswith(f"/{dtype}/losses") and k in rb)
                rel = np.max([np.abs(ra[k] - rb[k]) / np.abs(rb[k]) for k in keys], axis=0)
                pair[f"trajectory_{dtype}_max_rel"] = float(rel.max())
                for bound in (1e-6, 1e-3):
                    parted = np.flatnonzero(rel > bound)
                    pair[f"trajectory_{dtype}_first_step_over_{bound:g}"] = int(parted[0]) if len(parted) else None
                head = rel if dtype == "float64" else rel[:TRAJECTORY_FLOAT32_STEPS]
                pair[f"trajectory_{dtype}_rel"] = float(head.max())
            pairs[f"{a} | {b}"] = pair
    return {"backends": per_backend, "pairs": pairs}


def verdicts(matrix: dict) -> list[str]:
    """The tolerance violations of a matrix (empty when everything is within tolerance)."""
    failures = []
    for name, entry in matrix["backends"].items():
        for key in ("forward_float32_rel", "forward_float64_abs", "mask_unexplained"):
            if entry[key] > TOLERANCES[key]:
                failures.append(f"{name}: {key} = {entry[key]:.3g} > {TOLERANCES[key]:g}")
        # the chunked head against the full-logits float64 formula: the forward's and the gradients' bounds
        for key, bound in (
            ("head_loss_float32_rel", "forward_float32_rel"),
            ("head_loss_float64_rel", "gradient_float64_rel"),
            ("head_gradient_float32_rel", "gradient_float32_rel"),
            ("head_gradient_float64_rel", "gradient_float64_rel"),
        ):
            if key in entry and entry[key] > TOLERANCES[bound]:
                failures.append(f"{name}: {key} = {entry[key]:.3g} > {TOLERANCES[bound]:g}")
    for pair, entry in matrix["pairs"].items():
        for key in ("gradient_float32_rel", "gradient_float64_rel", "trajectory_float64_rel", "trajectory_float32_rel"):
            if entry[key] > TOLERANCES[key]:
                failures.append(f"{pair}: {key} = {entry[key]:.3g} > {TOLERANCES[key]:g}")
    return failures


def format_matrix(matrix: dict) -> str:
    lines = [
        "vs the float64 reference",
        f"{'backend':12} {'fwd f32 rel':>12} {'fwd f64 abs':>12} {'masks differ f32/f64':>21} {'unexplained':>12}",
    ]
    for name, e in matrix["backends"].items():
        masks = f"{e['mask_differing_float32']}/{e['mask_differing_float64']}"
        lines.append(f"{name:12} {e['forward_float32_rel']:12.2e} {e['forward_float64_abs']:12.2e} {masks:>21} {e['mask_unexplained']:12d}")
    if all("head_gradient_float32_rel" in e for e in matrix["backends"].values()):
        lines += ["", "the LM head chunk by chunk vs the full-logits float64 formula (loss, gradients of h, W, b)"]
        lines.append(f"{'backend':12} {'loss f32':>10} {'loss f64':>10} {'grad f32':>10} {'grad f64':>10}")
        for name, e in matrix["backends"].items():
            lines.append(
                f"{name:12} {e['head_loss_float32_rel']:10.1e} {e['head_loss_float64_rel']:10.1e} "
                f"{e['head_gradient_float32_rel']:10.1e} {e['head_gradient_float64_rel']:10.1e}"
            )
    lines += [
        "",
        "between backends (trajectories: max relative difference, first step over 1e-6 and 1e-3;",
        f"the float32 bound holds over the first {TRAJECTORY_FLOAT32_STEPS} steps)",
        f"{'pair':26} {'grad f32':>9} {'grad f64':>9} {'traj f64':>9} {'f64 >1e-6':>9} {'traj f32':>9} {'f32 >1e-6':>9} {'f32 >1e-3':>9}",
    ]

    def step(value):
        return "never" if value is None else str(value)

    for pair, e in matrix["pairs"].items():
        lines.append(
            f"{pair:26} {e['gradient_float32_rel']:9.1e} {e['gradient_float64_rel']:9.1e} {e['trajectory_float64_max_rel']:9.1e} "
            f"{step(e['trajectory_float64_first_step_over_1e-06']):>9} {e['trajectory_float32_max_rel']:9.1e} "
            f"{step(e['trajectory_float32_first_step_over_1e-06']):>9} {step(e['trajectory_float32_first_step_over_0.001']):>9}"
        )
    return "\n".join(lines)
