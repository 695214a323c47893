"""The papers' qualitative claims, each tested within our own runs (``python -m harness claims``).

A claim (:class:`Claim`) is a statement of the DynaMoE or MoUE paper with its source and one or more
sub-tests (:class:`Test`): "configuration A scores higher (or lower) than B on a metric", or "A and B
agree within a margin". Each is judged per protocol (backend, dataset, epochs, training-set cut) on
the seeds found, never against the paper's numbers: the claims compare our runs with each other, so
they stand on whatever dataset the protocol ran on (a stand-in for the paper's own data included).

The test: Welch's two-sample t-test (unequal variances, Welch-Satterthwaite degrees of freedom) over the
seeds of the two configurations, at ``ALPHA`` = 0.05, with at least ``MIN_SEEDS`` = 3 seeds a side (fewer:
``inconclusive``, with the reason). A sub-test is

- ``supported`` when its one-sided test is significant at ``ALPHA`` (for an equivalence, both one-sided
  tests of TOST against the margin);
- ``contradicted`` when the one-sided test in the opposite direction is significant at ``ALPHA / m``
  (Bonferroni over the claim's ``m`` sub-tests in that protocol), or when the two sides are equal in
  every seed (a strict "higher" that a tie refutes);
- ``inconclusive`` otherwise (no significant difference at this number of seeds).

A claim is ``supported`` when every sub-test is (an intersection-union test: level ``ALPHA`` without a
correction), ``contradicted`` when any sub-test is (the Bonferroni correction keeps the chance of a false
contradiction below ``ALPHA``), and ``inconclusive`` otherwise. Where both sides' seeds agree exactly
(a count fixed by the config), a difference has zero standard error: it is decided by its sign.

The t distribution's CDF is computed here (regularised incomplete beta by its continued fraction) so
that the verdicts do not depend on scipy being installed; ``tests/test_claims.py`` checks it against
scipy where scipy is present.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness import report
from harness.experiments import REGISTRY

ALPHA = 0.05  # significance level of every test
MIN_SEEDS = 3  # fewer seeds a side: no test
# TOST margin for "MoUE matches the MoE": half a point of accuracy. The MoUE abstract reports gains of up to
# 1.3 % over matched MoEs; agreement within less than half that says the shared pool costs no accuracy at
# this scale, not that it gains 1.3. It is also about the largest gap between any two schedules of our
# Table 2 (<= 0.5 point), the resolution at which our runs tell configurations apart at all.
MOUE_MARGIN = 0.5
UNITS = {"accuracy": "points", "best_ppl": "PPL", "epochs_to_95": "epochs", "avg_active": "experts", "entropy_bits": "bits",
         "params": "params"}  # fmt: skip


# --- Welch's t-test ----------------------------------------------------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` (not necessarily integer) degrees of freedom."""
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (bisection on :func:`t_cdf`)."""
    lo, hi = -1e3, 1e3
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Welch:
    """Welch's comparison of two samples: ``diff`` = mean(a) - mean(b), its standard error and df."""

    diff: float
    se: float
    df: float
    n_a: int
    n_b: int

    def p_greater(self, shift: float = 0.0) -> float:
        """One-sided p-value of H1: mean(a) - mean(b) > ``shift``."""
        if self.se == 0.0:
            return 0.0 if self.diff > shift else 1.0
        return 1.0 - t_cdf((self.diff - shift) / self.se, self.df)

    def p_less(self, shift: float = 0.0) -> float:
        """One-sided p-value of H1: mean(a) - mean(b) < ``shift``."""
        if self.se == 0.0:
            return 0.0 if self.diff < shift else 1.0
        return t_cdf((self.diff - shift) / self.se, self.df)

    def interval(self, alpha: float = ALPHA) -> tuple[float, float]:
        """The two-sided 1 - ``alpha`` confidence interval of the difference of means."""
        if self.se == 0.0:
            return self.diff, self.diff
        half = t_quantile(1.0 - alpha / 2.0, self.df) * self.se
        return self.diff - half, self.diff + half


def welch(a: list[float], b: list[float]) -> Welch:
    """Welch's statistics of samples ``a`` and ``b`` (each of at least 2 values)."""
    na, nb = len(a), len(b)
    ma, mb = sum(a) / na, sum(b) / nb
    va = sum((x - ma) ** 2 for x in a) / (na - 1)
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1)
    qa, qb = va / na, vb / nb
    se = math.sqrt(qa + qb)
    df = (qa + qb) ** 2 / (qa**2 / (na - 1) + qb**2 / (nb - 1)) if se > 0 else math.inf
    return Welch(ma - mb, se, df, na, nb)


# --- claims ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """One configuration of a sub-test: its rows (experiment name -> row labels, every row whose labels
    include these), the metric of the run summary, and a layer for Table 6's per-layer statistics."""

    name: str
    rows: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]
    metric: str
    layer: int | None = None
    scale: float = 1.0

    @property
    def experiments(self) -> list[str]:
        return [name for name, _ in self.rows]


def side(name: str, metric: str, layer: int | None = None, **rows: dict) -> Side:
    """A :class:`Side` from keyword arguments ``experiment=labels`` (``-`` in names: ``_``)."""
    scale = 100.0 if metric == "accuracy" else 1.0
    items = tuple((exp.replace("_", "-"), tuple(sorted(labels.items()))) for exp, labels in rows.items())
    return Side(name, items, metric, layer, scale)


@dataclass(frozen=True)
class Test:
    """``a`` higher than ``b`` (``kind`` "greater"), lower ("less"), or within ``margin`` ("equivalent")."""

    a: Side
    b: Side
    kind: str
    margin: float = 0.0

    @property
    def text(self) -> str:
        op = {"greater": ">", "less": "<", "equivalent": "≈"}[self.kind]
        extra = f" (± {self.margin:g})" if self.kind == "equivalent" else ""
        return f"{self.a.name} {op} {self.b.name}{extra} [{self.a.metric}]"


@dataclass(frozen=True)
class Claim:
    name: str
    statement: str
    source: str
    tests: tuple[Test, ...]


@dataclass
class Outcome:
    """A sub-test's verdict in one protocol, and the numbers behind it."""

    test: Test
    verdict: str
    detail: str
    p: float = math.nan  # the p-value of the claimed direction (TOST: the larger of its two)


@dataclass
class Judgement:
    """A claim's verdict in one protocol."""

    claim: Claim
    protocol: tuple
    verdict: str
    evidence: str
    outcomes: list[Outcome]


def _small(config: str, table2: str) -> dict:
    """The Small classification rows of one configuration in Tables 2 and 4 and Figure 4 (the same runs)."""
    return {"table2": {"schedule": table2}, "table4": {"config": config}, "figure4": {"size": "Small", "config": config}}


MLP = side("MLP", "accuracy", **_small("MLP", "MLP baseline"))
UNIFORM = side("uniform", "accuracy", **_small("Uniform", "Uniform"))
DESCENDING = side("descending", "accuracy", **_small("Descending", "Descending"))
SCHEDULES = [side(label.lower(), "accuracy", table2={"schedule": label})
             for label in ("Ascending", "Pyramid-Up", "Pyramid-Down", "Wave-Up", "Wave-Down")]  # fmt: skip


def _lm(size: str, config: str) -> Side:
    return side(f"{size} {config.lower()}", "best_ppl", table5={"size": size, "config": config})


def _sized(size: str, config: str) -> Side:
    return side(f"{size} {config.lower()}", "accuracy", figure4={"size": size, "config": config})


def _layer(metric: str, layer: int) -> Side:
    return side(f"layer {layer}", metric, layer, table6={"schedule": "Descending"})


def _moue(model: str, variant: str, metric: str = "accuracy", name: str | None = None) -> Side:
    return side(name or model, metric, moue_vs_moe={"model": model, "variant": variant})


LM_SIZES = ("Tiny", "Small", "Medium")
MOUE_PAIRS = (("MoUE top-2", "full", "MoE top-2", "-"), ("MoUE DynaMoE descending", "full", "DynaMoE descending", "-"))

CLAIMS: tuple[Claim, ...] = (
    Claim(
        "descending-beats-uniform",
        "The descending schedule beats uniform",
        "DynaMoE Table 2 and 4 (+1.33 points on MNIST), abstract (Tiny LM: 6.2 % lower PPL, Table 5)",
        (Test(DESCENDING, UNIFORM, "greater"),) + tuple(Test(_lm(s, "Descending"), _lm(s, "Uniform"), "less") for s in LM_SIZES),
    ),
    Claim(
        "schedules-beat-mlp",
        "Every DynaMoE schedule beats the MLP baseline",
        "DynaMoE Tables 2 and 4, Section 6.1",
        tuple(Test(s, MLP, "greater") for s in (UNIFORM, DESCENDING, *SCHEDULES)),
    ),
    Claim(
        "stable-hierarchy",
        "Descending > uniform > MLP at every size",
        "DynaMoE Section 6 (Sections 6.3-6.4, Figures 4-5; Table 5 for language: ../shared/spec/PAPERS.md §1 item 8)",
        (Test(DESCENDING, UNIFORM, "greater"), Test(UNIFORM, MLP, "greater"))
        + tuple(
            t
            for s in ("Tiny", "Medium", "Large")
            for t in (
                Test(_sized(s, "Descending"), _sized(s, "Uniform"), "greater"),
                Test(_sized(s, "Uniform"), _sized(s, "MLP"), "greater"),
            )
        )
        + tuple(
            t
            for s in LM_SIZES
            for t in (Test(_lm(s, "Descending"), _lm(s, "Uniform"), "less"), Test(_lm(s, "Uniform"), _lm(s, "MLP"), "less"))
        ),
    ),
    Claim(
        "more-experts-help",
        "More experts help, up to E_max = 8",
        "DynaMoE Table 3, Section 6.2 (E2-1 < E4-1 < E8-1)",
        (
            Test(side("E4-1", "accuracy", table3={"config": "E4-1"}), side("E2-1", "accuracy", table3={"config": "E2-1"}), "greater"),
            Test(side("E8-1", "accuracy", table3={"config": "E8-1"}), side("E4-1", "accuracy", table3={"config": "E4-1"}), "greater"),
        ),
    ),
    Claim(
        "descending-converges-faster",
        "Descending reaches 95 % of its final accuracy in fewer epochs",
        "DynaMoE Table 2, epochs to 95 % (descending 6, uniform 7, MLP 8)",
        tuple(
            Test(side("descending", "epochs_to_95", **_small("Descending", "Descending")), side(n, "epochs_to_95", **_small(c, t)), "less")
            for n, c, t in (("uniform", "Uniform", "Uniform"), ("MLP", "MLP", "MLP baseline"))
        ),
    ),
    Claim(
        "active-experts-decrease",
        "Descending's active experts per token decrease with depth",
        "DynaMoE Table 6, Section 6.7 (2.4, 2.1, 1.5, 1.0)",
        tuple(Test(_layer("avg_active", i), _layer("avg_active", i + 1), "greater") for i in range(3)),
    ),
    Claim(
        "entropy-decreases",
        "Descending's expert-usage entropy decreases with depth",
        "DynaMoE Table 6 (2.12, 1.98, 1.45, 0.00 bits)",
        tuple(Test(_layer("entropy_bits", i), _layer("entropy_bits", i + 1), "greater") for i in range(3)),
    ),
    Claim(
        "moue-matches-moe",
        f"MoUE matches its matched MoE (± {MOUE_MARGIN:g} point) with fewer parameters",
        "MoUE abstract (a shared pool under a fixed per-token activation budget)",
        tuple(
            t
            for m, v, b, bv in MOUE_PAIRS
            for t in (
                Test(_moue(m, v), _moue(b, bv), "equivalent", MOUE_MARGIN),
                Test(_moue(m, v, "params"), _moue(b, bv, "params"), "less"),
            )
        ),
    ),
    Claim(
        "moue-beats-moe",
        "MoUE beats its matched MoE",
        "MoUE abstract (up to +1.3 % over matched MoE baselines)",
        tuple(Test(_moue(m, v), _moue(b, bv), "greater") for m, v, b, bv in MOUE_PAIRS),
    ),
)


def _matches(records: list[dict]) -> dict[str, dict[tuple, list]]:
    names = {name for c in CLAIMS for t in c.tests for s in (t.a, t.b) for name in s.experiments}
    return {name: report.match(REGISTRY[name], records) for name in sorted(names)}


def _values(s: Side, protocol: tuple, matches: dict) -> list[float]:
    """``s``'s metric over the seeds of its runs in ``protocol`` (a run shared by several rows counted once)."""
    seen = {}
    for experiment, labels in s.rows:
        for row, recs in matches[experiment].get(protocol, []):
            if all(row.labels.get(k) == v for k, v in labels):
                seen.update({r["key"]: r for r in recs})
    out = []
    for r in sorted(seen.values(), key=lambda r: r["spec"]["seed"]):
        v = r["summary"]["layers"][s.layer].get(s.metric) if s.layer is not None else r["summary"].get(s.metric)
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            out.append(v * s.scale)
    return out


def _fmt(x: float) -> str:
    if abs(x) >= 100:
        return f"{x:+,.0f}"
    return f"{x:+.2f}" if abs(x) >= 0.005 or x == 0 else f"{x:+.1e}"


def judge_test(test: Test, a: list[float], b: list[float], m: int, alpha: float = ALPHA) -> Outcome:
    """One sub-test on the seeds ``a`` and ``b``, in a claim of ``m`` sub-tests."""
    if len(a) < MIN_SEEDS or len(b) < MIN_SEEDS:
        short = ", ".join(f"{s.name}: {len(v)} seed{'s' * (len(v) != 1)}" for s, v in ((test.a, a), (test.b, b)) if len(v) < MIN_SEEDS)
        return Outcome(test, "inconclusive", f"{short} (needs ≥ {MIN_SEEDS})")
    w = welch(a, b)
    lo, hi = w.interval(alpha)
    unit = UNITS.get(test.a.metric, "")
    numbers = f"{test.a.name} − {test.b.name} = {_fmt(w.diff)} {unit} [{_fmt(lo)}, {_fmt(hi)}]"
    if test.kind == "equivalent":
        p = max(w.p_greater(-test.margin), w.p_less(test.margin))
        p_against = min(w.p_less(-test.margin), w.p_greater(test.margin))
        verdict = "supported" if p < alpha else "contradicted" if p_against < alpha / m else "inconclusive"
        return Outcome(test, verdict, f"{numbers}, TOST p = {p:.2g}", p)
    p, p_against = (w.p_greater(), w.p_less()) if test.kind == "greater" else (w.p_less(), w.p_greater())
    if w.se == 0.0 and w.diff == 0.0:
        return Outcome(test, "contradicted", f"{numbers}: equal in every seed", 1.0)
    verdict = "supported" if p < alpha else "contradicted" if p_against < alpha / m else "inconclusive"
    shown = f"p = {p_against:.2g} the other way" if verdict == "contradicted" else f"p = {p:.2g}"
    return Outcome(test, verdict, f"{numbers}, {shown}", p)


def _protocols(claim: Claim, matches: dict) -> list[tuple]:
    found = {p for t in claim.tests for s in (t.a, t.b) for e in s.experiments for p in matches[e]}
    return sorted(found, key=lambda p: tuple(str(x) for x in p))


def judge(claim: Claim, protocol: tuple, matches: dict, alpha: float = ALPHA) -> Judgement | None:
    """``claim`` in ``protocol``: its sub-tests that apply there (whose experiments have runs in it)."""
    tests = [t for t in claim.tests if any(protocol in matches[e] for s in (t.a, t.b) for e in s.experiments)]
    if not tests:
        return None
    outcomes = [judge_test(t, _values(t.a, protocol, matches), _values(t.b, protocol, matches), len(tests), alpha) for t in tests]
    verdicts = [o.verdict for o in outcomes]
    verdict = "contradicted" if "contradicted" in verdicts else "supported" if set(verdicts) == {"supported"} else "inconclusive"
    if len(outcomes) == 1:
        evidence = outcomes[0].detail
    else:
        counts = ", ".join(f"{verdicts.count(v)} {v}" for v in ("supported", "contradicted", "inconclusive") if v in verdicts)
        decisive = [o for o in outcomes if o.verdict == verdict]
        shown = "; ".join(o.detail for o in decisive[:2]) + ("; …" if len(decisive) > 2 else "")
        if verdict == "supported":
            shown = f"largest p = {max(o.p for o in outcomes):.2g}"
        evidence = f"{len(outcomes)} sub-tests: {counts} — {shown}"
    return Judgement(claim, protocol, verdict, evidence, outcomes)


def judgements(records: list[dict], alpha: float = ALPHA) -> list[Judgement]:
    """Every claim in every protocol that has runs for it."""
    matches = _matches(records)
    out = []
    for claim in CLAIMS:
        for protocol in _protocols(claim, matches):
            j = judge(claim, protocol, matches, alpha)
            if j is not None:
                out.append(j)
    return out


def _where(protocol: tuple) -> tuple[str, str]:
    backend, dataset, epochs, cut, patience = protocol
    where = f"{report._title(dataset)}, {epochs} ep" + (f", first {cut:,}" if cut else "")
    return backend, where + (f", patience {patience}" if patience else "")


def table(js: list[Judgement]) -> list[str]:
    """The claims as a Markdown table: one line per claim and protocol."""
    lines = ["| claim | source | backend | data | verdict | evidence |", "|---|---|---|---|---|---|"]
    for j in js:
        backend, data = _where(j.protocol)
        lines.append(f"| {j.claim.statement} | {j.claim.source} | {backend} | {data} | **{j.verdict}** | {j.evidence} |")
    return lines


def method() -> str:
    return (
        f"Each claim is tested within our own runs of one protocol (not against the paper's numbers, so it stands on the "
        f"stand-in dataset): Welch's t-test over seeds, α = {ALPHA:g}, ≥ {MIN_SEEDS} seeds a side (else inconclusive); "
        f"a claim is supported when all its sub-tests are, contradicted when one is significant the other way at α/m "
        f"(Bonferroni over its m sub-tests) or ties in every seed; differences are given with their {100 * (1 - ALPHA):g} % "
        f"Welch interval (`harness/claims.py`)."
    )


def to_text(js: list[Judgement]) -> str:
    """What ``python -m harness claims`` prints: the table, then every sub-test."""
    out = ["# The papers' claims, tested on our runs", "", method(), ""] + table(js) + ["", "## Sub-tests", ""]
    for j in js:
        backend, data = _where(j.protocol)
        out.append(f"- {j.claim.name} ({backend}, {data}): **{j.verdict}**")
        out += [f"  - {o.test.text}: {o.verdict}: {o.detail}" for o in j.outcomes]
    return "\n".join(out) + "\n"
