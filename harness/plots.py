"""The drawing functions of Figures 1-11 (matplotlib, headless). Each returns a ``Figure``.

Spec-only figures take no data; the others take ``rows`` = ``[(Row, [record, ...]), ...]`` of one
protocol (``harness.report.match``) and the protocol's title.
"""

from __future__ import annotations

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from backends.spec.config import SCHEDULES, ModelConfig, ScheduleConfig  # noqa: E402
from harness.experiments import get  # noqa: E402
from harness.report import seed_stats  # noqa: E402


def _label(row) -> str:
    return " / ".join(row.labels.values())


def _mean_curve(records: list[dict], field: str) -> np.ndarray:
    curves = [[e[field] for e in r["epochs"]] for r in records]
    n = min(len(c) for c in curves)
    return np.mean([c[:n] for c in curves], axis=0)


def schedules(title: str = "") -> plt.Figure:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, size in zip(axes, ("small", "large")):
        for name in SCHEDULES:
            counts = ModelConfig(size=size, schedule=ScheduleConfig(name)).experts_per_layer()
            ax.plot(range(len(counts)), counts, marker="o", label=name)
        ax.set(title=f"{size.capitalize()} (E_max 8, E_min 1)", xlabel="layer", ylabel="experts E_l")
        ax.set_xticks(range(len(counts)))
    axes[1].legend(fontsize=8)
    fig.suptitle("Expert schedules (spec.schedules, Eq. 8-12)")
    return fig


def architecture(title: str = "") -> plt.Figure:
    cfg = ModelConfig(size="small", schedule=ScheduleConfig("descending"))
    counts = cfg.experts_per_layer()
    fig, ax = plt.subplots(figsize=(10, 4))
    blocks = (
        ["input\n784→128"]
        + [f"DynaMoE\nlayer {i}\n{e} expert{'s' * (e > 1)}" for i, e in enumerate(counts)]
        + ["LayerNorm", "head\n128→10"]
    )
    for i, text in enumerate(blocks):
        ax.add_patch(plt.Rectangle((i * 1.6, 0), 1.3, 1.0, fill=False))
        ax.text(i * 1.6 + 0.65, 0.5, text, ha="center", va="center", fontsize=8)
        if i:
            ax.annotate("", xy=(i * 1.6, 0.5), xytext=(i * 1.6 - 0.3, 0.5), arrowprops={"arrowstyle": "->"})
        if 1 <= i <= len(counts):
            for j in range(counts[i - 1]):
                ax.add_patch(plt.Rectangle((i * 1.6 + 0.1 + j * 0.14, 1.15), 0.1, 0.25, color="tab:blue"))
    ax.set(xlim=(-0.2, len(blocks) * 1.6), ylim=(-0.2, 1.6), title="Descending schedule, Small: residual DynaMoE layers")
    ax.axis("off")
    return fig


def activation(rows, title: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for row, recs in rows:
        if recs and recs[0]["summary"]["layers"]:
            active = np.mean([[lay["avg_active"] for lay in r["summary"]["layers"]] for r in recs], axis=0)
            ax.plot(range(len(active)), active, marker="o", label=_label(row))
    ax.set(xlabel="layer", ylabel="average active experts per token", title=title)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    return fig


def _accuracy_spread(recs) -> tuple[float, float]:
    """Mean and sample std of the test accuracy in %, as the tables give them (std NaN for one seed: no whisker)."""
    mean, std, _ = seed_stats([100 * r["summary"]["accuracy"] for r in recs])
    return mean, std


def size_bars(rows, title: str) -> plt.Figure:
    """Bars: the mean over seeds; whiskers: one sample std. The axis is cut to the data, since the
    configurations differ by tenths of a percent; a size without runs is marked, not left blank."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    sizes = list(dict.fromkeys(r.labels["size"] for r, _ in rows))
    configs = list(dict.fromkeys(r.labels["config"] for r, _ in rows))
    width = 0.8 / len(configs)
    shown = []
    for j, config in enumerate(configs):
        found = [next((recs for r, recs in rows if r.labels == {"size": s, "config": config} and recs), []) for s in sizes]
        means, stds = zip(*(_accuracy_spread(recs) for recs in found))
        shown += [m for m in means if not np.isnan(m)]
        x = np.arange(len(sizes)) + width * (j - (len(configs) - 1) / 2)
        ax.bar(x, means, width=width, yerr=stds, capsize=3, label=config)
    seeds = [max((len(recs) for r, recs in rows if r.labels["size"] == s), default=0) for s in sizes]
    ax.set_xticks(range(len(sizes)), [f"{s}\n{n} seed{'s' * (n != 1)}" if n else f"{s}\nnot run" for s, n in zip(sizes, seeds)])
    if shown:
        ax.set_ylim(np.floor(min(shown)) - 1, np.ceil(max(shown)) + 1)
    ax.set(ylabel="test accuracy % (axis cut)", title=title)
    ax.legend(loc="lower right", fontsize=8)
    return fig


MIN_SEEDS_FILLED = 3  # a point over at least this many seeds is drawn filled; fewer: hollow


def _seed_markers(ax, xs, ys, counts, color, marker: str = "o") -> None:
    """Points filled where they are means over >= MIN_SEEDS_FILLED seeds, hollow where over fewer."""
    for x, y, n in zip(xs, ys, counts):
        filled = n >= MIN_SEEDS_FILLED
        ax.plot([x], [y], marker=marker, linestyle="none", color=color, markerfacecolor=color if filled else "white", markersize=7)


def _seed_legend(ax, counts) -> None:
    """A legend entry per marker style in use, beside the configurations' entries."""
    handles, labels = ax.get_legend_handles_labels()
    styles = []
    if any(n >= MIN_SEEDS_FILLED for n in counts):
        styles.append((True, f"filled: ≥ {MIN_SEEDS_FILLED} seeds"))
    if any(n < MIN_SEEDS_FILLED for n in counts):
        low = sorted({n for n in counts if n < MIN_SEEDS_FILLED})
        styles.append((False, f"hollow: {', '.join(map(str, low))} seed{'s' * (low != [1])}"))
    for filled, text in styles:
        handles.append(plt.Line2D([], [], marker="o", linestyle="none", color="grey", markerfacecolor="grey" if filled else "white"))
        labels.append(text)
    ax.legend(handles, labels, fontsize=8)


def size_scaling(rows, title: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    counts = []
    for config in dict.fromkeys(r.labels["config"] for r, _ in rows):
        pts = sorted(
            (recs[0]["summary"]["params"], *_accuracy_spread(recs), len(recs)) for r, recs in rows if r.labels["config"] == config and recs
        )
        if pts:
            params, means, stds, ns = zip(*pts)
            bars = ax.errorbar(params, means, yerr=stds, capsize=3, label=config)
            _seed_markers(ax, params, means, ns, bars.lines[0].get_color())
            counts += ns
    ax.set(xscale="log", xlabel="parameters", ylabel="test accuracy % (mean ± 1 std over seeds)", title=title)
    _seed_legend(ax, counts)
    return fig


def lm_sizes(rows, title: str) -> plt.Figure:
    """Mean best perplexity per size and configuration; the marker says over how many seeds (filled: at
    least MIN_SEEDS_FILLED, hollow: fewer), since the sizes are run with different numbers of seeds."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    counts = []
    sizes = list(dict.fromkeys(r.labels["size"] for r, recs in rows if recs))
    for config in dict.fromkeys(r.labels["config"] for r, _ in rows):
        pts = [
            (sizes.index(r.labels["size"]), np.mean([x["summary"]["best_ppl"] for x in recs]), len(recs))
            for r, recs in rows
            if r.labels["config"] == config and recs
        ]
        if pts:
            xs, ys, ns = zip(*pts)
            (line,) = ax.plot(xs, ys, label=config)
            _seed_markers(ax, xs, ys, ns, line.get_color())
            counts += ns
    ax.set_xticks(range(len(sizes)), sizes)
    ax.set(ylabel="best validation perplexity (mean over seeds)", yscale="log", title=title)
    _seed_legend(ax, counts)
    return fig


def lm_dynamics(rows, title: str) -> plt.Figure:
    sizes = list(dict.fromkeys(r.labels["size"] for r, recs in rows if recs))
    fig, axes = plt.subplots(1, max(1, len(sizes)), figsize=(5 * max(1, len(sizes)), 4), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        for row, recs in rows:
            if row.labels["size"] == size and recs:
                curve = _mean_curve(recs, "perplexity")
                ax.plot(range(1, len(curve) + 1), curve, marker="o", markersize=3, label=row.labels["config"])
        ax.set(title=size, xlabel="epoch", ylabel="validation perplexity", yscale="log")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def lm_overview(rows, title: str) -> plt.Figure:
    done = [(r, recs) for r, recs in rows if recs]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.5))
    names = [_label(r) for r, _ in done]
    for ax, (field, label) in zip(axes, (("best_ppl", "best val PPL"), ("final_ppl", "final val PPL"), ("best_accuracy", "best val acc"))):
        ax.barh(names, [np.mean([x["summary"][field] for x in recs]) for _, recs in done])
        ax.set(xlabel=label)
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def usage_heatmap(rows, title: str) -> plt.Figure:
    recs = next((recs for _, recs in rows if recs), [])
    layers = recs[0]["summary"]["layers"] if recs else []
    width = max((lay["experts"] for lay in layers), default=1)
    grid = np.full((len(layers), width), np.nan)
    for i in range(len(layers)):
        usage = np.mean([r["summary"]["layers"][i]["usage"] for r in recs], axis=0)
        grid[i, : len(usage)] = usage
    fig, ax = plt.subplots(figsize=(7, 3.5))
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, label="share of the layer's selections")
    ax.set(xlabel="expert", ylabel="layer", title=title, xticks=range(width), yticks=range(len(layers)))
    return fig


def _curves(rows, title: str, field: str, ylabel: str, scale: float = 1.0) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for row, recs in rows:
        if recs:
            curve = scale * _mean_curve(recs, field)
            ax.plot(range(1, len(curve) + 1), curve, marker="o", markersize=3, label=_label(row))
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    return fig


def loss_curves(rows, title: str) -> plt.Figure:
    return _curves(rows, title, "train_loss", "training loss")


def accuracy_curves(rows, title: str) -> plt.Figure:
    return _curves(rows, title, "test_accuracy", "test accuracy %", 100.0)


# --- the Transformer backbone (``harness.experiments.transformer``) ----------------------------------------

TRANSFORMER_PROBES = (
    ("attention_entropy", "attention entropy (nats)"),
    ("attention_distance", "attention distance (positions)"),
    ("head_specialisation", "head specialisation (JS, bits)"),
    ("feature_load", "feature load (participation ratio)"),
    ("superposition_pressure", "superposition pressure"),
)


def transformer_probes(rows, title: str) -> plt.Figure:
    """Each probe across depth (mean over seeds), one line per schedule, one row of panels per size."""
    sizes = list(dict.fromkeys(r.labels["size"] for r, recs in rows if recs))
    fig, axes = plt.subplots(len(sizes), len(TRANSFORMER_PROBES), figsize=(3.4 * len(TRANSFORMER_PROBES), 3.0 * len(sizes)), squeeze=False)
    for i, size in enumerate(sizes):
        for j, (probe, label) in enumerate(TRANSFORMER_PROBES):
            ax = axes[i, j]
            for row, recs in rows:
                runs = [x["summary"]["probes"] for x in recs if x.get("summary", {}).get("probes")]
                if row.labels["size"] != size or not runs:
                    continue
                values = np.array([[np.nan if layer.get(probe) is None else layer[probe] for layer in run] for run in runs], dtype=float)
                ax.plot(np.arange(values.shape[1]), np.nanmean(values, axis=0), marker="o", label=row.labels["config"])
            ax.set(xlabel="layer", title=f"{size}: {label}")
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes[0, -1].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def transformer_ppl(rows, title: str, beside: list[dict] = ()) -> plt.Figure:
    """Best validation perplexity per schedule (mean over seeds, the seeds as dots) per size: the
    Transformer's, beside our MLP-backbone runs of Table 5 (``beside``; per size the runs of one protocol,
    ``transformer.one_protocol``) and the paper's Table 5 numbers on its own corpus (its best val PPL)."""
    from harness.experiments.transformer import one_protocol, run_label

    paper = {(p["size"], p["config"].replace("MLP", "Dense FFN")): float(p["best_ppl"]) for p in get("table5").paper}
    sizes = list(dict.fromkeys(r.labels["size"] for r, recs in rows if recs))
    fig, axes = plt.subplots(1, len(sizes), figsize=(6.5 * len(sizes), 5.0), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        configs = [row.labels["config"] for row, recs in rows if row.labels["size"] == size and recs]
        mlp = one_protocol([r for r in beside if run_label(r)[0] == size], [c.replace("Dense FFN", "MLP") for c in configs])
        sides = {"Transformer (ours)": {}, "MLP backbone (ours, Table 5)": {}}
        for row, recs in rows:
            if row.labels["size"] == size and recs:
                sides["Transformer (ours)"][row.labels["config"]] = [x["summary"]["best_ppl"] for x in recs]
        for r in mlp:
            config = run_label(r)[1].replace("MLP", "Dense FFN")
            sides["MLP backbone (ours, Table 5)"].setdefault(config, []).append(r["summary"]["best_ppl"])
        if mlp:
            epochs, patience = mlp[0]["spec"]["train"]["epochs"], mlp[0]["spec"]["train"].get("patience")
            sides[f"MLP backbone (ours, Table 5, {epochs} epochs" + (f", patience {patience})" if patience else ")")] = sides.pop(
                "MLP backbone (ours, Table 5)"
            )
        else:
            sides.pop("MLP backbone (ours, Table 5)")
        sides["MLP backbone (paper, Table 5, on its own corpus)"] = {c: [paper[(size, c)]] for c in configs if (size, c) in paper}
        xs = np.arange(len(configs))
        width = 0.8 / len(sides)
        for i, (name, values) in enumerate(sides.items()):
            offset = (i - (len(sides) - 1) / 2) * width
            ax.bar(xs + offset, [np.mean(values[c]) if c in values else np.nan for c in configs], width=width, label=name)
            if "ours" in name:
                for x, c in zip(xs, configs):
                    ax.scatter([x + offset] * len(values.get(c, [])), values.get(c, []), color="k", s=8, zorder=3)
        ax.set_xticks(xs, configs, rotation=30, ha="right")
        ax.set(ylabel="best validation perplexity", yscale="log", title=size)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.45))
    fig.suptitle(title)
    fig.tight_layout()
    return fig
