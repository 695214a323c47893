"""Paper-vs-measured tables from the store: Markdown, CSV and LaTeX (``python -m harness report``).

Runs are matched to an experiment's rows by their full model and training configs; they are grouped
by protocol (backend, dataset, epochs, training-set cut), one table each. Every cell is mean +- sample
standard deviation over the seeds found; the verdict compares the paper's value with the seed spread:
``within`` when |measured mean - paper| <= 2 std + the paper's rounding (at least 2 seeds), ``outside``
otherwise. The output
holds no timestamps, so the same store always gives the same bytes.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from dataclasses import dataclass, field

import numpy as np

from backends.spec import accounting
from backends.spec.config import SIZES, ModelConfig
from harness.experiments.spec import DATASET_SHAPES, DATASET_TITLES, Experiment, Row, protocol_epochs, task_of

SPREAD = 2.0  # verdict: within SPREAD sample standard deviations of the seeds


@dataclass
class Section:
    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    summary_columns: list[int] = field(default_factory=list)  # labels, runs, the judged metric, verdict
    protocol: tuple | None = None  # (backend, dataset, epochs, cut) of its runs; None for spec-only tables

    def summary(self) -> tuple[list[str], list[list[str]]]:
        cols = self.summary_columns or list(range(len(self.headers)))
        return [self.headers[i] for i in cols], [[r[i] for i in cols] for r in self.rows]


def _protocol(record: dict) -> tuple:
    s = record["spec"]
    return (s["backend"], s["dataset"], s["train"]["epochs"], s["num_samples"] or 0)


def _row_configs(row: Row, dataset: str, epochs: int) -> tuple:
    """(model, train, the source run's configs or None) of ``row``'s runs, as a run record stores them."""
    source = None if row.init_from is None else _row_configs(row.init_from, dataset, epochs)
    return dataclasses.asdict(row.model_config(dataset)), dataclasses.asdict(row.train_config(dataset, epochs)), source


def _record_configs(spec: dict) -> tuple:
    source = spec.get("init_from")
    return spec["model"], spec["train"], None if source is None else _record_configs(source)


def match(experiment: Experiment, records: list[dict]) -> dict[tuple, list[tuple[Row, list[dict]]]]:
    """Records of ``experiment``'s rows, grouped by protocol: ``{protocol: [(row, records), ...]}``."""
    groups: dict[tuple, dict[int, list[dict]]] = {}
    for record in records:
        s = record["spec"]
        dataset, epochs = s["dataset"], s["train"]["epochs"]
        if dataset not in DATASET_SHAPES:
            continue
        for i, row in enumerate(experiment.rows):
            if (row.dataset or experiment.dataset) != dataset and (row.dataset or task_of(dataset) != task_of(experiment.dataset)):
                continue
            if _record_configs(s) == _row_configs(row, dataset, epochs):
                groups.setdefault(_protocol(record), {}).setdefault(i, []).append(record)
    return {
        protocol: [(row, sorted(rows.get(i, []), key=lambda r: r["spec"]["seed"])) for i, row in enumerate(experiment.rows)]
        for protocol, rows in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0]))
    }


def seed_stats(values: list[float]) -> tuple[float, float, int]:
    """Mean, sample std (NaN for one value) and count of ``values``, None and NaN left out."""
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return math.nan, math.nan, 0
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan, len(vals)


def _cell(fmt: str, mean: float, std: float, n: int, exact: bool = False) -> str:
    """``mean ± std`` over ``n`` seeds; ``± 0`` when measured seeds agreed, none for a count fixed by the config."""
    if n == 0:
        return "-"
    return fmt.format(mean) if n == 1 or exact or math.isnan(std) else f"{fmt.format(mean)} ± {fmt.format(std)}"


def _printed_resolution(value: float) -> float:
    """Half a unit of the last digit the paper printed (2.4 -> 0.05): its rounding, added to the spread."""
    text = repr(float(value)).rstrip("0")
    decimals = len(text.split(".")[1]) if "." in text and not text.endswith(".") else 0
    return 0.5 * 10.0**-decimals


def verdict(mean: float, std: float, n: int, paper: float | None) -> str:
    if paper is None or n == 0:
        return "-"
    if n < 2:
        return "1 seed"
    return "within" if abs(mean - paper) <= SPREAD * std + _printed_resolution(paper) else "outside"


def _header(experiment: Experiment, protocol: tuple, seeds: list[int]) -> tuple[str, list[str]]:
    backend, dataset, epochs, cut = protocol
    paper_dataset = experiment.dataset if not any(r.dataset for r in experiment.rows) else dataset
    title = f"{experiment.paper_ref}: {experiment.title} — {backend}, {DATASET_TITLES.get(dataset, dataset)}, {epochs} epochs"
    notes = [f"Seeds: {', '.join(map(str, seeds)) or '-'}; mean ± sample std over seeds; verdict: paper within {SPREAD:g} std of ours."]
    if cut:
        notes.append(f"Shortened protocol: training set cut to its first {cut:,} samples.")
    full = protocol_epochs(dataset)
    if epochs != full:
        stated = "the paper does not state its language-modelling epochs; " if task_of(dataset) == "lm" else ""
        change = "Shortened" if epochs < full else "Changed"
        notes.append(f"{change} protocol: {epochs} epochs, not {full} ({stated}`backends.spec.config.EPOCHS`).")
    if paper_dataset != dataset:
        notes.append(
            f"The paper's numbers are on {DATASET_TITLES.get(paper_dataset, paper_dataset)}; ours on "
            f"{DATASET_TITLES.get(dataset, dataset)} (the paper's data are not on this machine): the verdict compares across datasets."
        )
    if experiment.notes:
        notes.append(experiment.notes)
    return title, notes


def _resume_command(experiment: Experiment, protocol: tuple, seeds: list[int]) -> str:
    """The ``harness run`` line that completes ``protocol``'s runs (finished ones are skipped)."""
    backend, dataset, epochs, cut = protocol
    command = f"python -m harness run {experiment.name} --backend {backend} --dataset {dataset} --epochs {epochs}"
    return command + (f" --num-samples {cut}" if cut else "") + f" --seeds {' '.join(map(str, seeds))}"


def _run_sections(experiment: Experiment, records: list[dict]) -> list[Section]:
    sections = []
    per_layer = experiment.name == "table6"
    for protocol, rows in match(experiment, records).items():
        seeds = sorted({r["spec"]["seed"] for _, rs in rows for r in rs})
        title, notes = _header(experiment, protocol, seeds)
        with_paper = {m.name for m in experiment.metrics if any(m.name in entry for entry in experiment.paper)}
        judged = experiment.verdict_metric or next((m.name for m in experiment.metrics if m.name in with_paper), None)
        headers = experiment.label_keys + (["layer"] if per_layer else []) + ["runs"]
        summary_columns = list(range(len(headers)))
        for m in experiment.metrics:
            if m.name == judged:
                summary_columns += [len(headers), len(headers) + 1, len(headers) + 2]
            headers += [m.heading] + (["paper", "Δ"] if m.name in with_paper else [])
        summary_columns.append(len(headers))
        headers.append(f"verdict ({judged})" if judged else "verdict")
        lines = []
        # Table 4: only this protocol's dataset's rows
        rows = [(row, recs) for row, recs in rows if not (row.dataset and row.dataset != protocol[1])]
        for row, recs in rows:
            layers = range(len(recs[0]["summary"]["layers"])) if per_layer and recs else [None]
            for layer in layers:
                paper = experiment.paper_row(row, layer)
                line = list(row.labels.values()) + ([str(layer)] if per_layer else []) + [str(len(recs))]
                judgement = "-"
                for m in experiment.metrics:
                    values = [_value(r, m.name, layer) for r in recs]
                    mean, std, n = seed_stats([None if v is None else v * m.scale for v in values])
                    line.append(_cell(m.fmt, mean, std, n, m.exact))
                    if m.name not in with_paper:
                        continue
                    p = None if paper is None else paper.get(m.name)
                    p_shown = None if p is None else p * (100.0 if m.name == "utilisation" else 1.0)
                    line += ["-" if p is None else m.fmt.format(p_shown), "-" if p is None or n == 0 else m.fmt.format(mean - p_shown)]
                    if m.name == judged:
                        judgement = verdict(mean, std, n, p_shown)
                line.append(judgement)
                lines.append(line)
        if experiment.name == "table7":
            notes.append(_table7_best(experiment, rows))
        missing = sum(1 for _, recs in rows if len(recs) < len(seeds))
        command = _resume_command(experiment, protocol, seeds)
        if missing:
            notes.append(f"Incomplete: {missing} row(s) lack some of seeds {', '.join(map(str, seeds))}; `{command}` runs only those.")
        else:
            notes.append(f"Command: `{command}` (it skips finished runs; `--rerun` recomputes them).")
        sections.append(Section(title, headers, lines, notes, summary_columns, protocol))
    return sections


def _value(record: dict, name: str, layer: int | None):
    summary = record["summary"]
    if layer is not None:
        return summary["layers"][layer].get(name)
    return summary.get(name)


def _table7_best(experiment: Experiment, rows: list[tuple[Row, list[dict]]]) -> str:
    """Per hyperparameter: the paper's best value and the value with our best mean accuracy."""
    parts = []
    for entry in experiment.paper:
        group = [(r, recs) for r, recs in rows if r.labels["parameter"] == entry["parameter"] and recs]
        if not group:
            continue
        best_row = max(group, key=lambda rr: seed_stats([x["summary"]["accuracy"] for x in rr[1]])[0])[0]
        agree = "agrees" if best_row.labels["value"] == entry["value"] else "differs"
        parts.append(f"{entry['parameter']}: paper best {entry['value']}, ours {best_row.labels['value']} ({agree})")
    return "Best values: " + "; ".join(parts) + "." if parts else "Best values: no runs yet."


def _table1_sections(experiment: Experiment) -> list[Section]:
    headers = ["size", "layers", "hidden", "paper params", "ours MLP", "Δ MLP", "ours descending", "ours uniform"]
    lines = []
    for entry in experiment.paper:
        size = SIZES[entry["size"].lower()]
        mlp = accounting.parameter_count(ModelConfig(size=size.name, kind="mlp"))
        base = ModelConfig(size=size.name)
        desc = accounting.parameter_count(base)
        uni = accounting.parameter_count(base.replace(schedule=dataclasses.replace(base.schedule, name="uniform")))
        gap = 100.0 * (mlp - entry["params"]) / entry["params"]
        lines.append(
            [
                entry["size"],
                str(size.num_layers),
                str(size.hidden_dim),
                f"{entry['params']:,}",
                f"{mlp:,}",
                f"{gap:+.1f} %",
                f"{desc:,}",
                f"{uni:,}",
            ]
        )
    notes = ["Computed from the spec (`backends.spec.accounting`), MNIST input (784) and 10 classes; no training."]
    return [Section(f"{experiment.paper_ref}: {experiment.title}", headers, lines, notes)]


def sections(experiment: Experiment, records: list[dict]) -> list[Section]:
    """The tables of one experiment from the store's records (empty when no run matches yet)."""
    if experiment.name == "table1":
        return _table1_sections(experiment)
    return _run_sections(experiment, records)


def to_markdown(experiment: Experiment, secs: list[Section]) -> str:
    out = [f"# {experiment.name}: {experiment.paper_ref} — {experiment.title}", "", experiment.description, ""]
    for s in secs:
        out += [f"## {s.title}", "", "| " + " | ".join(s.headers) + " |", "|" + "---|" * len(s.headers)]
        out += ["| " + " | ".join(r) + " |" for r in s.rows]
        out += [""] + [f"- {n}" for n in s.notes] + [""]
    return "\n".join(out).rstrip() + "\n"


def to_csv(secs: list[Section]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for s in secs:
        writer.writerow(["table", *s.headers])
        for r in s.rows:
            writer.writerow([s.title, *r])
    return buf.getvalue()


def _tex(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"), ("±", r"$\pm$"), ("Δ", r"$\Delta$")):
        text = text.replace(a, b)
    return text


def to_latex(secs: list[Section]) -> str:
    out = []
    for s in secs:
        out += [f"% {_tex(s.title)}", r"\begin{tabular}{" + "l" * len(s.headers) + "}", r"\hline"]
        out.append(" & ".join(_tex(h) for h in s.headers) + r" \\ \hline")
        out += [" & ".join(_tex(c) for c in r) + r" \\" for r in s.rows]
        out += [r"\hline", r"\end{tabular}", ""]
    return "\n".join(out)
