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
# The native layers' float64 gradients against central differences of the float64 reference's scalar
# (``layer_reference``) at one entry of each tensor: step 1e-6, truncation ~1e-12 and rounding ~1e-10 of a
# scalar ~1, so |g - fd| <= max(1e-5 |fd|, 1e-8) (``tests/backend_checks.check_router_parity``'s bound);
# ``layers_gradient_fd`` is the largest |g - fd| / max(1e-5 |fd|, 1e-8), at most 1.
CENTRAL_DIFFERENCE = {"step": 1e-6, "rel": 1e-5, "abs": 1e-8}
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


def layer_reference(case: str):
    """``(modes, scalar)`` of ``LAYER_CASES[case]`` in float64 NumPy by the spec (``spec.forward.dynamoe_layer``
    for ``DynaMoE``, ``spec.transformer.transformer_block`` around it for ``TransformerBlock``, the stack's
    layers and final LayerNorm, ``backends.common.stack_forward``, as
    ``backends.reference`` evaluates them): ``modes[mode] = (y, routings, noise)`` for ``eval`` (no noise)
    and ``train`` (the given noise); ``scalar(arrays, h)`` the gradients' scalar in training mode."""
    from backends import common
    from backends.spec import forward as F
    from backends.spec import transformer as T
    from backends.spec.ops import NumpyOps
    from harness.parity_worker import layer_inputs

    ops = NumpyOps()
    kind, cfg, arrays, h, noises, probe = layer_inputs(case)
    if kind in ("DynaMoE", "TransformerBlock"):
        _, ffn = common.split_block_arrays(arrays)
        d, e, dh = common.dynamoe_sizes(ffn)
        stack = common.layer_config("DynaMoE", "dynamoe", d, dh, e, cfg.router)

        def layer(p, h, noise):
            weights = {"gate": p["gate.weight"], **{k: p[f"experts.{k}"] for k in ("w1", "b1", "w2", "b2")}}
            return F.dynamoe_layer(ops, weights, h, None if noise is None else noise[0], cfg.router)

        def evaluate(p, h, noise):
            if kind == "DynaMoE":
                y, routing = layer(p, h, noise)
                return y, [routing]
            attn = {k.removeprefix("attn."): v for k, v in p.items() if k.startswith("attn.")}
            allowed = T.causal_mask(ops, h.shape[1], h)
            eps = cfg.layer_norm_eps
            y, _, _, (routing,) = T.transformer_block(ops, attn, h, cfg.num_heads, allowed, eps, lambda x: layer(p, x, noise))
            return y, [routing]
    else:
        stack = common.StackConfig.of(cfg)

        def evaluate(p, h, noise):
            return common.stack_forward(ops, p, h, stack, noise)

    def scalar(p, h):
        y, routings = evaluate(p, h, noises)
        aux = common.balance_loss(ops, routings, stack)
        return float(np.sum(y * probe) / len(h) + (0.0 if aux is None else aux))

    modes = {mode: (*evaluate(arrays, h, noise), noise) for mode, noise in (("eval", None), ("train", noises))}
    return modes, scalar, arrays, h, cfg


def layer_errors(r: dict, case: str, ref=None) -> dict:
    """One backend's errors on a layer case (``r``: ``parity_worker.layer_case``'s keys, both dtypes)
    against the float64 reference (``layer_reference``)."""
    from harness.parity_worker import DTYPES

    modes, scalar, arrays, h, cfg = ref or layer_reference(case)
    e = {"layers_forward_float32_rel": 0.0, "layers_forward_float64_abs": 0.0, "layers_mask_unexplained": 0}
    same = True
    for mode, (y, routings, noise) in modes.items():
        e["layers_forward_float32_rel"] = max(e["layers_forward_float32_rel"], max_rel_error(r[f"{case}/float32/{mode}/out"], y))
        e["layers_forward_float64_abs"] = max(e["layers_forward_float64_abs"], max_abs_error(r[f"{case}/float64/{mode}/out"], y))
        for dtype in DTYPES:
            for layer, routing in enumerate(routings):
                noisy = routing.probs if noise is None else routing.probs + noise[layer]
                differing, unexplained = routing_disagreement(r[f"{case}/{dtype}/{mode}/mask{layer}"], routing.mask, noisy, cfg.router)
                e[f"layers_mask_differing_{dtype}"] = e.get(f"layers_mask_differing_{dtype}", 0) + differing
                e["layers_mask_unexplained"] += unexplained
                same &= mode != "train" or differing == 0
    # the scalar in float64 only: ``sum(y * probe) / N`` cancels (DynaMoE: ~-0.018 of terms ~0.1), so its
    # float32 relative error would measure the cancellation; the float32 outputs it sums are bounded above
    loss = scalar(arrays, h)
    e["layers_forward_float64_abs"] = max(e["layers_forward_float64_abs"], abs(float(r[f"{case}/float64/loss"]) - loss))
    grads = {k.rsplit("/", 1)[1]: r[k] for k in r if k.startswith(f"{case}/float64/grad/")}
    if sorted(grads) != sorted(["input", *arrays]):
        raise ValueError(f"{case}: gradients of {sorted(grads)}, the layer has {sorted(['input', *arrays])}")
    pick, step = np.random.default_rng(0), CENTRAL_DIFFERENCE["step"]
    worst = 0.0
    for name in ["input", *arrays]:
        base = h if name == "input" else arrays[name]
        idx = tuple(int(pick.integers(0, n)) for n in base.shape)
        values = []
        for sign in (1, -1):
            moved = base.copy()
            moved[idx] += sign * step
            values.append(scalar(arrays, moved) if name == "input" else scalar({**arrays, name: moved}, h))
        numeric = (values[0] - values[1]) / (2 * step)
        bound = max(CENTRAL_DIFFERENCE["rel"] * abs(numeric), CENTRAL_DIFFERENCE["abs"])
        worst = max(worst, abs(float(grads[name][idx]) - numeric) / bound)
    e["layers_gradient_fd"] = worst
    if same:  # float32 gradients against the same backend's float64 ones where the selection is the same
        live = [k for k in grads if np.linalg.norm(grads[k]) > 1e-9]
        e["layers_gradient_float32_rel"] = max(norm_rel_error(r[f"{case}/float32/grad/{k}"], grads[k]) for k in live)
    return e


def merge_layer_errors(entry: dict, errors: dict) -> None:
    """Fold one case's ``layer_errors`` into a backend's entry: the worst of each measure, the counts summed."""
    for key, value in errors.items():
        summed = key.startswith("layers_mask_")
        entry[key] = entry.get(key, 0) + value if summed else max(entry.get(key, 0.0), value)


def layer_failures(name: str, entry: dict) -> list[str]:
    """The tolerance violations of a backend's layer measures: the matrix's forward, mask and gradient bounds."""
    failures = []
    for key, bound in (
        ("layers_forward_float32_rel", TOLERANCES["forward_float32_rel"]),
        ("layers_forward_float64_abs", TOLERANCES["forward_float64_abs"]),
        ("layers_mask_unexplained", TOLERANCES["mask_unexplained"]),
        ("layers_gradient_fd", 1.0),
        ("layers_gradient_float32_rel", TOLERANCES["gradient_float32_rel"]),
    ):
        if key in entry and entry[key] > bound:
            failures.append(f"{name}: {key} = {entry[key]:.3g} > {bound:g}")
    return failures


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
    from harness.parity_cases import LAYER_CASES

    for case in LAYER_CASES:
        ref = layer_reference(case)
        for name in names:
            merge_layer_errors(per_backend[name], layer_errors(results[name], case, ref))
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
                # gets none; attention's key bias moves every score of a query alike) has no scale to be
                # relative to: compared only where the float64 one is above 1e-9 in norm (float32 rounding
                # leaves ~1e-7 there)
                exact = [k.replace(f"/{dtype}/", "/float64/", 1) for k in keys]
                live = [k for k, k64 in zip(keys, exact) if max(np.linalg.norm(ra[k64]), np.linalg.norm(rb[k64])) > 1e-9]
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
        failures += layer_failures(name, entry)
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
    if all("layers_gradient_fd" in e for e in matrix["backends"].values()):
        lines += ["", "the native layers (DynaMoE, DynaMoEStack, MoUEStack, TransformerBlock from_arrays) vs the float64 reference"]
        head = f"{'backend':12} {'fwd f32 rel':>12} {'fwd f64 abs':>12} {'masks differ f32/f64':>21} {'unexplained':>12}"
        lines.append(f"{head} {'grad/fd':>8} {'grad f32':>9}")
        for name, e in matrix["backends"].items():
            masks = f"{e['layers_mask_differing_float32']}/{e['layers_mask_differing_float64']}"
            g32 = f"{e['layers_gradient_float32_rel']:9.1e}" if "layers_gradient_float32_rel" in e else f"{'-':>9}"
            lines.append(
                f"{name:12} {e['layers_forward_float32_rel']:12.2e} {e['layers_forward_float64_abs']:12.2e} {masks:>21} "
                f"{e['layers_mask_unexplained']:12d} {e['layers_gradient_fd']:8.2f} {g32}"
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
