"""Figures 1-11 of the DynaMoE paper: what feeds each one (the spec, or the runs of an experiment).

A figure with a ``source`` draws from that experiment's runs in the store; Figures 4-5 have runs of
their own (every size x MLP, uniform, descending). The drawing functions are in ``harness.plots``.
"""

from __future__ import annotations

from .experiment import Experiment, Row

SIZES_ROWS = tuple(
    Row({"size": size.capitalize(), "config": label}, model={"size": size, **({"kind": "mlp"} if schedule is None else {})},
        schedule={} if schedule is None else {"name": schedule})
    for size in ("tiny", "small", "medium", "large")
    for label, schedule in (("MLP", None), ("Uniform", "uniform"), ("Descending", "descending"))
)  # fmt: skip


def _figure(number: int, title: str, plot: str, source: str | None = None, **extra) -> Experiment:
    return Experiment(
        name=f"figure{number}",
        title=title,
        paper_ref=f"Figure {number}",
        description=title + ("" if source is None else f" (from the runs of {source})"),
        source=source,
        plot=plot,
        **extra,
    )


FIGURES = (
    _figure(1, "The expert schedules: experts per layer across depth", "schedules"),
    _figure(2, "The descending-schedule architecture (Small)", "architecture"),
    _figure(3, "Expert activation across layers, per schedule", "activation", "table2"),
    _figure(4, "Accuracy across model sizes and configurations", "size_bars", "figure4", rows=SIZES_ROWS, dataset="mnist"),
    _figure(5, "Accuracy scaling with model size", "size_scaling", "figure4"),
    _figure(6, "Language-modelling perplexity across model sizes", "lm_sizes", "table5"),
    _figure(7, "Language-modelling training dynamics", "lm_dynamics", "table5"),
    _figure(8, "Language-modelling comparison: best and final perplexity, accuracy", "lm_overview", "table5"),
    _figure(9, "Expert usage per layer (descending, Small)", "usage_heatmap", "table6"),
    _figure(10, "Training-loss convergence across configurations", "loss_curves", "table2"),
    _figure(11, "Test accuracy per epoch across schedules", "accuracy_curves", "table2"),
)
