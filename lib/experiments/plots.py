"""The experiment figures (matplotlib, Agg backend, imported when a figure is drawn): results.png of the
experiment summary (`plot_results`) and the cost / quality frontier of scripts/plot_frontier.py
(`plot_frontier`). No torch."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from lib.core.files import atomic_write
from lib.core.uncertainty import mean_sd
from lib.experiments.rows import Group, Row, group_rows
from lib.experiments.summary import present_metrics, summary_metrics

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def error_bar(group: Group, task: str, key: str) -> tuple[float, float]:
    """(below, above) the bar: ± sd over seeds for several seeds, else the 95% interval of the one run
    (perplexity: its exp(nll ± 1.96 se) interval; other metrics ± 1.96 stderr); (nan, nan) when unknown."""
    values = group.values(task, key)
    mean, sd = mean_sd(values) if values else (float("nan"), None)
    if len(values) > 1:
        return sd, sd
    metrics = group.runs[0].metrics
    if key == "ppl" and (task, "ppl_ci95_low") in metrics:
        return mean - metrics[(task, "ppl_ci95_low")], metrics[(task, "ppl_ci95_high")] - mean
    stderr = metrics.get((task, key + "_stderr"), float("nan"))
    return 1.96 * stderr, 1.96 * stderr


def plot_results(rows: list[Row], path: str | Path) -> None:
    """Grouped bars per metric: each fine-tuned row next to its pruned model before fine-tuning; dense as a line.

    With no fine-tuned rows, the pruned rows alone. Error bars: ± sd over seeds for rows with several
    seeds, else the one run's 95% interval (`error_bar`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    all_groups = group_rows(rows)
    by_name = {g.name: g for g in all_groups}
    finetuned = [g for g in all_groups if g.kind == "finetuned"]
    groups = [(g.label, by_name.get(g.reference), g) for g in finetuned] or \
             [(g.label, None, g) for g in all_groups if g.kind == "pruned"]
    dense = next((g for g in all_groups if g.kind == "dense"), None)
    metrics = present_metrics(all_groups, summary_metrics(rows))
    cols = 4
    n_rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(4.4 * cols, 3.4 * n_rows), squeeze=False)
    x = range(len(groups))
    width = 0.4
    for ax, metric in zip(axes.flat, metrics):
        task, key, header, kind = metric.task, metric.key, metric.header, metric.format
        scale = 100 if kind == "pct" else 1

        def bars(members: list[Group | None]) -> tuple[list[float], list[list[float]]]:
            heights = [scale * (g.mean(task, key) if g and g.mean(task, key) is not None else float("nan"))
                       for g in members]
            errors = [[scale * e for e in (error_bar(g, task, key) if g else (float("nan"),) * 2)] for g in members]
            return heights, [list(side) for side in zip(*errors)]  # (2, n): below, above

        bar_style = {"capsize": 2, "error_kw": {"elinewidth": 0.8}}
        after, after_err = bars([g for _, _, g in groups])
        if finetuned:
            before, before_err = bars([ref for _, ref, _ in groups])
            ax.bar([i - width / 2 for i in x], before, width, yerr=before_err, color="#bdbdbd", label="pruned, before FT",
                   **bar_style)
            ax.bar([i + width / 2 for i in x], after, width, yerr=after_err, color="#1565c0", label="after FT", **bar_style)
        else:
            ax.bar(list(x), after, width, yerr=after_err, color="#bdbdbd", label="pruned, before FT", **bar_style)
        if dense is not None and dense.values(task, key):
            ax.axhline(scale * dense.mean(task, key), color="#c62828", linestyle="--", linewidth=1.2, label="dense")
        ax.set_title(header + (" (%)" if kind == "pct" else ""), fontsize=9)
        ax.set_xticks(list(x))
        ax.set_xticklabels([label for label, _, _ in groups], rotation=45, ha="right", fontsize=7)
        if kind == "ppl":
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", fontsize=8)
    fig.suptitle("Calibration data x fine-tuning data (labels: experiment rows; error bars: 95% interval of one run, "
                 "± sd over seeds for seeded rows)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.92, 0.95))
    save_figure(fig, path)


def save_figure(fig: Figure, path: str | Path) -> None:
    """Write `fig` to `path` atomically (`lib.core.files.atomic_write`: a failure leaves what was there), in the
    format of the path's suffix (png without one), then close it."""
    import matplotlib.pyplot as plt

    image_format = Path(path).suffix.lstrip(".").lower() or "png"
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format=image_format))
    finally:
        plt.close(fig)


def label_offsets(xs: list[float], ys: list[float], step: float = 8.0) -> list[float]:
    """Vertical label offsets (points) that stack the labels of points crowded together (x within 2% of the x
    range, log y within 4% of the log y range), lowest point first, so that their labels do not overlap."""
    span_x = (max(xs) - min(xs)) or 1.0
    logs = [math.log(y) for y in ys]
    span_y = (max(logs) - min(logs)) or 1.0
    offsets = [3.0] * len(xs)
    placed: list[int] = []
    for i in sorted(range(len(xs)), key=lambda i: logs[i]):
        crowd = [j for j in placed if abs(xs[j] - xs[i]) < 0.02 * span_x and abs(logs[j] - logs[i]) < 0.04 * span_y]
        if crowd:
            offsets[i] = max(offsets[j] for j in crowd) + step
        placed.append(i)
    return offsets


def plot_frontier(rows: list[dict], axes_keys: list[tuple[str, str, float]], fronts: dict[str, list[bool]], path: str | Path,
                  title: str = "", established: bool = False) -> None:
    """PPL (log) against each cost in axes_keys [(row key, axis label, divisor)], every row labelled,
    the Pareto frontier of each panel (fronts[row key]) drawn as a line through its points, and ± the sd
    over seeds as bars for rows that have one ("ppl_sd"). established: the fronts come from tests over seeds
    (`lib.tiered.cost.established_front`), which need not be monotone: their points are marked, not joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(axes_keys), figsize=(7 * len(axes_keys), 5.2), squeeze=False, layout="constrained")
    for ax, (key, label, divisor) in zip(axes[0], axes_keys):
        xs = [r[key] / divisor for r in rows]
        ys = [r["ppl"] for r in rows]
        on = fronts[key]
        sds = [r.get("ppl_sd") for r in rows]  # bench_quality's sample sd over seeds (None with one seed)
        if any(sd is not None for sd in sds):
            ax.errorbar(xs, ys, yerr=[sd or 0.0 for sd in sds], fmt="none", ecolor="#616161", elinewidth=0.8, capsize=2,
                        zorder=1, label="± sd over seeds")
        ax.scatter([x for x, f in zip(xs, on) if not f], [y for y, f in zip(ys, on) if not f], color="#9e9e9e", zorder=2)
        front = sorted((x, y) for x, y, f in zip(xs, ys, on) if f)
        if established:
            ax.scatter(*zip(*front), color="#c62828", zorder=3,
                       label="not dominated by an established difference (Welch, Holm)")
        else:
            ax.plot(*zip(*front), "-o", drawstyle="steps-post", color="#c62828", zorder=3, label="Pareto frontier")
        for (x, y), offset, row in zip(zip(xs, ys), label_offsets(xs, ys), rows):
            ax.annotate(row["configuration"], (x, y), textcoords="offset points", xytext=(4, offset), fontsize=7,
                        arrowprops={"arrowstyle": "-", "color": "#bdbdbd", "lw": 0.5} if offset > 3 else None)
        ax.set_yscale("log")
        ax.margins(x=0.15)
        ax.set_xlabel(label)
        ax.set_ylabel("WikiText-2 perplexity (log)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    save_figure(fig, path)
