"""``python -m harness compare STORE_A STORE_B``: the same runs on two backends or two machines.

Runs are paired by their config without the backend (dataset, cut, seed, dtype, model, training), so
a torch store pairs with an MLX store, and one machine's store with another's. The kind of hardware
(``run --hardware``) is left out of the pairing too: ``--kind-a cpu --kind-b cuda`` pairs a sweep's CPU
runs with its CUDA runs. Per pair it reports the
difference of each metric and a verdict against ``TOLERANCES``.

Tolerances from the data (float32). Runs of the same config on two backends agree to ~1e-6 for the first
steps, then part: the committed parity matrix (``results/parity/*.json``) measures the float32 training
trajectories of each backend pair parting past 1e-3 relative after ~30 steps (Adam amplifies rounding in
near-zero gradients, and batch-scope routing is discrete). After thousands of steps the two runs of a
seed are as different as two seeds are, so the seeds' own spread sets the tolerance: per row (the config
without backend and seed) and metric, the two backends' means must agree within Welch's interval of
their difference at ``ALPHA`` (Bonferroni over every row and metric of the comparison, so that honest
backends pass as a family with probability 1 - ALPHA). The epoch-1 training loss, where the trajectories
part, is not held tighter than the parity matrix's measured float32 trajectory divergence of that pair.
A bias of one backend small against each row's interval shows in the mean difference over all rows:
a pooled Welch test per metric (``bias`` lines), at ``ALPHA`` over the metrics.

A row with fewer than 2 seeds on a side has no spread: its pairs are held to the fixed ``TOLERANCES``
(marked "fixed"), as are float64 runs, which must agree tightly (same batches, noise and optimiser
formula at every step).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

from harness.claims import t_quantile, welch
from harness.environment import REPO
from harness.experiments import RunConfig
from harness.store import Store

ALPHA = 0.05  # family-wise: the chance that two honest backends' comparison flags anything
PARITY_DIR = REPO / "results" / "parity"  # the committed parity matrices (one JSON per machine kind)

TOLERANCES = {
    "float32": {"accuracy": 1.0, "epoch1_train_loss": 0.02, "avg_active": 0.15, "final_ppl": 0.05},
    "float64": {"accuracy": 0.05, "epoch1_train_loss": 1e-6, "avg_active": 0.01, "final_ppl": 1e-4},
}
UNITS = {"accuracy": "points", "epoch1_train_loss": "relative", "avg_active": "experts/token", "final_ppl": "relative"}


def trajectory_divergence(backend_a: str, backend_b: str, parity_dir: Path = PARITY_DIR) -> float | None:
    """The largest float32 training-trajectory divergence (max relative loss difference) between the two
    backends in the committed parity matrices; ``None`` where no matrix has that pair."""
    found = []
    for path in sorted(Path(parity_dir).glob("*.json")):
        pairs = json.loads(path.read_text()).get("pairs", {})
        for name in (f"{backend_a} | {backend_b}", f"{backend_b} | {backend_a}"):
            value = pairs.get(name, {}).get("trajectory_float32_max_rel")
            if value is not None:
                found.append(value)
    return max(found) if found else None


PAIRED_ACROSS = ("backend", "hardware")  # what may differ between the two runs of a pair


def _config_key(record: dict) -> str:
    config = {k: v for k, v in record["spec"].items() if k not in PAIRED_ACROSS}
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def _metrics(record: dict) -> dict:
    s = record["summary"]
    out = {"accuracy": 100 * s["accuracy"], "epoch1_train_loss": record["epochs"][0]["train_loss"], "final_ppl": s["final_ppl"]}
    if s["layers"]:
        out["avg_active"] = [lay["avg_active"] for lay in s["layers"]]
    return out


def _difference(name: str, a, b) -> float:
    if name == "avg_active":
        return max(abs(x - y) for x, y in zip(a, b))
    if UNITS[name] == "relative":
        return abs(a - b) / max(abs(a), abs(b), 1e-12)
    return abs(a - b)


def hardware_kind(record: dict) -> str | None:
    """The kind of hardware a run was placed on (``run --hardware``), or ``None``."""
    return record["spec"].get("hardware") or record.get("environment", {}).get("hardware")


def compare(
    store_a: Store,
    store_b: Store,
    backend_a: str | None = None,
    backend_b: str | None = None,
    kind_a: str | None = None,
    kind_b: str | None = None,
) -> list[dict]:
    """One dict per paired run: its description, per-metric values, differences and verdicts. ``kind_a``
    and ``kind_b`` keep only the runs placed on that kind of hardware (``run --hardware``), so one store
    holding a sweep on two kinds compares with itself, kind against kind."""

    def index(store: Store, backend: str | None, kind: str | None) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for r in store.records():
            if (backend is None or r["spec"]["backend"] == backend) and (kind is None or hardware_kind(r) == kind):
                out.setdefault(_config_key(r), []).append(r)
        return out

    a_runs, b_runs = index(store_a, backend_a, kind_a), index(store_b, backend_b, kind_b)
    pairs = []
    for key in sorted(set(a_runs) & set(b_runs)):
        for ra in a_runs[key]:
            for rb in b_runs[key]:
                if ra["key"] == rb["key"] and store_a.root.resolve() == store_b.root.resolve():
                    continue  # the same record
                tol = TOLERANCES[ra["spec"]["dtype"]]
                ma, mb = _metrics(ra), _metrics(rb)
                rows = []
                for name in ma:
                    if name in mb:
                        diff = _difference(name, ma[name], mb[name])
                        rows.append(
                            {"metric": name, "a": ma[name], "b": mb[name], "diff": diff, "tolerance": tol[name], "ok": diff <= tol[name]}
                        )
                pairs.append(
                    {"a": _describe(ra), "b": _describe(rb), "metrics": rows, "ok": all(r["ok"] for r in rows), "records": (ra, rb)}
                )
    pairs = sorted(pairs, key=lambda p: p["a"])
    # float32 rows with a seed spread: the data-derived tolerances decide (the fixed ones are for the rest)
    tests, bias = row_tests(pairs)
    verdicts: dict[str, bool] = {}
    for t in tests:
        verdicts[t["row"]] = verdicts.get(t["row"], True) and t["ok"]
    biased = not all(b["ok"] for b in bias)
    for p in pairs:
        key = _row_key(p["records"][0])
        if key in verdicts:
            p["ok"], p["tolerance"] = verdicts[key] and not biased, "data"
            for m in p["metrics"]:
                m["tolerance"] = None
    return pairs


def _row_key(record: dict) -> str:
    """The config without backend and seed: the runs of one row, over seeds."""
    config = {k: v for k, v in record["spec"].items() if k not in (*PAIRED_ACROSS, "seed")}
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def _scalars(record: dict) -> dict[str, float]:
    """The metrics as scalars (avg_active per layer), in the units of the row tests (not relative)."""
    out = {}
    for name, value in _metrics(record).items():
        if isinstance(value, list):
            out.update({f"{name}[{i}]": v for i, v in enumerate(value)})
        else:
            out[name] = value
    return out


def row_tests(pairs: list[dict], parity_dir: Path = PARITY_DIR) -> tuple[list[dict], list[dict]]:
    """Per row and metric, the two backends' means over seeds against Welch's interval (see the module
    docstring), and per metric the pooled bias test over rows. Only float32 rows with >= 2 seeds a side."""
    rows: dict[str, dict] = {}
    for p in pairs:
        ra, rb = p["records"]
        if ra["spec"]["dtype"] != "float32":
            continue
        row = rows.setdefault(
            _row_key(ra), {"describe": p["a"], "a": {}, "b": {}, "backends": (ra["spec"]["backend"], rb["spec"]["backend"])}
        )
        row["a"][ra["key"]], row["b"][rb["key"]] = _scalars(ra), _scalars(rb)
    tests = []
    for key, row in sorted(rows.items(), key=lambda kv: kv[1]["describe"]):
        if min(len(row["a"]), len(row["b"])) < 2:
            continue
        floor = trajectory_divergence(*row["backends"], parity_dir)
        names = sorted(set.intersection(*(set(m) for m in (*row["a"].values(), *row["b"].values()))))
        for name in names:
            a = [m[name] for m in row["a"].values()]
            b = [m[name] for m in row["b"].values()]
            tests.append({"row": key, "describe": row["describe"], "metric": name, "a": a, "b": b, "welch": welch(a, b), "floor": floor})
    m = max(len(tests), 1)
    for t in tests:
        w = t["welch"]
        half = 0.0 if w.se == 0 else t_quantile(1 - ALPHA / (2 * m), w.df) * w.se
        source = f"Welch, α/{m}"
        if t["metric"] == "epoch1_train_loss" and t["floor"] is not None and t["floor"] * abs(sum(t["a"]) / len(t["a"])) > half:
            half, source = t["floor"] * abs(sum(t["a"]) / len(t["a"])), f"parity trajectory {t['floor']:.1e} rel"
        t.update(tolerance=half, source=source, ok=abs(w.diff) <= half)
    bias = []
    metrics = sorted({t["metric"].split("[")[0] for t in tests})
    for name in metrics:
        group = [t["welch"] for t in tests if t["metric"].split("[")[0] == name]
        diff = sum(w.diff for w in group) / len(group)
        var = sum(w.se**2 for w in group) / len(group) ** 2
        terms = sum((w.se**2 / len(group) ** 2) ** 2 / w.df for w in group if w.se > 0 and math.isfinite(w.df))
        df = var**2 / terms if terms > 0 else math.inf
        half = 0.0 if var == 0 else t_quantile(1 - ALPHA / (2 * len(metrics)), min(df, 1e6)) * math.sqrt(var)
        bias.append({"metric": name, "rows": len(group), "diff": diff, "tolerance": half, "ok": abs(diff) <= half})
    return tests, bias


def _describe(record: dict) -> str:
    machine = record["environment"].get("cpu", "?")
    return f"{RunConfig.from_dict(record['spec']).describe()} [{machine}]"


def _fmt(value) -> str:
    if isinstance(value, list):
        return "/".join(f"{v:.2f}" for v in value)
    return f"{value:.4g}" if not (isinstance(value, float) and math.isnan(value)) else "nan"


def to_markdown(pairs: list[dict], label_a: str, label_b: str, command: str = "") -> str:
    lines = [f"# compare: A = {label_a}, B = {label_b}", ""] + ([f"Made by `{command}`.", ""] if command else [])
    if not pairs:
        return "\n".join(lines + ["No run of A has the same config as a run of B.", ""])
    ok = sum(p["ok"] for p in pairs)
    tests, bias = row_tests(pairs)
    rows = len({t["row"] for t in tests})
    lines += [
        f"{len(pairs)} paired runs, {ok} within tolerance; {rows} rows (config over seeds) tested by their seed spread "
        "(harness/compare.py says why these tolerances).",
        "",
        "Tolerances from the data: per row and metric, A's and B's means over seeds must agree within Welch's interval of "
        f"their difference (α = {ALPHA:g} over all {len(tests)} row tests, Bonferroni); the epoch-1 training loss not "
        "tighter than the float32 trajectory divergence the parity matrix measured for this pair (results/parity/); a "
        "backend bias shows in the mean difference over rows (pooled Welch, α = "
        f"{ALPHA:g} over the metrics). Rows with one seed a side, and float64 runs, are held to the fixed tolerances.",
        "",
    ]
    if tests:
        lines += ["| metric | rows | mean difference A − B | tolerance (bias) | verdict |", "|---|---|---|---|---|"]
        lines += [
            f"| {b['metric']} | {b['rows']} | {b['diff']:.3g} | {b['tolerance']:.3g} | {'ok' if b['ok'] else 'BIASED'} |" for b in bias
        ]
        lines += [
            "",
            "| row (A) | metric | A mean | B mean | difference | tolerance | from | verdict |",
            "|---|---|---|---|---|---|---|---|",
        ]
        last = None
        for t in tests:
            run = re.sub(r" seed \d+ ", " ", t["describe"]) if t["row"] != last else ""
            last = t["row"]
            ma, mb = sum(t["a"]) / len(t["a"]), sum(t["b"]) / len(t["b"])
            lines.append(
                f"| {run} | {t['metric']} | {_fmt(ma)} | {_fmt(mb)} | {t['welch'].diff:.3g} | {t['tolerance']:.3g} | {t['source']} | "
                f"{'ok' if t['ok'] else 'DIFFERS'} |"
            )
        lines.append("")
    fixed = [p for p in pairs if p.get("tolerance") != "data"]
    if fixed:
        lines += ["Runs held to the fixed tolerances:", ""]
        lines += ["| run (A) | metric | A | B | difference | tolerance | verdict |", "|---|---|---|---|---|---|---|"]
        for p in fixed:
            for i, m in enumerate(p["metrics"]):
                run = p["a"] if i == 0 else ""
                verdict = "ok" if m["ok"] else "DIFFERS"
                lines.append(
                    f"| {run} | {m['metric']} ({UNITS[m['metric']]}) | {_fmt(m['a'])} | {_fmt(m['b'])} | "
                    f"{m['diff']:.3g} | {m['tolerance']:g} | {verdict} |"
                )
    return "\n".join(lines) + "\n"
