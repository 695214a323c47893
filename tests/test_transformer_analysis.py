"""The ``transformer-schedules`` experiment: its rows, the probe summary, and the analysis of Section 7.6's
prediction on synthetic run records (Spearman, Kendall, sign and t-tests against SciPy where installed)."""

from __future__ import annotations

import numpy as np
import pytest

from backends import reference
from backends.spec import init_params
from backends.spec.config import ModelConfig
from backends.spec.schedules import expert_counts
from harness import report
from harness.experiments import get
from harness.experiments import transformer as X
from harness.probes_summary import PROBE_FIELDS, layer_probes


def test_the_experiment_rows():
    e = get(X.NAME)
    assert e.dataset == "wikitext2" and len(e.rows) == 14
    runs = e.runs("torch", [0, 1, 2])
    assert len(runs) == 42 and len({r.key for _, r in runs}) == 42
    cfgs = [r.model for _, r in runs]
    assert all(c.backbone == "transformer" and c.num_heads == 4 and c.task == "lm" for c in cfgs)
    assert {c.size for c in cfgs} == {"tiny", "small"} and {c.kind for c in cfgs} == {"mlp", "dynamoe", "moue"}
    assert runs[0][1].train.batch_size == 32 and runs[0][1].train.epochs == 20  # Table 5's protocol
    assert get("figure-transformer-probes").source == X.NAME and get("figure-transformer-ppl").kind == "figure"


def test_layer_probes_of_the_reference():
    cfg = ModelConfig(size="tiny", task="lm", vocab_size=40, backbone="transformer")
    params = init_params(cfg, 0)
    x = np.random.default_rng(0).integers(0, 40, (4, 16))
    _, routings, record = reference.forward_with_probes(params, x, cfg)
    layer = layer_probes(record["attention"][0], record["post_attention"][0], routings[0].mask, cfg)
    assert set(PROBE_FIELDS) <= set(layer) and layer["avg_active"] >= 1
    assert 0 < layer["attention_entropy"] <= np.mean(np.log(np.arange(1, 17))) + 1e-12
    assert layer["capacity"] == pytest.approx(layer["avg_active"] * cfg.expert_hidden)
    assert layer["superposition_pressure"] == pytest.approx(layer["feature_load"] / layer["capacity"])
    dense = layer_probes(record["attention"][0], record["post_attention"][0], None, cfg)
    assert dense["capacity"] == cfg.mlp_hidden and "avg_active" not in dense


def _record(size, kind, schedule, seed, probes, ppl, backbone="transformer", epochs=None, patience=None):
    model = {"size": size, "kind": kind, "task": "lm", "schedule": {"name": schedule, "e_min": 1, "e_max": 8}}
    if backbone:
        model["backbone"] = backbone
    train = {"epochs": epochs or (2 if backbone else 5)} | ({"patience": patience} if patience else {})
    spec = {"backend": "torch", "dataset": "wikitext2", "num_samples": None, "model": model, "seed": seed, "train": train}
    return {"spec": spec, "summary": {"final_ppl": ppl, "best_ppl": ppl, "probes": probes}}


def _probes(profile):
    return [{p: v * (i + 1) if p != "feature_load" else v for p in PROBE_FIELDS} | {"feature_load": v} for i, v in enumerate(profile)]


def synthetic():
    """Rising feature load; ascending best on the Transformer, descending best on the MLP backbone."""
    recs = []
    rising = [1.0, 2.0, 3.0, 4.0]
    for seed in range(3):
        jitter = 0.01 * seed
        recs.append(_record("small", "mlp", "descending", seed, _probes([v + jitter for v in rising]), 500.0))
        for schedule, ppl in (("ascending", 300.0), ("pyramid-up", 350.0), ("descending", 450.0), ("uniform", 400.0)):
            recs.append(_record("small", "dynamoe", schedule, seed, _probes(rising), ppl + seed))
        for schedule, ppl in (("ascending", 900.0), ("pyramid-up", 850.0), ("descending", 700.0), ("uniform", 800.0)):
            recs.append(_record("small", "dynamoe", schedule, seed, [], ppl, backbone=None))
    return recs


def test_depth_trends_find_the_rising_profile():
    trends = X.depth_trends(synthetic())
    dense = trends[("Small", "Dense FFN")]["feature_load"]
    assert dense["rho"] == [1.0, 1.0, 1.0] and dense["rising"] and dense["sign_p"] == 0.25
    assert dense["t_p"] == 0.0  # no spread: the sign is certain
    assert ("Small", "Ascending") in trends and not any(k[1] == "MLP" for k in trends)  # MLP-backbone runs carry no probes


def test_alignment_and_ranking():
    recs = synthetic()
    a = X.schedule_alignment(recs)["Small"]
    assert a["alignment"]["Ascending"] == pytest.approx(1.0) and a["alignment"]["Descending"] == pytest.approx(-1.0)
    assert "Uniform" not in a["alignment"]  # constant counts: no rank order
    assert a["best_aligned"] == a["best_ppl"] == "Ascending" and a["agrees"]
    assert a["alignment_vs_ppl"] == pytest.approx(1.0)
    c = X.ranking_agreement(recs)["Small"]
    assert c["schedules"] == ["Ascending", "Descending", "Pyramid-Up", "Uniform"]
    assert c["tau"] == pytest.approx(-1.0)  # the rankings are reversed
    text = "\n".join(X.analysis_lines(recs))
    assert "(a)" in text and "best aligned Ascending" in text and "tau -1.00" in text
    assert X.analysis_lines([]) == ["Section 7.6's prediction: not run (no Transformer runs with probes in the store)."]


def test_ranking_rests_on_one_protocol_of_each_backbone():
    """MLP-backbone runs of two protocols with opposite rankings: (c) uses the converged (20-epoch) ones
    alone and says so; a mean over both would rank them by whichever protocol has the larger numbers."""
    recs = [r for r in synthetic() if r["spec"]["model"].get("backbone")]  # the Transformer runs
    for seed in range(3):
        for schedule, ppl in (("ascending", 3000.0), ("pyramid-up", 2000.0), ("descending", 1000.0), ("uniform", 4000.0)):
            recs.append(_record("small", "dynamoe", schedule, seed, [], ppl, backbone=None, epochs=5))
        for schedule, ppl in (("ascending", 250.0), ("pyramid-up", 260.0), ("descending", 270.0), ("uniform", 265.0)):
            recs.append(_record("small", "dynamoe", schedule, seed, [], ppl, backbone=None, epochs=20, patience=3))
    c = X.ranking_agreement(recs)["Small"]
    assert c["mlp_ppl"] == [250.0, 270.0, 260.0, 265.0] and c["tau"] == pytest.approx(1.0)  # mixed: -0.33
    assert (c["mlp_runs"], c["mlp_epochs"], c["mlp_patience"]) == (12, 20, 3)
    assert "MLP backbone: 12 runs of 20 epochs, patience 3" in "\n".join(X.answers(recs))


def test_statistics_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    gen = np.random.default_rng(0)
    for _ in range(20):
        a, b = gen.integers(0, 5, 7).astype(float), gen.integers(0, 5, 7).astype(float)
        if len(set(a)) > 1 and len(set(b)) > 1:
            assert X.spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
            assert X.kendall_tau(a, b) == pytest.approx(stats.kendalltau(a, b).statistic, abs=1e-12)
        v = gen.standard_normal(5) + 0.3
        t, p = X.t_test(v)
        ref = stats.ttest_1samp(v, 0.0)
        assert t == pytest.approx(ref.statistic, rel=1e-10) and p == pytest.approx(ref.pvalue, rel=1e-8)
        signs = gen.integers(-1, 2, 9)
        if np.count_nonzero(signs):
            n, k = np.count_nonzero(signs), int((signs > 0).sum())
            assert X.sign_test(signs) == pytest.approx(stats.binomtest(k, n).pvalue, rel=1e-10)


def test_statistics_edge_cases():
    assert X.spearman([1, 1, 1], [1, 2, 3]) is None and X.kendall_tau([1, 1], [2, 2]) is None
    assert X.sign_test([0.0, None]) is None and X.t_test([1.0]) is None
    assert list(X.ranks([3, 1, 3])) == [2.5, 1.0, 2.5]
    assert X.spearman(range(4), expert_counts("descending", 4, 1, 8)) == pytest.approx(-1.0)


def test_the_report_prints_the_analysis_after_the_tables():
    experiment = get("transformer-schedules")
    assert report.analysis(experiment, []) == ["## Analysis", "", X.analysis_lines([])[0], ""]
    assert "tau -1.00" in "\n".join(report.analysis(experiment, synthetic()))
    assert report.analysis(get("table2"), synthetic()) == []  # an experiment without one prints nothing


def test_permutation_p_is_exact_for_small_samples_and_regenerates():
    assert X.permutation_p(X.spearman, range(5), range(5)) == pytest.approx(2 / 120)  # only the two monotone orders
    assert X.permutation_p(X.kendall_tau, [1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(2 / 24)
    assert X.permutation_p(X.spearman, [1, 1, 1], [1, 2, 3]) is None
    a, b = list(range(12)), [0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10]
    p = X.permutation_p(X.spearman, a, b)
    assert p == X.permutation_p(X.spearman, a, b) and 0 < p < 0.001  # drawn from the spec's generator: the same each time


def test_answers_state_each_question_with_its_test():
    recs = synthetic()
    pooled = X.pooled_trends(recs)["Small"]["feature_load"]
    assert pooled["n"] == 15 and pooled["rising"] == 15 and pooled["sign_p"] == pytest.approx(2 / 2**15)
    text = "\n".join(X.answers(recs))
    assert "(a) Small" in text and "feature_load rises" in text and "is not contradicted" in text
    assert "(b) Small: across 9 DynaMoE runs" in text and "supported" in text  # ascending: best aligned and best PPL
    assert "(c) Small: a different ranking" in text and "best on the Transformer Ascending, on the MLP backbone Descending" in text
    assert "(Transformer: 12 runs of 2 epochs; MLP backbone: 12 runs of 5 epochs; mean best validation perplexity)" in text
    falling = [
        {**r, "summary": {**r["summary"], "probes": list(reversed(r["summary"]["probes"]))}} if r["summary"]["probes"] else r
        for r in recs
    ]
    assert "The prediction (flat or rising) is contradicted" in "\n".join(X.answers(falling))


def test_the_perplexity_figure_sets_our_mlp_backbone_runs_of_one_protocol_beside_the_transformer():
    pytest.importorskip("matplotlib")
    from harness import plots

    transformer = [r for r in synthetic() if r["spec"]["model"].get("backbone")]
    beside = []
    for seed in range(3):
        for schedule, five, twenty in (("ascending", 3000.0, 250.0), ("descending", 1000.0, 270.0)):
            beside.append(_record("small", "dynamoe", schedule, seed, [], five, backbone=None, epochs=5))
            beside.append(_record("small", "dynamoe", schedule, seed, [], twenty, backbone=None, epochs=20, patience=3))
    rows = [(row, [r for r in transformer if X.run_label(r) == (row.labels["size"], row.labels["config"])]) for row in get(X.NAME).rows]
    fig = plots.transformer_ppl(rows, "title", beside)
    ax = fig.axes[0]
    configs = [t.get_text() for t in ax.get_xticklabels()]
    assert configs == ["Dense FFN", "Uniform", "Descending", "Ascending", "Pyramid-Up"]  # the rows with runs
    heights = {c.get_label(): [b.get_height() for b in c] for c in ax.containers}
    assert heights["Transformer (ours)"][configs.index("Ascending")] == pytest.approx(301.0)  # seeds 300, 301, 302
    ours = heights["MLP backbone (ours, Table 5, 20 epochs, patience 3)"]
    assert ours[configs.index("Ascending")] == 250.0 and ours[configs.index("Descending")] == 270.0
    assert np.isnan(ours[configs.index("Uniform")])  # no MLP-backbone run of it
    assert heights["MLP backbone (paper, Table 5, on its own corpus)"][configs.index("Descending")] == pytest.approx(2335.91)


def test_depth_trends_and_alignment_rest_on_one_protocol_per_size():
    """Transformer runs of a short and a converged protocol with opposite depth profiles and perplexities:
    (a) and (b) use the converged runs alone and name them; pooled, the falling short runs would cancel
    the rising ones and the short runs' perplexities would decide the best schedule."""
    recs = synthetic()  # 2-epoch runs: rising feature load, ascending best
    for seed in range(3):
        recs.append(_record("small", "mlp", "descending", seed, _probes([4.0, 3.0, 2.0, 1.0]), 260.0, epochs=20, patience=3))
        for schedule, ppl in (("ascending", 270.0), ("pyramid-up", 265.0), ("descending", 250.0), ("uniform", 262.0)):
            recs.append(_record("small", "dynamoe", schedule, seed, _probes([4.0, 3.0, 2.0, 1.0]), ppl, epochs=20, patience=3))
    dense = X.depth_trends(recs)[("Small", "Dense FFN")]["feature_load"]
    assert dense["rho"] == [-1.0, -1.0, -1.0]  # pooled with the 2-epoch runs: three +1 and three -1
    a = X.schedule_alignment(recs)["Small"]
    assert a["best_ppl"] == "Descending" and a["ppl"]["Ascending"] == 270.0 and a["best_aligned"] == "Descending"
    text = "\n".join(X.answers(recs))
    assert "(a) Small, depth profiles over its 15 runs of 20 epochs, patience 3: feature_load falls" in text
    assert "(b) Small: across 9 DynaMoE runs (of its 15 runs of 20 epochs, patience 3)" in text
    assert "the dense baseline's attention_distance profile against -perplexity" in text  # (b) for each profile probe


def test_ranking_of_four_schedules_is_said_to_be_unable_to_reach_alpha():
    """Four schedules: even identical rankings have exact p = 2/24; (c) says so rather than imply evidence."""
    assert X.permutation_p(X.kendall_tau, [1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(2 / 24)
    assert "inconclusive by design" in X._reach([300.0, 350.0, 450.0, 400.0])
    assert X._reach([1.0, 2.0, 3.0, 4.0, 5.0]) == ""  # five: identical rankings give p = 2/120
    text = "\n".join(X.answers(synthetic()))
    assert "No ranking of 4 schedules can reach alpha (identical rankings: exact p 0.083)" in text
