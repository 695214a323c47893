"""Paper-vs-measured tables from the store: Markdown, CSV and LaTeX (``python -m harness report``).

Runs are matched to an experiment's rows by their full model and training configs; they are grouped
by protocol (backend, dataset, epochs, training-set cut, early-stopping patience), one table each. Every cell is mean +- sample
standard deviation over the seeds found; the verdict compares the paper's value with the seed spread:
``within`` when |measured mean - paper| <= 2 std + the paper's rounding (at least 2 seeds), ``outside``
otherwise, and ``other dataset`` where the paper's number was measured on other data than ours (what our
runs say about the paper's claims there is ``harness.claims``). Counts fixed by the config (parameters,
experts per layer) are printed without a spread; wall-clock times are marked as measured on a shared
machine, with their spread, and never compared with the paper's. The output holds no timestamps, so the
same store always gives the same bytes.
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
from harness.data.registry import TRAINABLE, info
from harness.experiments import REGISTRY, Experiment, Row
from harness.experiments.protocol import protocol_epochs, run_protocol, task_of

SPREAD = 2.0  # verdict: within SPREAD sample standard deviations of the seeds
OTHER_DATASET = "other dataset"  # the verdict where the paper measured on other data than ours
# Wall-clock columns: our runs share a 2-core machine with other jobs, at mixed commits, so their times are
# marked as such and never set against the paper's (``python -m harness bench`` measures speed).
TIMINGS = {"train_seconds": "time (s, shared machine)"}
EPOCHS_SOURCE = "harness.experiments.protocol.EPOCHS"  # where a shortened protocol's note sends the reader


@dataclass
class Section:
    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    summary_columns: list[int] = field(default_factory=list)  # labels, runs, the judged metric, verdict
    protocol: tuple | None = None  # (backend, dataset, epochs, cut, patience) of its runs; None for spec-only tables

    def summary(self) -> tuple[list[str], list[list[str]]]:
        cols = self.summary_columns or list(range(len(self.headers)))
        return [self.headers[i] for i in cols], [[r[i] for i in cols] for r in self.rows]


def _title(dataset: str) -> str:
    """The dataset's name as the tables print it (the registry's title; the name itself if unknown)."""
    return info(dataset).title if dataset in TRAINABLE else dataset


def _row_configs(row: Row, dataset: str, epochs: int, patience: int | None = None) -> tuple:
    """(model, train, the source run's configs or None) of ``row``'s runs, as a run record stores them."""
    source = None if row.init_from is None else _row_configs(row.init_from, dataset, epochs, patience)
    return row.model_config(dataset).as_dict(), row.train_config(dataset, epochs, patience).as_dict(), source


def _record_configs(config: dict) -> tuple:
    source = config.get("init_from")
    return config["model"], config["train"], None if source is None else _record_configs(source)


def match(experiment: Experiment, records: list[dict]) -> dict[tuple, list[tuple[Row, list[dict]]]]:
    """Records of ``experiment``'s rows, grouped by protocol: ``{protocol: [(row, records), ...]}``."""
    groups: dict[tuple, dict[int, list[dict]]] = {}
    for record in records:
        s = record["spec"]
        dataset, epochs, patience = s["dataset"], s["train"]["epochs"], s["train"].get("patience")
        if dataset not in TRAINABLE:
            continue
        for i, row in enumerate(experiment.rows):
            if (row.dataset or experiment.dataset) != dataset and (row.dataset or task_of(dataset) != task_of(experiment.dataset)):
                continue
            if _record_configs(s) == _row_configs(row, dataset, epochs, patience):
                groups.setdefault(run_protocol(record), {}).setdefault(i, []).append(record)
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
    """Half a unit of the last digit the paper printed (2.4 -> 0.05, 1.0 -> 0.05, 2923.00 -> 0.005): its
    rounding, added to the spread. From the printed text where the number keeps it
    (``harness.experiments.tables.Printed``), else from the float's shortest repr (which has no trailing zeros)."""
    text = getattr(value, "text", None) or repr(float(value))
    if text.endswith(".0") and not hasattr(value, "text"):
        text = text[:-2]  # repr adds ".0" to an integer the paper printed without decimals
    decimals = len(text.split(".")[1]) if "." in text else 0
    return 0.5 * 10.0**-decimals


def verdict(mean: float, std: float, n: int, paper: float | None) -> str:
    if paper is None or n == 0:
        return "-"
    if n < 2:
        return "1 seed"
    return "within" if abs(mean - paper) <= SPREAD * std + _printed_resolution(paper) else "outside"


def _paper_dataset(experiment: Experiment, dataset: str) -> str:
    """The dataset the paper's numbers for ``experiment``'s runs on ``dataset`` were measured on."""
    return experiment.dataset if not any(r.dataset for r in experiment.rows) else dataset


def _header(experiment: Experiment, protocol: tuple, seeds: list[int]) -> tuple[str, list[str]]:
    backend, dataset, epochs, cut, patience = protocol
    paper_dataset = _paper_dataset(experiment, dataset)
    title = f"{experiment.paper_ref}: {experiment.title} — {backend}, {_title(dataset)}, {epochs} epochs"
    notes = [f"Seeds: {', '.join(map(str, seeds)) or '-'}; mean ± sample std over seeds; verdict: paper within {SPREAD:g} std of ours."]
    if cut:
        notes.append(f"Shortened protocol: training set cut to its first {cut:,} samples.")
    full = protocol_epochs(dataset)
    if epochs != full:
        stated = "the paper does not state its language-modelling epochs; " if task_of(dataset) == "lm" else ""
        change = "Shortened" if epochs < full else "Changed"
        notes.append(f"{change} protocol: {epochs} epochs, not {full} ({stated}`{EPOCHS_SOURCE}`).")
    if patience:
        metric = "perplexity" if task_of(dataset) == "lm" else "test accuracy"
        notes.append(f"Early stopping: a run ends once its held-out {metric} has not improved for {patience} epochs (at most {epochs}).")
    if paper_dataset != dataset:
        notes.append(
            f"The paper's numbers are on {_title(paper_dataset)}; ours on {_title(dataset)} (the paper's data are not on "
            f'this machine): no verdict across datasets ("{OTHER_DATASET}"); whether the paper\'s claims hold on our '
            "runs is `python -m harness claims` (results/README.md)."
        )
    if experiment.notes:
        notes.append(experiment.notes)
    return title, notes


def _resume_command(experiment: Experiment, protocol: tuple, seeds: list[int]) -> str:
    """The ``harness run`` line that completes ``protocol``'s runs (finished ones are skipped)."""
    backend, dataset, epochs, cut, patience = protocol
    command = f"python -m harness run {experiment.name} --backend {backend} --dataset {dataset} --epochs {epochs}"
    command += (f" --num-samples {cut}" if cut else "") + (f" --patience {patience}" if patience else "")
    return command + f" --seeds {' '.join(map(str, seeds))}"


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
        # the short form shows the judged metric with the paper's value, or else the experiment's first metric
        shown = judged or (experiment.metrics[0].name if experiment.metrics else None)
        for m in experiment.metrics:
            if m.name == judged:
                summary_columns += [len(headers), len(headers) + 1, len(headers) + 2]
            elif m.name == shown:
                summary_columns.append(len(headers))
            headers += [TIMINGS.get(m.name, m.heading)] + (["paper", "Δ"] if m.name in with_paper else [])
        summary_columns.append(len(headers))
        headers.append(f"verdict ({judged})" if judged else "verdict")
        lines = []
        other_data = _paper_dataset(experiment, protocol[1]) != protocol[1]
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
                    p = None if paper is None else paper.get(m.name)  # in the paper's printed unit (utilisation: %)
                    timing = m.name in TIMINGS  # not set against the paper's: see TIMINGS
                    line += ["-" if p is None else m.fmt.format(p), "-" if p is None or n == 0 or timing else m.fmt.format(mean - p)]
                    if m.name == judged:
                        judgement = OTHER_DATASET if other_data and p is not None and n else verdict(mean, std, n, p)
                line.append(judgement)
                lines.append(line)
        if experiment.name == "table7":
            notes.append(_table7_best(experiment, rows))
        notes += _run_notes(experiment, rows, records)
        missing = sum(1 for _, recs in rows if len(recs) < len(seeds))
        command = _resume_command(experiment, protocol, seeds)
        if missing:
            notes.append(f"Incomplete: {missing} row(s) lack some of seeds {', '.join(map(str, seeds))}; `{command}` runs only those.")
        else:
            notes.append(f"Command: `{command}` (it skips finished runs; `--rerun` recomputes them).")
        sections.append(Section(title, headers, lines, notes, summary_columns, protocol))
    return sections


def _run_notes(experiment: Experiment, rows: list[tuple[Row, list[dict]]], records: list[dict]) -> list[str]:
    """What a reader must know of these runs: timings from a shared machine, runs that fill other
    tables too, and (language modelling) runs still improving when they stopped."""
    recs = [r for _, rs in rows for r in rs]
    notes = []
    timed = [m for m in experiment.metrics if m.name in TIMINGS]
    if timed and recs:
        commits = len({r["environment"].get("git_commit", "unknown") for r in recs})
        notes.append(
            f"{', '.join(TIMINGS[m.name] for m in timed)}: wall-clock of each run on a shared 2-core machine with other jobs "
            f"running, at {commits} commit{'s' * (commits != 1)}; mean ± std over seeds. Not a speed comparison, and not "
            "set against the paper's (no Δ): `python -m harness bench` measures speed."
        )
    users = run_users(records)
    shared: dict[str, int] = {}
    for r in recs:
        for name in users.get(r["key"], ()):
            if name != experiment.name:
                shared[name] = shared.get(name, 0) + 1
    if shared:
        others = ", ".join(f"{REGISTRY[n].paper_ref} ({k})" for n, k in sorted(shared.items(), key=lambda kv: _order(kv[0])))
        notes.append(
            f"Shared runs: some of these {len(recs)} runs also fill rows of {others} (a config is trained once and "
            "shown wherever it appears): those tables are not independent evidence."
        )
    hardware = _hardware_note(rows)
    if hardware:
        notes.append(hardware)
    stopped = sorted(
        len(r["epochs"]) for r in recs if r["spec"]["train"].get("patience") and len(r["epochs"]) < r["spec"]["train"]["epochs"]
    )
    if stopped:
        notes.append(f"Stopped early: {len(stopped)} of {len(recs)} runs, after {', '.join(map(str, stopped))} epochs.")
    lm = [r for r in recs if r["summary"].get("best_ppl") is not None and r["spec"]["model"]["task"] == "lm"]
    if lm:
        still = sum(1 for r in lm if r["summary"]["best_ppl"] == r["summary"]["final_ppl"])
        if still == len(lm):
            notes.append(
                f"Best = final perplexity in all {len(lm)} runs: every run was still improving when stopped, so best PPL is "
                "not an early-stopping optimum (in the paper best PPL comes in early-to-middle epochs, then overfitting)."
            )
        elif still:
            notes.append(f"Best = final perplexity in {still} of {len(lm)} runs: those were still improving when stopped.")
    return notes


def run_hardware(record: dict) -> str:
    """Where a run ran, as a reader names it: the GPU's name, else "CPU (N cores)"."""
    env = record.get("environment", {})
    gpu = env.get("backend", {}).get("cuda_device")
    return f"{gpu} (CUDA)" if gpu else f"CPU ({env.get('cpu_count', '?')} cores)"


def _hardware_note(rows: list[tuple[Row, list[dict]]]) -> str | None:
    """Which rows ran where, when a section's runs come from more than one kind of hardware (same protocol
    and seeds: the numbers differ by floating-point order, which the parity matrix bounds per step)."""
    where: dict[str, dict] = {}
    for row, recs in rows:
        first = next(iter(row.labels.values()), "")
        for r in recs:
            entry = where.setdefault(run_hardware(r), {"labels": [], "runs": 0})
            entry["runs"] += 1
            if first not in entry["labels"]:
                entry["labels"].append(first)
    if len(where) < 2:
        return None
    parts = [f"{hw}: {', '.join(e['labels'])} ({e['runs']} run{'s' * (e['runs'] != 1)})" for hw, e in sorted(where.items())]
    return "Hardware: " + "; ".join(parts) + ". Same protocol and seeds; results/parity/ bounds what the hardware changes."


def _order(name: str) -> int:
    return list(REGISTRY).index(name)


_USERS: dict[tuple, dict[str, list[str]]] = {}


def run_users(records: list[dict]) -> dict[str, list[str]]:
    """Per run key, the experiments (tables, figures with runs, extras) whose rows it fills, in registry order."""
    cache_key = tuple(sorted(r["key"] for r in records))
    if cache_key not in _USERS:
        users: dict[str, list[str]] = {}
        for name, e in REGISTRY.items():
            if e.rows:
                for _, rows in match(e, records).items():
                    for _, recs in rows:
                        for r in recs:
                            if name not in users.setdefault(r["key"], []):
                                users[r["key"]].append(name)
        _USERS.clear()
        _USERS[cache_key] = users
    return _USERS[cache_key]


def orphans(records: list[dict]) -> list[dict]:
    """The runs in the store that fill no row of any experiment (an old config, an ad-hoc run)."""
    users = run_users(records)
    return sorted((r for r in records if r["key"] not in users), key=lambda r: r["key"])


def _value(record: dict, name: str, layer: int | None):
    summary = record["summary"]
    if layer is not None:
        return summary["layers"][layer].get(name)
    return summary.get(name)


def _best_gap(best: list[dict], group: list[tuple[Row, list[dict]]], paper_value) -> str:
    """``": <our best> - <the paper's best value> = +x points, p = ..."``: Welch's two-sided test of our best
    value's accuracy against the paper's best value's, over seeds (not corrected for picking the best of
    the measured values, which favours a difference); empty when either has fewer than 2 seeds."""
    from harness.claims import ALPHA, welch

    theirs = next((recs for r, recs in group if r.labels["value"] == paper_value), [])
    if len(best) < 2 or len(theirs) < 2:
        return ""
    w = welch([100 * x["summary"]["accuracy"] for x in best], [100 * x["summary"]["accuracy"] for x in theirs])
    p = min(1.0, 2 * min(w.p_greater(), w.p_less()))
    within = "within the seeds' spread" if p >= ALPHA else "beyond the seeds' spread"
    return f" by {w.diff:+.2f} points, {within}: Welch p = {p:.2g}"


def _table7_best(experiment: Experiment, rows: list[tuple[Row, list[dict]]]) -> str:
    """Per hyperparameter: the paper's best value and the value with our best mean accuracy."""
    parts = []
    for entry in experiment.paper:
        group = [(r, recs) for r, recs in rows if r.labels["parameter"] == entry["parameter"] and recs]
        if not group:
            continue
        if len(group) < 2:  # the best of one measured value answers nothing
            only = group[0][0].labels["value"]
            parts.append(f"{entry['parameter']}: paper best {entry['value']}, ours needs ≥ 2 measured values (only {only} run)")
            continue
        best_row, best = max(group, key=lambda rr: seed_stats([x["summary"]["accuracy"] for x in rr[1]])[0])
        agree = "agrees" if best_row.labels["value"] == entry["value"] else "differs" + _best_gap(best, group, entry["value"])
        parts.append(
            f"{entry['parameter']}: paper best {entry['value']}, ours {best_row.labels['value']} of {len(group)} measured ({agree})"
        )
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


def to_markdown(experiment: Experiment, secs: list[Section], records: list[dict] = ()) -> str:
    out = [f"# {experiment.name}: {experiment.paper_ref} — {experiment.title}", "", experiment.description, ""]
    for s in secs:
        out += [f"## {s.title}", "", "| " + " | ".join(s.headers) + " |", "|" + "---|" * len(s.headers)]
        out += ["| " + " | ".join(r) + " |" for r in s.rows]
        out += [""] + [f"- {n}" for n in s.notes] + [""]
    out += analysis(experiment, records)
    return "\n".join(out).rstrip() + "\n"


def analysis(experiment: Experiment, records: list[dict]) -> list[str]:
    """The experiment's analysis across runs (``Experiment.analysis``) under its own heading, or nothing."""
    return ["## Analysis", "", *experiment.analysis(list(records)), ""] if experiment.analysis else []


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
