"""Report hygiene: printed rounding keeps trailing zeros, no verdict across datasets, Table 7 needs two
measured values and tests a best value that differs over seeds, Table 5 says its runs were still
improving, shared and orphan runs are named."""

from __future__ import annotations

import json
import re
from pathlib import Path

from harness import report
from harness.experiments import Row, get
from harness.experiments.tables import Printed

RUNS = Path(__file__).resolve().parents[1] / "results" / "runs"


def _records() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(RUNS.glob("*.json"))]


def test_printed_resolution_keeps_trailing_zeros():
    assert report._printed_resolution(Printed("1.0")) == 0.05
    assert report._printed_resolution(Printed("2923.00")) == 0.005
    assert report._printed_resolution(2.4) == 0.05 and report._printed_resolution(8) == 0.5
    assert report.verdict(1.04, 0.0, 3, Printed("1.0")) == "within"
    assert report.verdict(1.2, 0.0, 3, Printed("1.0")) == "outside"  # the old 0.5 allowance took it in
    assert get("table6").paper[3]["avg_active"].text == "1.0"


def test_no_verdict_across_datasets_and_counts_without_spread():
    (sec, *_) = report.sections(get("table6"), _records())
    assert all(line[-1] == report.OTHER_DATASET for line in sec.rows)
    experts = sec.headers.index("experts")
    assert [line[experts] for line in sec.rows] == ["8", "6", "3", "1"]


def test_table7_best_needs_two_measured_values_and_tests_a_difference():
    notes = [n for s in report.sections(get("table7"), _records()) for n in s.notes if n.startswith("Best values")]
    parts = [p for n in notes for p in n.removeprefix("Best values: ").rstrip(".").split("; ")]
    one = [p for p in parts if "needs ≥ 2 measured values" in p]
    measured = [p for p in parts if re.search(r"of ([2-9]|\d\d+) measured", p)]
    assert one and measured and len(one) + len(measured) == len(parts), parts  # keras-jax measured them all
    assert all("agrees" not in p for p in one)
    assert all("Welch p = " in p for p in measured if "differs" in p)


def test_table7_best_gap_is_tested_over_seeds():
    row = {value: Row({"parameter": "noise", "value": value}) for value in (0.1, 0.01)}

    def runs(*accuracies):
        return [{"summary": {"accuracy": a / 100}} for a in accuracies]

    close = [(row[0.1], runs(89.8, 89.7, 89.9)), (row[0.01], runs(90.0, 89.7, 90.2))]
    apart = [(row[0.1], runs(89.8, 89.7, 89.9)), (row[0.01], runs(91.0, 91.1, 90.9))]
    assert "within the seeds' spread" in report._best_gap(close[1][1], close, 0.1)
    assert "beyond the seeds' spread" in report._best_gap(apart[1][1], apart, 0.1)
    assert report._best_gap(runs(90.0), close, 0.1) == ""  # one seed: no test


def test_table5_says_its_runs_were_still_improving():
    notes = [n for s in report.sections(get("table5"), _records()) for n in s.notes]
    assert any("still improving when stopped" in n for n in notes)


def test_times_are_marked_and_not_set_against_the_paper():
    (sec, *_) = report.sections(get("table2"), _records())
    col = sec.headers.index(report.TIMINGS["train_seconds"])
    assert all(line[col + 2] == "-" for line in sec.rows)  # no Δ
    assert any("shared 2-core machine" in n for n in sec.notes)


def test_shared_and_orphan_runs_are_named():
    records = _records()
    (sec, *_) = report.sections(get("table6"), records)
    assert any(n.startswith("Shared runs:") and "Table 2" in n for n in sec.notes)
    orphans = report.orphans(records)
    assert orphans and all(r["key"] not in report.run_users(records) for r in orphans)


def test_short_form_shows_a_metric_where_the_paper_has_no_number():
    # baselines and Table 7 have no per-row paper value: the short form shows their first metric (accuracy)
    for name in ("baselines", "table7"):
        sec = next(s for s in report.sections(get(name), _records()) if s.protocol[0] == "keras-jax")
        headers, rows = sec.summary()
        col = headers.index("accuracy %")
        assert headers[-1] == "verdict" and all(re.fullmatch(r"\d+\.\d\d ± \d\.\d\d", line[col]) for line in rows)
    (table2, *_) = report.sections(get("table2"), _records())  # with the paper's values: metric, paper, Δ
    headers, _ = table2.summary()
    assert headers[headers.index("runs") + 1 :][:3] == ["accuracy %", "paper", "Δ"]


def test_a_section_whose_runs_ran_on_several_kinds_of_hardware_says_which_rows_ran_where():
    cpu = {"environment": {"cpu_count": 2}}
    gpu = {"environment": {"cpu_count": 16, "backend": {"cuda_device": "NVIDIA H200"}}}
    rows = [(Row({"size": "Tiny", "config": "MLP"}), [cpu, cpu]), (Row({"size": "Small", "config": "MLP"}), [gpu, gpu, gpu])]
    note = report._hardware_note(rows)
    assert note.startswith("Hardware: CPU (2 cores): Tiny (2 runs); NVIDIA H200 (CUDA): Small (3 runs).")
    assert report._hardware_note(rows[:1]) is None  # one kind: nothing to say
    assert report.run_hardware({}) == "CPU (? cores)"
