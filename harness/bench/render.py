"""The bench's rendering: the Markdown table, the targets as bullets, and results/bench/README.md."""

from __future__ import annotations

from harness.bench.analysis import BATCH, EPOCHS, EVAL_TARGET, LM_TARGETS, RUN_BATCHES, STEPS_PER_EPOCH
from harness.bench.worker import LM_BATCH


def _fmt(value, spec: str, empty: str = "") -> str:
    return empty if value is None else format(value, spec)


def blas_text(blas: dict) -> str:
    """One backend's BLAS (``backends.blas_in_use``) in a few words, with the reason a slow one ran."""
    text = blas.get("config") or blas["name"]
    if blas["name"] == "reference":
        text += f" (slow: {blas['reason']})" if blas.get("reason") else " (slow)"
    return text


def blas_note(results: dict[str, dict]) -> str:
    """Which BLAS served each backend's worker (records made before workers reported it: none)."""
    parts = [f"{name}: {blas_text(r['blas'])}" for name, r in results.items() if r.get("blas")]
    return f"BLAS per worker: {'; '.join(parts)}." if parts else ""


def table(results: dict[str, dict], peak: float) -> str:
    """The rows as a Markdown table (the README's)."""
    lines = [
        f"Batch {BATCH}; machine fp32 matmul rate {peak:.1f} GFLOP/s (the best backend's own square fp32 matmul, "
        f"this run); median over interleaved rounds (min-max); 20 epochs = ms x {STEPS_PER_EPOCH} steps x {EPOCHS}.",
        "",
    ]
    note = blas_note(results)
    if note:
        lines += [note, ""]
    lines += [
        "| backend | size | model | step | dispatch | ms/step (min-max) | samples/s | useful GFLOP/s | % matmul "
        "| x equal-FLOPs MLP | 20 epochs (s) | paper (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if "rows" not in r:
            lines.append(f"| {name} | | | | | {r.get('error', 'skipped')} | | | | | | |")
            continue
        label = name + (" (compiled)" if r.get("compile") else "")
        for row in r["rows"]:
            cells = [
                label,
                row["size"],
                row["label"],
                row["mode"],
                row["dispatch"] if row["experts"] else "",
                f"{row['ms']:.2f} ({row['ms_min']:.2f}-{row['ms_max']:.2f})",
                f"{row['samples_per_s']:,.0f}",
                f"{row['gflops']:.1f}",
                f"{row['pct_matmul']:.0f}",
                _fmt(row["ratio_vs_equal_mlp"], ".2f"),
                _fmt(row["projected_20_epochs_s"], ".0f"),
                _fmt(row["paper_s"], "d"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def lm_table(results: dict[str, dict], peak: float) -> str:
    """The language-model rows as a Markdown table (empty when none were timed)."""
    rows = [(name, row) for name, r in results.items() for row in r.get("lm_rows", [])]
    if not rows:
        return ""
    lines = [
        f"Language model (descending DynaMoE on the MLP backbone (lm-descending) and on the Transformer backbone with 4 heads "
        f"(transformer-descending), GPT-2 vocabulary 50,257, batch {LM_BATCH[0]} x {LM_BATCH[1]} tokens; each step "
        f"alone in its own worker process, median of one-step samples). Head limit: the head's forward + backward "
        f"(training) or forward (evaluation) FLOPs at {peak:.1f} GFLOP/s, the best matmul rate of the run; own-rate "
        f"limit: the same FLOPs at the backend's own matmul rate (its BLAS).",
        "",
        "| backend | size | model | step | ms/step (min-max) | tokens/s | head limit ms | x limit | own-rate limit ms | x own "
        "| peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows:
        label = name + (" (compiled)" if results[name].get("compile") else "")
        if "error" in row:
            lines.append(f"| {label} | {row['size']} | {row['label']} | {row['mode']} | {row['error']} | | | | | | |")
            continue
        cells = [
            label,
            row["size"],
            row["label"],
            row["mode"],
            f"{row['ms']:.0f} ({row['ms_min']:.0f}-{row['ms_max']:.0f})",
            f"{row['tokens_per_s']:,.0f}",
            f"{row['limit_ms']:.0f}",
            f"{row['x_limit']:.2f}",
            _fmt(row.get("own_limit_ms"), ".0f"),
            _fmt(row.get("x_own_limit"), ".2f"),
            f"{row['peak_rss_mb']:,.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def lm_targets_text(t: dict) -> list[str]:
    """The language-model and evaluation targets as Markdown bullets (none for a record without them)."""
    lines = []
    if "lm_head_limit" in t:
        v = t["lm_head_limit"]
        lines.append(
            f"- language model, Tiny training step of the fastest backend ({t['lm_fastest_backend']}): {v['value']:.2f} x the head's "
            f"limit (target <= {LM_TARGETS['head_limit']}): {'met' if v['met'] else 'missed'}"
        )
        for name, v in t["lm_backend_spread"].items():
            verdict = "met" if v["met"] else "missed"
            lines.append(f"- language model, Tiny training step, {name}: {v['value']:.2f} x the fastest (target <= 2.0): {verdict}")
    for key, v in t.get("lm_peak_rss_mb", {}).items():
        shown = "n/a" if v["value"] is None else f"{v['value']:,.0f} MB"
        lines.append(
            f"- peak resident memory, {key}: {shown} (target <= {LM_TARGETS['peak_rss_mb']:,.0f} MB): {'met' if v['met'] else 'missed'}"
        )
    if t.get("eval_share"):
        lm, image = RUN_BATCHES["lm"], RUN_BATCHES["classify"]
        lines.append(
            f"- evaluation's share of a run (eval step x eval batches / (train step x train batches + that); language model: "
            f"{lm[1]} held-out and {lm[0]} training batches an epoch, as Table 5 runs here; images: the inference step x {image[1]} "
            f"test batches against {image[0]} training batches; target <= {100 * EVAL_TARGET:.0f} %; floor: the share were "
            f"evaluation's forward pass, a third of a training step's FLOPs, as fast per FLOP as training):"
        )
        for key, v in t["eval_share"].items():
            floor = ""
            if "floor" in v:
                below = "; the target is below it while as many windows are held out as trained on" if v["floor"] > v["bound"] else ""
                floor = f" (floor {100 * v['floor']:.0f} %{below})"
            lines.append(f"  - {key}: {100 * v['value']:.0f} %{floor}: {'met' if v['met'] else 'missed'}")
    return lines


def regressions_text(reg: dict) -> str:
    """``--against``'s verdict: the rows more than the bound slower than the committed record's."""
    if not reg["rows"]:
        where = f"than in {reg['against']} (normalised by the backend's own matmul rate in each run)"
        return f"No row is more than {reg['bound']:.2f} x slower {where}."
    lines = [f"Slower than {reg['against']} by more than {reg['bound']:.2f} x (normalised by the backend's own matmul rate in each run):"]
    lines += [f"- {r['backend']} {r['key']}: {r['ratio']:.2f} x" for r in reg["rows"]]
    return "\n".join(lines)


def targets_text(t: dict, lm: dict | None = None) -> str:
    """The targets as Markdown bullets: value, bound, met or missed (and by how much)."""
    if not t:
        return "\n".join(["No backend measured the Small descending training step.", *lm_targets_text(lm or {})])
    p = t["projected_seconds"]
    verdict = "met" if p["met"] else f"missed by {p['value'] - p['bound']:.0f} s ({p['value'] / p['bound']:.2f}x)"
    lines = [
        f"Targets (Small, descending, training step; fastest backend: {t['fastest_backend']}):",
        "",
        f"- 20-epoch projection of the fastest backend: {p['value']:.0f} s (target <= {p['bound']:.0f} s): {verdict}",
    ]
    for key, what in (
        ("backend_spread", "x the fastest"),
        ("matmul_fraction", "of the matmul rate"),
        ("dense_ratio", "x the equal-FLOPs MLP"),
    ):
        for name, v in t[key].items():
            value, bound = v["value"], v["bound"]
            if key == "matmul_fraction":
                shown, target = f"{100 * value:.0f} %", f">= {100 * bound:.0f} %"
            else:
                shown, target = ("n/a" if value is None else f"{value:.2f}"), f"<= {bound}"
            if v.get("computed"):
                target += f"; its dispatch computes {v['computed']:.2f} x the active FLOPs"
            lines.append(f"- {name}: {shown} {what} (target {target}): {'met' if v['met'] else 'missed'}")
    return "\n".join(lines + lm_targets_text(lm or {}))


def readme(record: dict, name: str) -> str:
    """results/bench/README.md from a bench record: settings, the table and the targets."""
    s = record["settings"]
    compiled = ", ".join(k for k, v in s["compile"].items() if v) or "none"
    threads = s.get("threads") or "the frameworks' default"
    env = record["environment"]
    lm = lm_table(record["backends"], record["machine_matmul_gflops"])
    lm = f"{lm}\n\n" if lm else ""
    return (
        f"# Benchmark ({env['cpu']}, {env['cpu_count']} cores)\n\nGenerated by `python -m harness bench` into `{name}` "
        f"({record['wall_s']:.0f} s; compute threads per worker: {threads}; compiled: {compiled}; {s['repeats']} rounds).\n\n"
        f"{table(record['backends'], record['machine_matmul_gflops'])}\n\n{lm}{targets_text(record['targets'], record.get('lm_targets'))}\n"
    )
