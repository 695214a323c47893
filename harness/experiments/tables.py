"""Tables 1-7 of the DynaMoE paper: their run matrices and the paper's numbers (``../shared/spec/DYNAMOE.md``).

Accuracies are test accuracies in percent at the last epoch; the paper's parameter counts are printed
beside ours, never fitted (``backends.spec.accounting``). Where this machine lacks the paper's dataset,
``run --dataset`` moves a protocol to another one and every report says which dataset each side used.
"""

from __future__ import annotations

from backends.spec.config import SIZES

from .experiment import Experiment, Metric, Row


class Printed(float):
    """A paper number as the paper printed it: a float that keeps its literal text, so that its rounding
    (half a unit of the last printed digit: "1.0" -> 0.05, "2923.00" -> 0.005) survives the trailing
    zeros a float literal drops. ``Printed("1.0") == 1.0``; ``.text`` is ``"1.0"``."""

    text: str

    def __new__(cls, text: str) -> Printed:
        value = super().__new__(cls, text)
        value.text = text
        return value

    def __repr__(self) -> str:
        return f"Printed({self.text!r})"


def printed(*texts: str) -> tuple[Printed, ...]:
    return tuple(Printed(t) for t in texts)


SMALL = {"size": "small"}
MLP = {"size": "small", "kind": "mlp"}
SCHEDULE_ROWS = (
    ("MLP baseline", None),
    ("Uniform", "uniform"),
    ("Descending", "descending"),
    ("Ascending", "ascending"),
    ("Pyramid-Up", "pyramid-up"),
    ("Pyramid-Down", "pyramid-down"),
    ("Wave-Up", "wave-up"),
    ("Wave-Down", "wave-down"),
)


def schedule_row(labels: dict, schedule: str | None, size: str = "small", **schedule_fields) -> Row:
    if schedule is None:
        return Row(labels, model={"size": size, "kind": "mlp"})
    return Row(labels, model={"size": size}, schedule={"name": schedule, **schedule_fields})


ACCURACY = Metric("accuracy", "accuracy %", "{:.2f}", 100.0)
PARAMS = Metric("params", "params", "{:,.0f}", exact=True)
EPOCHS_95 = Metric("epochs_to_95", "epochs to 95 %", "{:.1f}")
SECONDS = Metric("train_seconds", "time (s)", "{:.0f}")
EFFICIENCY = Metric("efficiency", "efficiency", "{:.2f}")
ACTIVE = Metric("active_mflops", "active MFLOP/token", "{:.3f}")

TABLE1 = Experiment(
    name="table1",
    title="Model sizes and parameter counts",
    paper_ref="Table 1",
    description="Layers, hidden width and parameters of the four sizes: computed from the spec, no training.",
    paper=tuple(
        {"size": s.name.capitalize(), "layers": s.num_layers, "hidden": s.hidden_dim, "params": s.paper_params} for s in SIZES.values()
    ),
    metrics=(PARAMS,),
)

TABLE2 = Experiment(
    name="table2",
    title="Schedule ablation (Small)",
    paper_ref="Table 2",
    description="All six schedules, uniform and the MLP baseline, Small, 20 epochs.",
    rows=tuple(schedule_row({"schedule": label}, name) for label, name in SCHEDULE_ROWS),
    dataset="mnist",
    metrics=(ACCURACY, PARAMS, EPOCHS_95, SECONDS, ACTIVE),
    paper=tuple(
        {"schedule": label, "accuracy": acc, "params": params, "epochs_to_95": ep, "train_seconds": t}
        for label, acc, params, ep, t in (
            ("MLP baseline", 89.42, 340_000, 8, 145),
            ("Uniform", 91.35, 380_000, 7, 168),
            ("Descending", 92.68, 380_000, 6, 162),
            ("Ascending", 90.12, 380_000, 9, 175),
            ("Pyramid-Up", 91.08, 380_000, 7, 170),
            ("Pyramid-Down", 90.85, 380_000, 8, 173),
            ("Wave-Up", 91.52, 380_000, 7, 169),
            ("Wave-Down", 91.23, 380_000, 7, 171),
        )
    ),
    notes="The paper prints 380K for every schedule although they hold 14 to 32 experts; ours differ, as they must.",
)

_SENSITIVITY = (
    ("E2-1", 2, 1, 90.85, 290_000, 3.13),
    ("E4-1", 4, 1, 91.62, 325_000, 2.82),
    ("E8-1", 8, 1, 92.68, 380_000, 2.44),
    ("E16-1", 16, 1, 92.45, 520_000, 1.78),
    ("E8-2", 8, 2, 91.98, 390_000, 2.36),
    ("E8-4", 8, 4, 91.24, 410_000, 2.22),
)

TABLE3 = Experiment(
    name="table3",
    title="Expert-count sensitivity (Small, descending)",
    paper_ref="Table 3",
    description="E_max / E_min of the descending schedule; efficiency = accuracy / (parameters / 10K).",
    rows=tuple(schedule_row({"config": c}, "descending", e_max=hi, e_min=lo) for c, hi, lo, *_ in _SENSITIVITY),
    dataset="mnist",
    metrics=(ACCURACY, PARAMS, EFFICIENCY, ACTIVE),
    paper=tuple({"config": c, "accuracy": acc, "params": p, "efficiency": eff} for c, _, _, acc, p, eff in _SENSITIVITY),
)

_CROSS = (("mnist", "MNIST", 89.42, 91.35, 92.68), ("fashion_mnist", "Fashion-MNIST", 84.15, 86.82, 88.34),
          ("cifar10", "CIFAR-10", 62.38, 65.12, 67.85))  # fmt: skip

TABLE4 = Experiment(
    name="table4",
    title="Cross-dataset comparison (Small)",
    paper_ref="Table 4",
    description="MLP, uniform and descending on MNIST, Fashion-MNIST (20 epochs) and CIFAR-10 (25 epochs).",
    rows=tuple(
        Row({"dataset": title, "config": config}, **row_fields, dataset=name)
        for name, title, *_ in _CROSS
        for config, row_fields in (
            ("MLP", {"model": MLP}),
            ("Uniform", {"model": SMALL, "schedule": {"name": "uniform"}}),
            ("Descending", {"model": SMALL, "schedule": {"name": "descending"}}),
        )
    ),
    metrics=(ACCURACY, PARAMS, EPOCHS_95),
    paper=tuple(
        {"dataset": title, "config": config, "accuracy": acc}
        for _, title, *accs in _CROSS
        for config, acc in zip(("MLP", "Uniform", "Descending"), accs)
    ),
    notes="The paper's improvement column is descending over MLP in percent: (desc - mlp) / mlp.",
)

LM_CONFIGS = (("MLP", None), ("Descending", "descending"), ("Ascending", "ascending"), ("Pyramid-Up", "pyramid-up"), ("Uniform", "uniform"))
_LM = {
    "Tiny": (printed("1003.08", "1762.19", "0.1805"), printed("1011.80", "1845.42", "0.1797"), printed("1063.87", "1698.30", "0.1762"),
             printed("1056.17", "1739.95", "0.1778"), printed("1078.31", "1394.63", "0.1761")),
    "Small": (printed("2311.02", "2886.10", "0.0505"), printed("2335.91", "4940.24", "0.0505"), printed("2308.29", "2839.14", "0.0505"),
              printed("2310.73", "2816.38", "0.0505"), printed("2484.32", "6401.43", "0.0505")),
    "Medium": (printed("2468.16", "2975.25", "0.0505"), printed("2417.24", "4719.99", "0.0505"), printed("2397.47", "2923.00", "0.0505"),
               printed("2418.29", "2927.28", "0.0505"), printed("2383.89", "3257.70", "0.0505")),
}  # fmt: skip

TABLE5 = Experiment(
    name="table5",
    title="Language modelling (GPT-2 tokens, sequence length 128)",
    paper_ref="Table 5",
    description="Tiny, Small, Medium x MLP and four schedules; next-token perplexity and accuracy on held-out windows.",
    rows=tuple(schedule_row({"size": size, "config": label}, name, size=size.lower()) for size in _LM for label, name in LM_CONFIGS),
    dataset="recycling_the_web_1k",
    metrics=(
        Metric("best_ppl", "best val PPL", "{:.2f}"),
        Metric("final_ppl", "final val PPL", "{:.2f}"),
        Metric("best_accuracy", "best val acc", "{:.4f}"),
        PARAMS,
    ),
    paper=tuple(
        {"size": size, "config": label, "best_ppl": b, "final_ppl": f, "best_accuracy": a}
        for size, values in _LM.items()
        for (label, _), (b, f, a) in zip(LM_CONFIGS, values)
    ),
    notes="Validation = the held-out windows (WikiText-2: test.txt). The paper's corpus is Recycling-the-Web-1k.",
)

TABLE6 = Experiment(
    name="table6",
    title="Per-layer expert statistics (Small, descending)",
    paper_ref="Table 6",
    description="Experts, average active experts, utilisation and usage entropy per layer, on the test set after training.",
    rows=(schedule_row({"schedule": "Descending"}, "descending"),),
    dataset="mnist",
    metrics=(
        Metric("experts", "experts", "{:.0f}", exact=True),  # E_l: fixed by the schedule
        Metric("avg_active", "avg active", "{:.2f}"),
        Metric("utilisation", "utilisation %", "{:.1f}", 100.0),
        Metric("entropy_bits", "usage entropy (bits)", "{:.2f}"),
    ),
    paper=tuple(
        {"schedule": "Descending", "layer": layer, "experts": e, "avg_active": a, "utilisation": u, "entropy_bits": h}
        # As printed (utilisation in %): the trailing zeros are the paper's rounding.
        for layer, (e, a, u, h) in enumerate(
            (
                (8, *printed("2.4", "30.0", "2.12")),
                (6, *printed("2.1", "35.0", "1.98")),
                (3, *printed("1.5", "50.0", "1.45")),
                (1, *printed("1.0", "100.0", "0.00")),
            )
        )
    ),
    verdict_metric="avg_active",
    notes=(
        "Utilisation = average active / experts. "
        "The paper's entropies are not all consistent with its own counts (../shared/spec/PAPERS.md)."
    ),
)

# Table 7: the values tried, and the paper's best (marked by best=True); other rows have no paper number.
_HYPER = (
    ("temperature", "router", "temperature", (0.1, 0.5, 1.0, 2.0), 0.5),
    ("noise", "router", "noise_std", (0.01, 0.05, 0.1, 0.2), 0.1),
    ("threshold", "router", "tau", (50.0, 60.0, 70.0, 80.0, 90.0), 70.0),
    ("learning rate", "train", "lr", (1e-4, 5e-4, 1e-3, 5e-3), 1e-3),
)

TABLE7 = Experiment(
    name="table7",
    title="Hyperparameter sensitivity (Small, descending)",
    paper_ref="Table 7",
    description="One hyperparameter at a time around the paper's best setting; the paper reports only which value was best.",
    rows=tuple(
        Row({"parameter": p, "value": f"{v:g}"}, model=SMALL, schedule={"name": "descending"}, **{where: {field: v}})
        for p, where, field, values, _ in _HYPER
        for v in values
    ),
    dataset="mnist",
    metrics=(ACCURACY, EPOCHS_95),
    paper=tuple({"parameter": p, "value": f"{best:g}", "best": True} for p, _, _, _, best in _HYPER),
    notes="Threshold values are percentiles (0.7 in the paper = the 70th percentile).",
)

TABLES = (TABLE1, TABLE2, TABLE3, TABLE4, TABLE5, TABLE6, TABLE7)
