"""Mixture of Universal Experts (Chen et al. 2026, arXiv 2603.04971; ``../shared/spec/MOUE.md``): the
model kind ``"moue"``, registered in ``spec.kinds`` on import.

Only the abstract survives (``../shared/spec/PAPERS.md`` section 3): a universal expert pool reused by every layer, a
staggered rotational topology, a universal expert load balance (UELB) corrected for depth-aware exposure,
and a universal router with a lightweight trajectory state; MoE checkpoints convert progressively.
Everything below is our reading, each part a ``MoUEConfig`` option:

- **Pool and topology.** U universal experts (``pool.experts.*``, the DynaMoE expert's FFN shape). Layer
  l sees the window ``(s l + j) mod U, j = 0..E_l - 1`` (``windows``), E_l from the schedule, s =
  ``MoUEConfig.layer_stride`` (default ``U // L``): the per-layer choice set equals the matched MoE's,
  ``U > E_l`` is the virtual width, and the stagger bounds the routing paths (``routing_paths``).
  ``local_experts`` per layer follow the window (slots ``E_l .. E_l + local - 1``).
- **Universal router.** One gate ``pool.gate.weight`` (d + r, U) shared by every layer; layer l uses its
  window's columns (plus its own ``layers.l.gate.weight`` (d + r, local) for local experts), on the input
  ``[h_l ; r_l]``. The selection rule within the window is ``RouterConfig.kind`` (DynaMoE by default), so
  every router and schedule combine with MoUE.
- **Trajectory state.** ``r_0 = 0``; after layer l, ``r_{l+1} = LN(r_l + w_l A_l)`` with ``w_l`` the layer's
  combine weights over its slots (N, slots) and ``A_l`` the slots' rows of ``pool.trajectory.weight`` (U, r)
  (and ``layers.l.trajectory.weight`` for local experts, none in the last layer, whose state no router
  reads): an embedding of the experts just used, so the router sees where the token has been. LN without
  affine parameters. ``trajectory_dim = 0``: no state.
- **UELB** (``uelb``): Switch's loss over the whole expert universe (pool + every local expert): per expert,
  its load ``f`` (share of a layer's assignments) and mean gate ``P`` summed over the layers that see it
  and divided by its exposure ``c_i`` (the number of those layers), both then normalised to sum to 1;
  ``M * sum_i f_i P_i`` with M experts, 1 at perfect balance. ``exposure_correction=False`` skips the
  division (the pooled loss that penalises an expert for being visible to many layers).
- **Conversion** (``moe_to_moue``): layer l's MoE expert j initialises pool slot ``(s l + j) mod U`` (the
  slot it occupies in layer l's window), averaged where windows overlap; the universal gate's columns
  likewise, its trajectory rows zero (the converted router starts as the MoE's). Slots no window covers,
  local experts and the trajectory embedding keep their fresh initialisation. "Progressive": training goes
  on from there (``harness`` experiment ``moue-vs-moe``).
- **Statistics.** A MoUE layer's routing (mask, counts, noise) is over its *slots* (window then local), so
  ``evaluate_batch`` counts per window slot; ``pool_usage`` maps the counts onto the pool.
"""

from __future__ import annotations

import numpy as np

from .accounting import expert_flops
from .config import ModelConfig
from .forward import expert_mixture, normalise
from .init import init_params
from .kinds import Kind, layer_widths, register
from .routers import route_logits

EXPERT_KEYS = ("w1", "b1", "w2", "b2")


def windows(cfg: ModelConfig) -> list[tuple[int, ...]]:
    """Pool indices each layer sees (the staggered rotational topology), in slot order."""
    m = cfg.moue
    stride = m.layer_stride(cfg.num_layers)
    return [tuple((stride * layer + j) % m.pool_size for j in range(e)) for layer, e in enumerate(cfg.experts_per_layer())]


def exposure(cfg: ModelConfig) -> np.ndarray:
    """How many layers see each pool expert (U,)."""
    counts = np.zeros(cfg.moue.pool_size, dtype=np.int64)
    for window in windows(cfg):
        counts[list(window)] += 1
    return counts


def routing_paths(cfg: ModelConfig) -> int:
    """Distinct sequences of top-1 experts a token can take through the layers (product of the widths)."""
    return int(np.prod([w for w in layer_widths(cfg)], dtype=object))


def pool_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The MoUE parameters beside the input and output ones (names in ``spec.init.param_shapes`` order)."""
    m, d, dh = cfg.moue, cfg.hidden_dim, cfg.expert_hidden
    u, r, local = m.pool_size, m.trajectory_dim, m.local_experts
    shapes = {"pool.experts.w1": (u, d, dh), "pool.experts.b1": (u, dh), "pool.experts.w2": (u, dh, d), "pool.experts.b2": (u, d)}
    shapes["pool.gate.weight"] = (d + r, u)
    if r:
        shapes["pool.trajectory.weight"] = (u, r)
    if local:
        for layer in range(cfg.num_layers):
            prefix = f"layers.{layer}."
            shapes.update({prefix + "experts.w1": (local, d, dh), prefix + "experts.b1": (local, dh)})
            shapes.update({prefix + "experts.w2": (local, dh, d), prefix + "experts.b2": (local, d)})
            shapes[prefix + "gate.weight"] = (d + r, local)
            if r and layer < cfg.num_layers - 1:  # the last layer's state would feed no router
                shapes[prefix + "trajectory.weight"] = (local, r)
    return shapes


def _slot_params(ops, params: dict, cfg: ModelConfig, layer: int, window: tuple[int, ...]) -> dict:
    """The layer's gate columns, experts and trajectory rows, window first, then its local experts."""
    local, last = cfg.moue.local_experts, layer == cfg.num_layers - 1
    r = 0 if last else cfg.moue.trajectory_dim  # the state after the last layer is not used
    p = {k: ops.take(params["pool.experts." + k], window, 0) for k in EXPERT_KEYS}
    p["gate"] = ops.take(params["pool.gate.weight"], window, 1)
    if r:
        p["trajectory"] = ops.take(params["pool.trajectory.weight"], window, 0)
    if local:
        prefix = f"layers.{layer}."
        p = {k: ops.concat([p[k], params[prefix + "experts." + k]], 0) for k in EXPERT_KEYS} | {
            "gate": ops.concat([p["gate"], params[prefix + "gate.weight"]], 1),
            **({"trajectory": ops.concat([p["trajectory"], params[prefix + "trajectory.weight"]], 0)} if r else {}),
        }
    return p


def initial_state(ops, h, cfg: ModelConfig):
    """The trajectory state ``r_0 = 0`` (N, r) of tokens ``h`` (N, d), ``None`` without one."""
    r_dim = cfg.moue.trajectory_dim
    return ops.constant(np.zeros((ops.shape(h)[0], r_dim)), like=h) if r_dim else None


def moue_block(ops, params: dict, layer: int, h, state, cfg: ModelConfig, noise=None):
    """MoUE layer ``layer`` on tokens ``h`` (N, d) with trajectory state ``state``: ``(y, routing, state')``."""
    p = _slot_params(ops, params, cfg, layer, windows(cfg)[layer])
    router_in = ops.concat([h, state], 1) if state is not None else h
    routing = route_logits(ops, ops.matmul(router_in, p["gate"]), noise, cfg.router)
    y = expert_mixture(ops, p, h, routing.weights)
    if "trajectory" in p:
        state = normalise(ops, state + ops.matmul(routing.weights, p["trajectory"]), cfg.layer_norm_eps)
    return y, routing, state


def moue_layers(ops, params: dict, h, cfg: ModelConfig, noises=None):
    """The L residual MoUE layers on tokens ``h`` (N, d): returns ``(h_L, routings)`` (routings over slots)."""
    state = initial_state(ops, h, cfg)
    routings = []
    for layer in range(cfg.num_layers):
        y, routing, state = moue_block(ops, params, layer, h, state, cfg, None if noises is None else noises[layer])
        h = h + y
        routings.append(routing)
    return h, routings


def _universe(cfg: ModelConfig) -> tuple[list[list[int]], np.ndarray]:
    """Each layer's slots as indices into the expert universe (pool, then every layer's locals), exposures."""
    u, local = cfg.moue.pool_size, cfg.moue.local_experts
    slots = [list(w) + [u + layer * local + j for j in range(local)] for layer, w in enumerate(windows(cfg))]
    return slots, np.concatenate([exposure(cfg), np.ones(cfg.num_layers * local, dtype=np.int64)])


def uelb(ops, routings, cfg: ModelConfig):
    """Universal Expert Load Balance (module docstring): ``M sum_i f_i P_i``, exposure-corrected."""
    slots, exposures = _universe(cfg)
    total_experts = len(exposures)
    scale = 1.0 / np.maximum(exposures, 1) if cfg.moue.exposure_correction else np.ones(total_experts)  # unseen: no terms
    f, p = None, None
    for routing, layer_slots in zip(routings, slots):
        assigned = routing.mask if routing.assigned is None else routing.assigned
        counts = ops.sum(ops.to_float(assigned, routing.probs), axis=0)
        # scatter the layer's slots onto the universe: a constant (slots, M) 0/1 matrix, pre-scaled by 1/c_i
        onto = np.zeros((len(layer_slots), total_experts))
        onto[np.arange(len(layer_slots)), layer_slots] = scale[layer_slots]
        onto = ops.constant(onto, like=routing.probs)
        f_l = ops.matmul(ops.expand_dims(counts / ops.sum(counts), 0), onto)
        p_l = ops.matmul(ops.mean(routing.probs, axis=0, keepdims=True), onto)
        f, p = (f_l, p_l) if f is None else (f + f_l, p + p_l)
    return float(total_experts) * ops.sum((f / ops.sum(f)) * (p / ops.sum(p)))


def pool_usage(cfg: ModelConfig, counts: list[np.ndarray]) -> np.ndarray:
    """Per-slot selection counts of every layer (``evaluate_batch``) summed onto the pool (U,) (locals left out)."""
    usage = np.zeros(cfg.moue.pool_size)
    for window, c in zip(windows(cfg), counts):
        np.add.at(usage, list(window), np.asarray(c, dtype=np.float64)[: len(window)])
    return usage


def moe_to_moue(params: dict, moe_cfg: ModelConfig, moue_cfg: ModelConfig, seed: int = 0) -> dict:
    """MoUE parameters initialised from a trained DynaMoE checkpoint (module docstring, "Conversion").

    ``moe_cfg`` (kind ``dynamoe``) and ``moue_cfg`` (kind ``moue``) must share size, task, dimensions and
    schedule. Returns float64 arrays in ``param_shapes(moue_cfg)`` order.
    """
    if moe_cfg.kind != "dynamoe" or moue_cfg.kind != "moue":
        raise ValueError(f"moe_to_moue converts kind 'dynamoe' to 'moue', got {moe_cfg.kind!r} -> {moue_cfg.kind!r}")
    same = ("size", "task", "input_dim", "num_classes", "vocab_size", "schedule", "expert_hidden_ratio")
    differ = [name for name in same if getattr(moe_cfg, name) != getattr(moue_cfg, name)]
    if differ:
        raise ValueError(f"moe_to_moue: the configs differ in {', '.join(differ)}; the MoUE config must keep the MoE's")
    out = init_params(moue_cfg, seed)
    d, u = moue_cfg.hidden_dim, moue_cfg.moue.pool_size
    sums = {k: np.zeros_like(out["pool.experts." + k]) for k in EXPERT_KEYS}
    gate = np.zeros((d, u))
    hits = np.zeros(u)
    for layer, window in enumerate(windows(moue_cfg)):
        for j, slot in enumerate(window):
            for k in EXPERT_KEYS:
                sums[k][slot] += params[f"layers.{layer}.experts.{k}"][j]
            gate[:, slot] += params[f"layers.{layer}.gate.weight"][:, j]
            hits[slot] += 1
    covered = hits > 0
    for k in EXPERT_KEYS:
        out["pool.experts." + k][covered] = sums[k][covered] / hits[covered].reshape((-1,) + (1,) * (sums[k].ndim - 1))
    out["pool.gate.weight"][:d, covered] = gate[:, covered] / hits[covered]
    out["pool.gate.weight"][d:, covered] = 0.0
    for name, value in params.items():
        if not name.startswith("layers."):
            out[name] = np.array(value, dtype=np.float64)
    return out


class MoUE(Kind):
    def layer_shapes(self, cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
        return pool_shapes(cfg)

    def layers(self, ops, params: dict, h, cfg: ModelConfig, noises=None):
        return moue_layers(ops, params, h, cfg, noises)

    def initial_state(self, ops, h, cfg: ModelConfig):
        return initial_state(ops, h, cfg)

    def block(self, ops, params: dict, layer: int, h, state, cfg: ModelConfig, noise=None):
        return moue_block(ops, params, layer, h, state, cfg, noise)

    def layer_widths(self, cfg: ModelConfig) -> list[int]:
        return [e + cfg.moue.local_experts for e in cfg.experts_per_layer()]

    def layer_flops(self, cfg: ModelConfig, layer: int, active: float | None) -> float:
        # the universal router reads [h ; r] (d + r) over the layer's slots; the state update w A is 2 r slots
        d, r, slots = cfg.hidden_dim, cfg.moue.trajectory_dim, self.layer_widths(cfg)[layer]
        return active * expert_flops(cfg) + 2.0 * (d + r) * slots + 2.0 * r * slots

    def fan_in(self, name: str, shape: tuple[int, ...], cfg: ModelConfig) -> int | None:
        if name.endswith("gate.weight"):
            return cfg.hidden_dim + cfg.moue.trajectory_dim  # the universal router reads [h ; r]
        if name.endswith("trajectory.weight"):
            return shape[-1]  # an embedding into the r-dimensional trajectory state
        return None

    def balance_loss(self, ops, routings: list, cfg: ModelConfig):
        return uelb(ops, routings, cfg)


register("moue", MoUE())
