"""The experiments the paper lacked (its Section 7.10), and MoUE against a matched MoE.

- ``baselines``: top-1, top-2, Switch, GShard, expert choice, DynaMoE and the MLP matched in parameters
  and in active FLOPs (``spec.accounting.matched_mlp``, matched to DynaMoE descending), on Table 2's
  protocol (Small, 20 epochs) with Fashion-MNIST. The baseline MoEs use the uniform schedule (E = 8 in
  every layer, the standard MoE); Switch and GShard carry their balancing loss (weight 0.01, their
  papers' value); expert choice takes ``c = capacity_factor * top_k = 2`` experts a token on average,
  the compute of top-2.
- ``ablation-balancing``: DynaMoE (descending and uniform) without and with a Switch-style balancing
  loss, beside the standard recipe (uniform, Switch router and loss).
- ``moue-vs-moe``: a top-2 MoE with E = 8 a layer against MoUE with the same per-layer choice set and
  active experts (``spec.moue``: pool of 16, trajectory state, UELB), and without its trajectory state;
  DynaMoE descending against MoUE on the same schedule, with and without the exposure correction (the
  descending windows give pool experts different exposures); and MoUE converted from the trained MoE
  top-2 run (``spec.moue.moe_to_moue``, a run with ``init_from``).

None of these has a paper number: the tables print ours alone.
"""

from __future__ import annotations

from backends.spec.accounting import matched_mlp
from backends.spec.config import ModelConfig, MoUEConfig, ScheduleConfig

from .experiment import Experiment, Row
from .tables import ACCURACY, ACTIVE, EPOCHS_95, PARAMS, SECONDS

SMALL = {"size": "small"}
UNIFORM = {"name": "uniform"}
DESCENDING = {"name": "descending"}
SWITCH_LOSS = 0.01
BALANCED = {"balance_weight": SWITCH_LOSS}
METRICS = (ACCURACY, PARAMS, ACTIVE, EPOCHS_95, SECONDS)


def _mlp_ratio(by: str) -> float:
    """``mlp_hidden_ratio`` of the MLP matched to DynaMoE descending (Small) by ``by``."""
    return matched_mlp(ModelConfig(size="small", schedule=ScheduleConfig("descending")), by).mlp_hidden_ratio


BASELINES = Experiment(
    name="baselines",
    title="Routing baselines and matched MLPs (Small, Fashion-MNIST)",
    paper_ref="Section 7.10 (missing baselines)",
    description="Top-1, top-2, Switch, GShard, expert choice, DynaMoE, MLPs matched in parameters and in active FLOPs; Small, 20 epochs.",
    rows=(
        Row({"router": "Top-1"}, model=SMALL, schedule=UNIFORM, router={"kind": "topk", "top_k": 1}),
        Row({"router": "Top-2"}, model=SMALL, schedule=UNIFORM, router={"kind": "topk", "top_k": 2}),
        Row({"router": "Switch"}, model=SMALL, schedule=UNIFORM, router={"kind": "switch", "balance_weight": SWITCH_LOSS}),
        Row({"router": "GShard"}, model=SMALL, schedule=UNIFORM, router={"kind": "gshard", "balance_weight": SWITCH_LOSS}),
        Row({"router": "Expert choice"}, model=SMALL, schedule=UNIFORM, router={"kind": "expert_choice", "capacity_factor": 1.0}),
        Row({"router": "DynaMoE (descending)"}, model=SMALL, schedule=DESCENDING),
        Row({"router": "DynaMoE (uniform)"}, model=SMALL, schedule=UNIFORM),
        Row({"router": "MLP (matched params)"}, model={**SMALL, "kind": "mlp", "mlp_hidden_ratio": _mlp_ratio("params")}),
        Row({"router": "MLP (matched FLOPs)"}, model={**SMALL, "kind": "mlp", "mlp_hidden_ratio": _mlp_ratio("flops")}),
    ),
    dataset="fashion_mnist",
    metrics=METRICS,
    notes="Matched MLPs are matched to DynaMoE descending: parameters of the residual layers, or nominal active FLOPs per token.",
)

ABLATION_BALANCING = Experiment(
    name="ablation-balancing",
    title="Balancing-loss ablation (Small, Fashion-MNIST)",
    paper_ref="Section 7.10 (no load-balancing ablation)",
    description="DynaMoE without and with a Switch-style balancing loss (0.01), and a uniform MoE with the Switch router and loss.",
    rows=(
        Row({"model": "DynaMoE descending", "balance loss": "none"}, model=SMALL, schedule=DESCENDING),
        Row({"model": "DynaMoE descending", "balance loss": "0.01"}, model=SMALL, schedule=DESCENDING, router=BALANCED),
        Row({"model": "DynaMoE uniform", "balance loss": "none"}, model=SMALL, schedule=UNIFORM),
        Row({"model": "DynaMoE uniform", "balance loss": "0.01"}, model=SMALL, schedule=UNIFORM, router={"balance_weight": SWITCH_LOSS}),
        Row(
            {"model": "Switch uniform", "balance loss": "0.01"},
            model=SMALL,
            schedule=UNIFORM,
            router={"kind": "switch", "balance_weight": SWITCH_LOSS},
        ),
    ),
    dataset="fashion_mnist",
    metrics=METRICS,
    notes="The loss is Switch's E sum_i f_i P_i per layer, summed over layers (spec.routers).",
)

_POOL = MoUEConfig(pool_size=16)
_TOP2 = {"kind": "topk", "balance_weight": SWITCH_LOSS}
_MOE_TOP2 = Row({"model": "MoE top-2", "variant": "-"}, model=SMALL, schedule=UNIFORM, router=_TOP2)


def _moue_top2(variant: str, moue: MoUEConfig = _POOL, **extra) -> Row:
    """MoUE with the MoE top-2 row's choice set and router (``extra``: e.g. ``init_from``)."""
    model = {**SMALL, "kind": "moue", "moue": moue}
    return Row({"model": "MoUE top-2", "variant": variant}, model=model, schedule=UNIFORM, router=_TOP2, **extra)


def _moue_descending(variant: str, moue: MoUEConfig = _POOL) -> Row:
    """MoUE with DynaMoE's descending schedule: windows of 8, 6, 3 and 1 of the pool, so exposures differ."""
    model = {**SMALL, "kind": "moue", "moue": moue}
    return Row(
        {"model": "MoUE DynaMoE descending", "variant": variant}, model=model, schedule=DESCENDING, router={"balance_weight": SWITCH_LOSS}
    )


MOUE_VS_MOE = Experiment(
    name="moue-vs-moe",
    title="MoUE against a matched MoE (Small, Fashion-MNIST)",
    paper_ref="MoUE (Chen et al. 2026), abstract",
    description="Same choice set and active experts per layer: MoE vs MoUE (pool 16, trajectory state, UELB) and its ablations.",
    rows=(
        _MOE_TOP2,
        _moue_top2("full"),
        _moue_top2("no trajectory state", MoUEConfig(pool_size=16, trajectory_dim=0)),
        Row({"model": "DynaMoE descending", "variant": "-"}, model=SMALL, schedule=DESCENDING, router={"balance_weight": SWITCH_LOSS}),
        _moue_descending("full"),
        _moue_descending("no exposure correction", MoUEConfig(pool_size=16, exposure_correction=False)),
        _moue_top2("converted from the trained MoE top-2", init_from=_MOE_TOP2),
    ),
    dataset="fashion_mnist",
    metrics=METRICS,
    notes=(
        "Converted: the MoE top-2 run's trained weights mapped onto the pool by spec.moue.moe_to_moue (the MoUE "
        "paper's progressive conversion), then trained for the protocol's epochs again: twice the MoE's training. "
        "The exposure correction is ablated on the descending schedule: with the uniform one every pool expert is "
        "seen by 2 layers, and a common exposure cancels in UELB's normalisation (the same run, bit for bit)."
    ),
)

EXPERIMENTS = (BASELINES, ABLATION_BALANCING, MOUE_VS_MOE)
