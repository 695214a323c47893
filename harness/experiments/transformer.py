"""``transformer-schedules``: the DynaMoE paper's Section 7.6 prediction, tested on a Transformer backbone.

The paper (``../shared/spec/TRANSFORMER.md``) never ran a Transformer; it predicts that in an
autoregressive language model deeper attention layers aggregate longer-range dependencies, so the depth
profile of post-attention diversity (and of superposition pressure) is flat or increasing and the best
schedule moves from descending (images) towards ascending or pyramid. The experiment: a causal pre-LN
Transformer (``backends.spec.transformer``, 4 heads, sinusoidal positions) on WikiText-2 (GPT-2 BPE,
windows of 128), Table 5's protocol (batch 32, 20 epochs, AdamW + cosine), Tiny and Small, with a dense
feed-forward (the baseline), DynaMoE under the uniform, descending, ascending, pyramid-up and pyramid-down
schedules, and MoUE (pool 16 on the uniform windows); seeds 0 1 2 by default. Each run's summary holds
perplexity, next-token accuracy, per-layer routing and the four probes per layer on 8 held-out windows
(``harness.probes_summary``).

The analysis (functions of run records, so it is tested on synthetic ones; ``analysis_lines`` prints
"not run" until runs exist):

Every part rests on the runs of one protocol per size and backbone (``one_protocol``: the one covering most
schedules, then the longest), and perplexity is the best validation perplexity (Table 5's measure; with
early stopping the final one is 3 epochs past the optimum).

(a) ``depth_trends``: per run, Spearman's rho of each probe against depth; per (size, schedule) the mean
    rho, the sign test (exact binomial, two-sided) and a one-sample t-test over the runs.
(b) ``schedule_alignment``: per size, the measured profile (a probe's per-layer mean over the dense
    baseline's runs: the schedule-free profile of the backbone) against each schedule's expert counts
    (Spearman); whether the best-aligned schedule has the best mean perplexity, and the rank correlation
    of alignment with perplexity across schedules. Uniform has no order (constant counts) and is left out.
(c) ``ranking_agreement``: Kendall's tau-b between the schedules' mean-perplexity ranking here and on the
    MLP backbone (Table 5's runs, same size), over the schedules both ran.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy as np

from backends.spec import rng
from backends.spec.config import MoUEConfig, model_size
from backends.spec.schedules import expert_counts

from .experiment import Experiment, Metric, Row
from .protocol import run_protocol

NAME = "transformer-schedules"
SIZES = ("tiny", "small")
HEADS = 4
TRANSFORMER = {"backbone": "transformer", "num_heads": HEADS}
SCHEDULES = (
    ("Dense FFN", None),
    ("Uniform", "uniform"),
    ("Descending", "descending"),
    ("Ascending", "ascending"),
    ("Pyramid-Up", "pyramid-up"),
    ("Pyramid-Down", "pyramid-down"),
    ("MoUE", "moue"),
)
PROBES = ("attention_entropy", "attention_distance", "head_specialisation", "feature_load", "superposition_pressure")
PROFILE_PROBES = ("feature_load", "attention_distance")  # the diversity profiles (b) aligns schedules with
TREND_PROBES = ("feature_load", "superposition_pressure", "attention_distance")  # what the prediction is about
ALPHA = 0.05  # two-sided, for every answer below
PERMUTATIONS = 10_000  # random orderings where exact enumeration is too long (n > 7)


def _row(size: str, label: str, schedule: str | None) -> Row:
    labels = {"size": size.capitalize(), "config": label}
    if schedule is None:
        return Row(labels, model={"size": size, "kind": "mlp", **TRANSFORMER})
    if schedule == "moue":
        return Row(labels, model={"size": size, "kind": "moue", "moue": MoUEConfig(), **TRANSFORMER}, schedule={"name": "uniform"})
    return Row(labels, model={"size": size, **TRANSFORMER}, schedule={"name": schedule})


TRANSFORMER_SCHEDULES = Experiment(
    name=NAME,
    title="Schedules on a Transformer backbone (WikiText-2, GPT-2 tokens, length 128)",
    paper_ref="Sections 5.4, 7.6 (proposed)",
    description="Causal pre-LN Transformer, 4 heads, Tiny and Small: dense FFN, five schedules and MoUE; "
    "perplexity, accuracy and the four probes per layer (Section 7.6's prediction).",
    rows=tuple(_row(size, label, schedule) for size in SIZES for label, schedule in SCHEDULES),
    dataset="wikitext2",
    metrics=(
        Metric("best_ppl", "best val PPL", "{:.2f}"),
        Metric("final_ppl", "final val PPL", "{:.2f}"),
        Metric("accuracy", "val acc", "{:.4f}"),
        Metric("params", "params", "{:,.0f}", exact=True),
        Metric("active_mflops", "active MFLOP/token", "{:.3f}"),
    ),
    notes="The probes per layer (entropy, distance, head specialisation, feature load, superposition pressure) are in each "
    "run's summary ('probes'); the analysis of Section 7.6's prediction follows the table.",
    analysis=lambda records: analysis_lines(records),  # defined below
)


def _figure(name: str, title: str, plot: str, beside: str | None = None) -> Experiment:
    return Experiment(
        name=name,
        title=title,
        paper_ref="Section 7.6",
        description=f"{title} (from the runs of {NAME})",
        source=NAME,
        beside=beside,
        plot=plot,
    )


EXPERIMENTS = (
    TRANSFORMER_SCHEDULES,
    _figure("figure-transformer-probes", "Transformer probes across depth, one line per schedule", "transformer_probes"),
    _figure(
        "figure-transformer-ppl", "Transformer perplexity per schedule beside the MLP backbone's (Table 5)", "transformer_ppl", "table5"
    ),
)


# --- statistics in NumPy (no SciPy needed) ---------------------------------------------------------------


def ranks(values) -> np.ndarray:
    """Ranks 1..n, ties given their average rank."""
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(v, kind="mergesort")
    first = np.r_[True, v[order][1:] != v[order][:-1]]  # where each run of equal values starts
    dense = np.empty(len(v), dtype=np.int64)
    dense[order] = np.cumsum(first)
    bounds = np.r_[np.nonzero(first)[0], len(v)]
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)  # the mean of a tie's first and last rank


def spearman(a, b) -> float | None:
    """Spearman's rho (Pearson's r of the ranks); ``None`` where either side is constant or n < 2."""
    ra, rb = ranks(a), ranks(b)
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def kendall_tau(a, b) -> float | None:
    """Kendall's tau-b (ties in either ranking corrected); ``None`` where undefined."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    i, j = np.triu_indices(len(a), 1)
    da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    n0 = len(i)
    ta, tb = n0 - np.count_nonzero(da), n0 - np.count_nonzero(db)
    denom = math.sqrt((n0 - ta) * (n0 - tb))
    return None if denom == 0 else float((da * db).sum() / denom)


def sign_test(values) -> float | None:
    """Two-sided exact binomial p of as many positives as negatives (zeros dropped)."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    pos, neg = int((v > 0).sum()), int((v < 0).sum())
    n = pos + neg
    if n == 0:
        return None
    k = min(pos, neg)
    return min(1.0, 2.0 * sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n)


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b): Lentz's continued fraction (Numerical Recipes' betacf)."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _betainc(b, a, 1.0 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1.0 - x)) / a
    return _lentz(a, b, x, front)


def _lentz(a: float, b: float, x: float, front: float) -> float:
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c if abs(1.0 + num / c) > tiny else tiny
        h *= d * c
        num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c if abs(1.0 + num / c) > tiny else tiny
        step = d * c
        h *= step
        if abs(step - 1.0) < 1e-14:
            break
    return front * h


def t_test(values) -> tuple[float, float] | None:
    """One-sample t-test of mean 0: ``(t, two-sided p)``; ``None`` for fewer than 2 values or no spread."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if len(v) < 2:
        return None
    sd = v.std(ddof=1)
    if sd == 0:
        return (math.copysign(math.inf, v.mean()), 0.0) if v.mean() != 0 else None
    t = float(v.mean() / (sd / math.sqrt(len(v))))
    df = len(v) - 1
    return t, float(_betainc(df / 2.0, 0.5, df / (df + t * t)))


def permutation_p(statistic, a, b, draws: int = PERMUTATIONS, seed: int = 0) -> float | None:
    """Two-sided permutation p of ``statistic(a, b)`` (a rank correlation) against ``b`` reordered: exact
    over all orderings for n <= 7, else ``(1 + as extreme) / (1 + draws)`` over ``draws`` orderings from
    the spec's generator ``seed`` (so it regenerates); ``None`` where the statistic is undefined."""
    observed = statistic(a, b)
    if observed is None:
        return None
    b = np.asarray(b, dtype=np.float64)
    exact = len(b) <= 7
    if exact:
        orders = (list(p) for p in itertools.permutations(range(len(b))))
    else:
        gen = rng.sample_generator(seed)
        orders = (gen.permutation(len(b)) for _ in range(draws))
    values = [v for v in (statistic(a, b[list(order)]) for order in orders) if v is not None]
    extreme = sum(1 for v in values if abs(v) >= abs(observed) - 1e-12)
    return extreme / len(values) if exact else (1 + extreme) / (1 + len(values))


# --- the analysis of run records -------------------------------------------------------------------------


def run_label(record: dict) -> tuple[str, str]:
    """(size, schedule label) of a run record (the labels of ``SCHEDULES``)."""
    m = record["spec"]["model"]
    if m["kind"] == "mlp":
        name = "Dense FFN" if m.get("backbone") == "transformer" else "MLP"
    elif m["kind"] == "moue":
        name = "MoUE"
    else:
        name = {s: label for label, s in SCHEDULES if s}.get(m["schedule"]["name"], m["schedule"]["name"])
    return m["size"].capitalize(), name


def transformer_records(records: list[dict]) -> list[dict]:
    """The finished Transformer runs that carry probes, of one protocol per size (``one_protocol``): (a) and
    (b) pool runs, and a depth profile or a perplexity after 2 epochs is not one after convergence."""
    runs = [r for r in records if r["spec"]["model"].get("backbone") == "transformer" and r.get("summary", {}).get("probes")]
    return [r for size in sorted({run_label(r)[0] for r in runs}) for r in one_protocol([r for r in runs if run_label(r)[0] == size])]


def depth_trends(records: list[dict], probes: tuple[str, ...] = PROBES) -> dict:
    """(a): ``{(size, schedule): {probe: {"rho": [per run], "mean", "sign_p", "t", "t_p", "rising"}}}``."""
    rhos: dict = defaultdict(lambda: defaultdict(list))
    for r in transformer_records(records):
        layers = r["summary"]["probes"]
        for probe in probes:
            values = [layer.get(probe) for layer in layers]
            if all(v is not None for v in values):
                rhos[run_label(r)][probe].append(spearman(np.arange(len(values)), values))
    out = {}
    for key, per_probe in rhos.items():
        out[key] = {}
        for probe, values in per_probe.items():
            defined = [v for v in values if v is not None]
            test = t_test(defined)
            out[key][probe] = {
                "rho": values,
                "mean": float(np.mean(defined)) if defined else None,
                "sign_p": sign_test(defined),
                "t": None if test is None else test[0],
                "t_p": None if test is None else test[1],
                "rising": bool(defined) and float(np.mean(defined)) > 0,
            }
    return out


def _mean_ppl(records: list[dict], metric: str) -> dict:
    groups: dict = defaultdict(list)
    for r in records:
        groups[run_label(r)].append(r["summary"][metric])
    return {k: float(np.mean(v)) for k, v in groups.items()}


def one_protocol(records: list[dict], schedules=None) -> list[dict]:
    """The runs of one protocol (``run_protocol``): the one whose runs cover most of ``schedules`` (all the
    labels the runs have, if ``None``), then the longest, then the one with most runs. A mean over runs of
    different protocols would set a converged run beside one stopped after 5 epochs."""
    groups: dict = defaultdict(list)
    for r in records:
        groups[run_protocol(r)].append(r)
    if not groups:
        return []

    def preference(item):
        protocol, runs = item
        labels = {run_label(r)[1] for r in runs}
        covered = len(labels if schedules is None else labels & set(schedules))
        return covered, protocol[2], len(runs), repr(protocol)  # the repr only makes ties deterministic

    return max(groups.items(), key=preference)[1]


def schedule_counts(record: dict) -> list[int]:
    s, size = record["spec"]["model"]["schedule"], record["spec"]["model"]["size"]
    return expert_counts(s["name"], model_size(size).num_layers, s["e_min"], s["e_max"])


def schedule_alignment(records: list[dict], probe: str = "feature_load") -> dict:
    """(b): per size ``{"profile", "alignment": {schedule: rho}, "ppl": {schedule: mean}, "best_aligned",
    "best_ppl", "agrees", "alignment_vs_ppl"}``; sizes without dense-baseline runs are left out."""
    runs = transformer_records(records)
    out = {}
    for size in sorted({run_label(r)[0] for r in runs}):
        dense = [r for r in runs if run_label(r) == (size, "Dense FFN")]
        if not dense:
            continue
        profile = np.mean([[layer[probe] for layer in r["summary"]["probes"]] for r in dense], axis=0)
        ppl = _mean_ppl([r for r in runs if run_label(r)[0] == size], "best_ppl")
        alignment = {}
        for r in runs:
            label = run_label(r)
            if label[0] == size and r["spec"]["model"]["kind"] == "dynamoe" and label[1] not in alignment:
                rho = spearman(schedule_counts(r), profile)
                if rho is not None:
                    alignment[label[1]] = rho
        if not alignment:
            continue
        best_aligned = max(alignment, key=alignment.get)
        best_ppl = min(alignment, key=lambda s: ppl[(size, s)])
        out[size] = {
            "profile": [float(p) for p in profile],
            "alignment": alignment,
            "ppl": {s: ppl[(size, s)] for s in alignment},
            "best_aligned": best_aligned,
            "best_ppl": best_ppl,
            "agrees": best_aligned == best_ppl,
            "alignment_vs_ppl": spearman([alignment[s] for s in alignment], [-ppl[(size, s)] for s in alignment]),
        }
    return out


def ranking_agreement(records: list[dict]) -> dict:
    """(c): per size ``{"schedules", "transformer_ppl", "mlp_ppl", "tau"}`` over the DynaMoE schedules both
    backbones ran (the MLP backbone's runs: language-model runs with ``backbone`` absent), each side's mean
    best validation perplexity (Table 5's measure) over the runs of one protocol (``one_protocol``)."""
    lm = [r for r in records if r["spec"]["model"].get("task") == "lm" and "summary" in r]
    dynamoe = [r for r in lm if r["spec"]["model"]["kind"] == "dynamoe"]
    by_backbone = {
        "transformer": [r for r in dynamoe if r["spec"]["model"].get("backbone") == "transformer"],
        "mlp": [r for r in dynamoe if r["spec"]["model"].get("backbone", "mlp") == "mlp"],
    }
    out = {}
    for size in sorted({run_label(r)[0] for r in by_backbone["transformer"]}):
        ours = one_protocol([r for r in by_backbone["transformer"] if run_label(r)[0] == size])
        theirs = one_protocol([r for r in by_backbone["mlp"] if run_label(r)[0] == size], {run_label(r)[1] for r in ours})
        runs = {"transformer": ours, "mlp": theirs}
        means = {side: _mean_ppl(rs, "best_ppl") for side, rs in runs.items()}
        common = sorted(s for (_, s) in means["transformer"] if (size, s) in means["mlp"])
        if len(common) < 2:
            continue
        a, b = [means["transformer"][(size, s)] for s in common], [means["mlp"][(size, s)] for s in common]
        runs = {side: [r for r in rs if run_label(r)[1] in common] for side, rs in runs.items()}  # what the means rest on
        out[size] = {"schedules": common, "transformer_ppl": a, "mlp_ppl": b, "tau": kendall_tau(a, b)}
        for side, rs in runs.items():
            protocol = run_protocol(rs[0])
            out[size] |= {f"{side}_runs": len(rs), f"{side}_epochs": protocol[2], f"{side}_patience": protocol[4]}
    return out


def pooled_trends(records: list[dict], probes: tuple[str, ...] = TREND_PROBES) -> dict:
    """(a) over every Transformer run of a size (all feed-forwards): ``{size: {probe: {"n", "mean", "rising",
    "falling", "sign_p"}}}`` of the runs' Spearman rho of the probe against depth."""
    per_size: dict = defaultdict(lambda: defaultdict(list))
    for (size, _schedule), per_probe in depth_trends(records, probes).items():
        for probe, stats in per_probe.items():
            per_size[size][probe] += [v for v in stats["rho"] if v is not None]
    out = {}
    for size, per_probe in per_size.items():
        out[size] = {}
        for probe, rhos in per_probe.items():
            out[size][probe] = {
                "n": len(rhos),
                "mean": float(np.mean(rhos)) if rhos else None,
                "rising": sum(1 for v in rhos if v > 0),
                "falling": sum(1 for v in rhos if v < 0),
                "sign_p": sign_test(rhos),
            }
    return out


def run_alignment(records: list[dict], probe: str = "feature_load") -> dict:
    """(b) run by run: per size ``{"n", "rho", "p", "best_aligned", "best_ppl"}``, Spearman's rho between each
    DynaMoE run's alignment (its schedule's counts against the dense baseline's ``probe`` profile) and its
    -perplexity, with ``permutation_p``, and ``schedule_alignment``'s best-aligned and best-perplexity schedules."""
    out = {}
    runs = transformer_records(records)
    for size, a in schedule_alignment(records, probe).items():
        pairs = [
            (a["alignment"][run_label(r)[1]], -r["summary"]["best_ppl"])
            for r in runs
            if run_label(r)[0] == size and r["spec"]["model"]["kind"] == "dynamoe" and run_label(r)[1] in a["alignment"]
        ]
        if len(pairs) < 3:
            continue
        x, y = zip(*pairs)
        out[size] = {"n": len(pairs), "rho": spearman(x, y), "p": permutation_p(spearman, x, y)}
        out[size] |= {key: a[key] for key in ("best_aligned", "best_ppl")}
    return out


TRENDS = {"positive": "rises", "negative": "falls", "inconclusive": "no significant trend"}


def _significance(mean, p) -> str:
    if mean is None or p is None or p >= ALPHA or mean == 0:
        return "inconclusive"
    return "positive" if mean > 0 else "negative"


def answers(records: list[dict]) -> list[str]:
    """Section 7.6's three questions answered from the runs, each with its test (two-sided, alpha ``ALPHA``)."""
    lines = [f"Answers (two-sided tests, alpha = {ALPHA:g}; the seeds' spread is in the tables above):", ""]
    for size, per_probe in sorted(pooled_trends(records).items()):
        parts, falls = [], False
        for probe in TREND_PROBES:
            s = per_probe.get(probe)
            if not s or not s["n"]:
                continue
            sign = _significance(s["mean"], s["sign_p"])
            falls = falls or sign == "negative"
            parts.append(
                f"{probe} {TRENDS[sign]} (mean rho {s['mean']:+.2f}; up in {s['rising']}, down in {s['falling']} of {s['n']} runs; "
                f"sign test p {_fmt(s['sign_p'], '{:.2g}')})"
            )
        verdict = "contradicted" if falls else "not contradicted"
        lines.append(
            f"- (a) {size}, depth profiles over its {_protocol(records, size)}: {'; '.join(parts)}. The prediction (flat or rising) "
            f"is {verdict}."
        )
    for probe in PROFILE_PROBES:
        for size, r in sorted(run_alignment(records, probe).items()):
            sign = _significance(r["rho"], r["p"])
            verdict = {"positive": "supported", "negative": "contradicted", "inconclusive": "inconclusive"}[sign]
            lines.append(
                f"- (b) {size}: across {r['n']} DynaMoE runs (of its {_protocol(records, size)}), alignment with the dense "
                f"baseline's {probe} profile against -perplexity: rho {_fmt(r['rho'])} (permutation p {_fmt(r['p'], '{:.2g}')}); "
                f"best aligned {r['best_aligned']}, best perplexity {r['best_ppl']}: {verdict}."
            )
    for size, c in sorted(ranking_agreement(records).items()):
        p = permutation_p(kendall_tau, c["transformer_ppl"], c["mlp_ppl"])
        best_here = c["schedules"][int(np.argmin(c["transformer_ppl"]))]
        best_mlp = c["schedules"][int(np.argmin(c["mlp_ppl"]))]
        same = "the same" if c["tau"] == 1.0 else "a different"
        lines.append(
            f"- (c) {size}: {same} ranking of {', '.join(c['schedules'])} (tau {_fmt(c['tau'])}, exact permutation p "
            f"{_fmt(p, '{:.2g}')}); best on the Transformer {best_here}, on the MLP backbone {best_mlp} (Transformer: "
            f"{_runs(c, 'transformer')}; MLP backbone: {_runs(c, 'mlp')}; mean best validation perplexity)."
            + _reach(c["transformer_ppl"])
        )
    return lines


def _reach(values) -> str:
    """What (c)'s test cannot show: with few schedules even identical rankings have an exact p over ALPHA."""
    smallest = permutation_p(kendall_tau, values, values)
    if smallest is None or smallest < ALPHA:
        return ""
    return f" No ranking of {len(values)} schedules can reach alpha (identical rankings: exact p {smallest:.2g}): inconclusive by design."


def _described(runs: int, epochs: int, patience: int | None) -> str:
    """"12 runs of 20 epochs, patience 3"."""
    return f"{runs} runs of {epochs} epochs" + (f", patience {patience}" if patience else "")


def _protocol(records: list[dict], size: str) -> str:
    """The Transformer runs of ``size`` that (a) and (b) rest on, described."""
    runs = [r for r in transformer_records(records) if run_label(r)[0] == size]
    _, _, epochs, _, patience = run_protocol(runs[0])
    return _described(len(runs), epochs, patience)


def _runs(agreement: dict, side: str) -> str:
    """What one side of (c) rests on, described."""
    return _described(agreement[f"{side}_runs"], agreement[f"{side}_epochs"], agreement[f"{side}_patience"])


def _fmt(value, spec: str = "{:+.2f}") -> str:
    return "-" if value is None else spec.format(value)


def analysis_lines(records: list[dict]) -> list[str]:
    """The analysis (a)-(c) as Markdown lines; "not run" until Transformer runs with probes exist."""
    if not transformer_records(records):
        return ["Section 7.6's prediction: not run (no Transformer runs with probes in the store)."]
    lines = ["(a) Probe against depth: mean Spearman rho over runs (sign-test p, t-test p)", ""]
    lines.append("| size | schedule | " + " | ".join(PROBES) + " |")
    lines.append("|" + "---|" * (2 + len(PROBES)))
    for (size, schedule), per_probe in sorted(depth_trends(records).items()):
        cells = [
            f"{_fmt(p['mean'])} ({_fmt(p['sign_p'], '{:.2f}')}, {_fmt(p['t_p'], '{:.2f}')})" if p else "-"
            for p in (per_probe.get(k) for k in PROBES)
        ]
        lines.append(f"| {size} | {schedule} | " + " | ".join(cells) + " |")
    for probe in PROFILE_PROBES:
        lines += ["", f"(b) Schedules against the dense baseline's {probe} profile (Spearman of E_l with it)", ""]
        for size, a in schedule_alignment(records, probe).items():
            pairs = ", ".join(f"{s} {a['alignment'][s]:+.2f} (PPL {a['ppl'][s]:.1f})" for s in a["alignment"])
            profile = ", ".join(f"{p:.2f}" for p in a["profile"])
            verdict = "agree" if a["agrees"] else "differ"
            lines.append(
                f"- {size}: profile {profile}; {pairs}; best aligned {a['best_aligned']}, best PPL {a['best_ppl']}: {verdict}; "
                f"alignment vs -PPL rho {_fmt(a['alignment_vs_ppl'])}"
            )
    lines += ["", "(c) Schedule ranking by perplexity: Transformer against the MLP backbone (Kendall's tau-b)", ""]
    agreement = ranking_agreement(records)
    if not agreement:
        lines.append("- no size with both backbones' runs")
    for size, c in agreement.items():
        lines.append(f"- {size}: {', '.join(c['schedules'])}: tau {_fmt(c['tau'])}")
    return lines + [""] + answers(records)
