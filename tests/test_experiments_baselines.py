"""The baseline, ablation and MoUE experiments (``harness.experiments.baselines``): registered, and their rows are the configs
they claim (matched MLPs, MoUE beside a MoE with the same choice set and active experts)."""

from __future__ import annotations

import pytest

from backends.spec.accounting import active_flops_per_token, layer_flops, parameter_count
from harness import report
from harness.experiments import get
from harness.runner import plan
from harness.store import Store
from harness.worker import run
from tests.conftest import backend_or_skip


def configs(name):
    e = get(name)
    return {tuple(row.labels.values()): row.model_config(e.dataset) for row in e.rows}


def test_registered_with_distinct_runs():
    for name in ("baselines", "ablation-balancing", "moue-vs-moe"):
        e = get(name)
        assert e.dataset == "fashion_mnist" and not e.paper
        assert len({spec.key for spec in plan(e, ["torch"], [0])}) == len(e.rows)


def test_baselines_rows():
    c = configs("baselines")
    assert [c[(k,)].router.kind for k in ("Top-1", "Top-2", "Switch", "GShard", "Expert choice")] == [
        "topk",
        "topk",
        "switch",
        "gshard",
        "expert_choice",
    ]
    dyn = c[("DynaMoE (descending)",)]
    d, layers = dyn.hidden_dim, dyn.num_layers
    assert abs(parameter_count(c[("MLP (matched params)",)]) - parameter_count(dyn)) <= layers * (2 * d + 1) / 2
    assert abs(active_flops_per_token(c[("MLP (matched FLOPs)",)]) - active_flops_per_token(dyn)) <= layers * 4 * d / 2
    ec = c[("Expert choice",)].router
    assert ec.capacity_factor * ec.top_k == 2  # the compute of top-2


def test_moue_rows_match_their_moe():
    c = configs("moue-vs-moe")
    moe, moue = c[("MoE top-2", "-")], c[("MoUE top-2", "full")]
    assert moue.kind == "moue" and moue.router == moe.router and moue.experts_per_layer() == moe.experts_per_layer()
    expert = 4 * moe.hidden_dim * moe.expert_hidden
    for layer in range(moe.num_layers):  # same active experts; only the router's input (d + r) differs
        assert layer_flops(moue, layer) - layer_flops(moe, layer) < expert / 10


@pytest.mark.torch
@pytest.mark.parametrize("name", ["baselines", "ablation-balancing", "moue-vs-moe"])
def test_experiment_runs_in_quick_mode_and_reports_every_row(name, tmp_path):
    """Every row trains (1 epoch on 256 synthetic images) and lands in the experiment's report."""
    backend_or_skip("torch")
    store = Store(tmp_path)
    e = get(name)
    for spec in plan(e, ["torch"], [0], epochs=1, dataset="synthetic", num_samples=256):
        record = run(spec, store, echo=lambda s: None)
        assert 0.0 <= record["summary"]["accuracy"] <= 1.0
    (section,) = report.sections(e, list(store.records()))
    assert len(section.rows) == len(e.rows) and all(row[len(e.label_keys)] == "1" for row in section.rows)
