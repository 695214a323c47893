"""``python -m harness compare STORE_A STORE_B``: the same runs on two backends or two machines.

Runs are paired by their config without the backend (dataset, cut, seed, dtype, model, training), so
a torch store pairs with an MLX store, and one machine's store with another's. Per pair it reports the
difference of each metric and a verdict against ``TOLERANCES``.

Why these tolerances: float32 runs of the same config on two backends agree to ~1e-6 for the first
steps, then part (the parity matrix: > 1e-3 in parameters after ~30 steps, because Adam amplifies
rounding in near-zero gradients and batch-scope routing is discrete). After thousands of steps they
are two runs as different as two seeds are, so accuracy is held to a seed-sized spread and the first
epoch's training loss, still close to the shared trajectory, to 2 %. Float64 runs must agree tightly.
"""

from __future__ import annotations

import hashlib
import json
import math

from harness.experiments import RunConfig
from harness.store import Store

TOLERANCES = {
    "float32": {"accuracy": 1.0, "epoch1_train_loss": 0.02, "avg_active": 0.15, "final_ppl": 0.05},
    "float64": {"accuracy": 0.05, "epoch1_train_loss": 1e-6, "avg_active": 0.01, "final_ppl": 1e-4},
}
UNITS = {"accuracy": "points", "epoch1_train_loss": "relative", "avg_active": "experts/token", "final_ppl": "relative"}


def _config_key(record: dict) -> str:
    config = {k: v for k, v in record["spec"].items() if k != "backend"}
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


def compare(store_a: Store, store_b: Store, backend_a: str | None = None, backend_b: str | None = None) -> list[dict]:
    """One dict per paired run: its description, per-metric values, differences and verdicts."""

    def index(store: Store, backend: str | None) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for r in store.records():
            if backend is None or r["spec"]["backend"] == backend:
                out.setdefault(_config_key(r), []).append(r)
        return out

    a_runs, b_runs = index(store_a, backend_a), index(store_b, backend_b)
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
                pairs.append({"a": _describe(ra), "b": _describe(rb), "metrics": rows, "ok": all(r["ok"] for r in rows)})
    return sorted(pairs, key=lambda p: p["a"])


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
    lines += [f"{len(pairs)} paired runs, {ok} within tolerance (see harness/compare.py for why these tolerances).", ""]
    lines += ["| run (A) | metric | A | B | difference | tolerance | verdict |", "|---|---|---|---|---|---|---|"]
    for p in pairs:
        for i, m in enumerate(p["metrics"]):
            run = p["a"] if i == 0 else ""
            verdict = "ok" if m["ok"] else "DIFFERS"
            lines.append(
                f"| {run} | {m['metric']} ({UNITS[m['metric']]}) | {_fmt(m['a'])} | {_fmt(m['b'])} | "
                f"{m['diff']:.3g} | {m['tolerance']:g} | {verdict} |"
            )
    return "\n".join(lines) + "\n"
