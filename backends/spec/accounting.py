"""Parameter counts, active FLOPs per token (Proposition 1) and routing-pattern counts (Theorem 1).

FLOPs count multiply-adds of the matrix products as 2 each; biases, activations, softmax and
LayerNorm are left out (they are O(d) per token, below 1 % of the total for every size here).

Our parameter counts against the paper's (MNIST input, 10 classes; ``expert_hidden_ratio`` 0.5,
``mlp_hidden_ratio`` 2; computed by ``paper_comparison`` and printed by ``python -m harness params``):
no single reading of "expert" matches Tables 1-3 (``../shared/spec/PAPERS.md`` section 1 item 7). The MLP with hidden 2d
gives Tiny 84,170 (paper 85K, -1 %) and Small 365,706 (paper 340K, +7.6 %), but Medium 1.78M and Large
8.81M (paper 1.4M, 5.6M: Table 1's x4 progression fits no constant hidden ratio). Expert width d/2
gives the Small descending model 402,698 (paper 380K, +6.0 %). The paper's counts are the same 380K for every schedule
although the schedules hold 14 to 32 experts: ours differ per schedule, as they must, and the tables
print both. Table 3's counts (290K .. 520K) imply about 8.75K a expert, which no width fits together
with Table 2; ours are reported beside them, never fitted.
"""

from __future__ import annotations

from math import comb, prod

from .config import SCHEDULES, SIZES, ModelConfig, RouterConfig, ScheduleConfig
from .dynamic import token_scope_count
from .init import param_shapes
from .kinds import layer_widths, of


def parameter_count(cfg: ModelConfig) -> int:
    """Exact number of trainable parameters (from ``spec.init.param_shapes``, the single source)."""
    return sum(prod(shape) for shape in param_shapes(cfg).values())


def expected_active(num_experts: int, router: RouterConfig) -> float:
    """Nominal active experts per token of a layer by ``router.kind``.

    DynaMoE: token scope exactly, batch scope ``(1 - tau/100) E`` (its mean before the k_min clamp lifts
    tokens that fall below every threshold), both clamped to [k_min, k_max]. Top-K: K; Switch: 1; GShard:
    2 (capacity can only lower them: dropped tokens use none); expert choice: ``C E / N``, i.e.
    ``capacity_factor * top_k`` (each expert takes C tokens), at most E. All at most E.
    """
    if router.kind == "topk":
        return float(min(router.top_k, num_experts))
    if router.kind == "switch":
        return 1.0
    if router.kind == "gshard":
        return float(min(2, num_experts))
    if router.kind == "expert_choice":
        return min(float(num_experts), router.capacity_factor * router.top_k)
    k_min, k_max = router.layer_bounds(num_experts)
    if router.scope == "token":
        k = float(token_scope_count(num_experts, router.tau))
    else:
        k = (1.0 - router.tau / 100.0) * num_experts
    return min(float(k_max), max(float(k_min), k))


def expert_flops(cfg: ModelConfig) -> int:
    """One expert on one token: two matrices d x d_h and d_h x d, ``4 d d_h`` (Prop. 1)."""
    return 4 * cfg.hidden_dim * cfg.expert_hidden


def layer_flops(cfg: ModelConfig, layer: int, active: float | None = None) -> float:
    """Per-token FLOPs of layer ``layer`` by its kind (``Kind.layer_flops``): DynaMoE's
    ``E[k_l] 4 d d_h + 2 d E_l`` (Eq. 15), the MLP's ``4 d h``; ``active`` defaults to ``expected_active``."""
    widths = layer_widths(cfg)
    if widths and active is None:
        active = expected_active(widths[layer], cfg.router)
    return of(cfg).layer_flops(cfg, layer, active)


def active_flops_per_token(cfg: ModelConfig, active: list[float] | None = None) -> float:
    """Per-token forward FLOPs of the whole network; ``active`` = measured average active experts per
    layer (the harness passes them), else the nominal ``expected_active``."""
    d = cfg.hidden_dim
    total = 0.0 if cfg.task == "lm" else 2.0 * cfg.input_dim * d
    for layer in range(cfg.num_layers):
        total += layer_flops(cfg, layer, None if active is None else active[layer])
    return total + 2.0 * d * cfg.output_dim


def flops_bounds(cfg: ModelConfig) -> tuple[float, float]:
    """Eq. 16: per-token FLOPs with every layer at k_min and at k_max active experts."""
    widths = layer_widths(cfg)
    if not widths or cfg.router.kind != "dynamic":
        flops = active_flops_per_token(cfg)
        return flops, flops
    bounds = [cfg.router.layer_bounds(e) for e in widths]
    return (active_flops_per_token(cfg, [float(lo) for lo, _ in bounds]), active_flops_per_token(cfg, [float(hi) for _, hi in bounds]))


def _layer_params(cfg: ModelConfig) -> int:
    """Parameters of the residual layers (MoE, MoUE pool and locals, or MLP blocks)."""
    return sum(prod(s) for s in of(cfg).layer_shapes(cfg).values())


def matched_mlp(cfg: ModelConfig, by: str = "params") -> ModelConfig:
    """The dense MLP baseline matched to ``cfg`` in total parameters (``by="params"``) or in active FLOPs
    per token (``by="flops"``), by choosing ``mlp_hidden_ratio`` (the block width h, rounded to the
    nearest integer >= 1; everything else is ``cfg``'s). An MLP layer holds ``2 d h + h + d`` parameters
    and costs ``4 d h`` FLOPs a token (``layer_flops``)."""
    if by not in ("params", "flops"):
        raise ValueError(f"matched_mlp: by = {by!r} is invalid: choose 'params' or 'flops'")
    d, layers = cfg.hidden_dim, cfg.num_layers
    if by == "params":
        hidden = (_layer_params(cfg) / layers - d) / (2 * d + 1)
    else:
        hidden = sum(layer_flops(cfg, layer) for layer in range(layers)) / layers / (4 * d)
    hidden = max(1, int(round(hidden)))
    return cfg.replace(kind="mlp", moue=None, mlp_hidden_ratio=hidden / d)


def routing_patterns_fixed(num_experts: int, k: int) -> int:
    """Theorem 1: distinct expert sets of fixed top-K, ``C(E, K)``."""
    return comb(num_experts, k)


def routing_patterns_dynamic(num_experts: int, k_min: int, k_max: int) -> int:
    """Theorem 1 (Eq. 31): distinct sets of dynamic routing, ``sum_{k=k_min}^{k_max} C(E, k)``."""
    return sum(comb(num_experts, k) for k in range(k_min, min(k_max, num_experts) + 1))


def efficiency(accuracy_percent: float, params: int) -> float:
    """Table 3's "Efficiency": accuracy (%) per 10,000 parameters (92.68 / 38.0 = 2.44)."""
    return accuracy_percent / (params / 10_000)


# The paper's parameter counts: (table, row, ModelConfig arguments, paper count); Table 1's are the
# sizes' own (``config.ModelSize.paper_params``).
PAPER_COUNTS = [
    *[("Table 1", size.name, {"size": size.name, "kind": "mlp"}, size.paper_params) for size in SIZES.values()],
    ("Table 2", "MLP baseline", {"kind": "mlp"}, 340_000),
    *[("Table 2", name, {"schedule": name}, 380_000) for name in SCHEDULES],
    *[
        ("Table 3", f"E{hi}-{lo}", {"schedule": ("descending", lo, hi)}, n)
        for hi, lo, n in ((2, 1, 290_000), (4, 1, 325_000), (8, 1, 380_000), (16, 1, 520_000), (8, 2, 390_000), (8, 4, 410_000))
    ],
]


def paper_comparison(base: ModelConfig | None = None) -> list[dict]:
    """Our parameter count beside every count the paper prints (Tables 1-3), with the relative gap."""
    base = base or ModelConfig()
    rows = []
    for table, row, changes, paper in PAPER_COUNTS:
        changes = dict(changes)
        if "schedule" in changes:
            sched = changes["schedule"]
            changes["schedule"] = ScheduleConfig(*sched) if isinstance(sched, tuple) else ScheduleConfig(sched)
        cfg = base.replace(**changes)
        ours = parameter_count(cfg)
        rows.append({"table": table, "row": row, "paper": paper, "ours": ours, "gap": ours / paper - 1.0})
    return rows
