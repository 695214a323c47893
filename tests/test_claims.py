"""The claims: the t-test is right, a claim's verdict follows its sub-tests, and too few seeds say so."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from harness import claims
from harness.claims import betainc, t_cdf, t_quantile, welch

RUNS = Path(__file__).resolve().parents[1] / "results" / "runs"


def test_t_cdf_matches_known_values_and_scipy_where_installed():
    # t(df=1) is Cauchy: P(T <= 1) = 3/4; t(df=2) has the closed form 1/2 + t / (2 sqrt(2 + t^2))
    assert t_cdf(1.0, 1.0) == pytest.approx(0.75, abs=1e-12)
    for t in (-3.0, -0.5, 0.0, 0.7, 4.0):
        assert t_cdf(t, 2.0) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)
    assert t_quantile(0.975, 4.0) == pytest.approx(2.7764451, abs=1e-6)  # the printed table value
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1.3, 2.0, 3.7, 10.0, 55.5):
        for t in (-6.0, -1.2, 0.3, 2.5):
            assert t_cdf(t, df) == pytest.approx(scipy_stats.t.cdf(t, df), abs=1e-10)
    assert betainc(2.5, 0.5, 0.3) == pytest.approx(__import__("scipy.special").special.betainc(2.5, 0.5, 0.3), abs=1e-12)


def test_welch_matches_scipy_where_installed():
    a, b = [90.1, 90.3, 90.2], [89.7, 89.9, 89.6, 89.8]
    w = welch(a, b)
    scipy_stats = pytest.importorskip("scipy.stats")
    ref = scipy_stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    assert w.p_greater() == pytest.approx(ref.pvalue, rel=1e-9)
    assert w.p_less() == pytest.approx(1 - ref.pvalue, rel=1e-9)


def _records(backend: str = "torch") -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(RUNS.glob("*.json")) if json.loads(p.read_text())["spec"]["backend"] == backend]


def _by_claim(records):
    return {(j.claim.name, j.protocol[0], j.protocol[1]): j for j in claims.judgements(records)}


def _shift(records, schedule: str, points: float) -> list[dict]:
    """A copy of the records with ``points`` added to the accuracy of one schedule's Small runs."""
    out = copy.deepcopy(records)
    for r in out:
        m = r["spec"]["model"]
        if m["kind"] == "dynamoe" and m["size"] == "small" and m["schedule"]["name"] == schedule and m["router"]["kind"] == "dynamic":
            if m["schedule"]["e_max"] == 8 and m["schedule"]["e_min"] == 1 and r["spec"]["train"]["lr"] == 0.001:
                r["summary"]["accuracy"] += points / 100
    return out


def test_a_claim_turns_with_the_data():
    """torch Fashion-MNIST: descending is 0.23 points below uniform over 3 seeds (contradicted); lift
    descending by 1 point and the same test supports the claim; on the committed runs it is what it is."""
    records = _records("torch")
    key = ("descending-beats-uniform", "torch", "fashion_mnist")
    assert _by_claim(records)[key].verdict == "contradicted"
    assert _by_claim(_shift(records, "descending", 1.0))[key].verdict == "supported"
    tiny = _by_claim(records)[("descending-beats-uniform", "torch", "wikitext2")]
    # Small and Medium LM rows have one seed: the claim is inconclusive and says why
    assert tiny.verdict == "inconclusive" and "1 seed" in tiny.evidence and "needs ≥ 3" in tiny.evidence


def test_two_seeds_are_inconclusive_not_a_verdict():
    records = [r for r in _records("torch") if r["spec"]["seed"] != 2]
    j = _by_claim(records)[("descending-beats-uniform", "torch", "fashion_mnist")]
    assert j.verdict == "inconclusive" and "2 seeds" in j.evidence


def test_a_strict_decrease_refuted_by_a_tie_in_every_seed():
    test = claims.Test(claims.side("a", "x"), claims.side("b", "x"), "greater")
    assert claims.judge_test(test, [1.0, 1.0, 1.0], [1.0, 1.0, 1.0], 1).verdict == "contradicted"
    assert claims.judge_test(test, [2.4, 2.4, 2.4], [1.8, 1.8, 1.8], 1).verdict == "supported"


def test_equivalence_needs_both_sides_within_the_margin():
    test = claims.Test(claims.side("a", "accuracy"), claims.side("b", "accuracy"), "equivalent", 0.5)
    assert claims.judge_test(test, [90.0, 90.1, 89.9], [90.05, 90.0, 90.1], 1).verdict == "supported"
    assert claims.judge_test(test, [89.0, 89.1, 88.9], [90.05, 90.0, 90.1], 1).verdict == "contradicted"
    assert claims.judge_test(test, [89.0, 90.5, 91.0], [90.05, 90.0, 90.1], 1).verdict == "inconclusive"


def test_cli_prints_the_table(capsys):
    from harness.cli import main

    assert main(["claims"]) == 0
    out = capsys.readouterr().out
    assert "| claim | source | backend | data | verdict | evidence |" in out and "α = 0.05" in out
