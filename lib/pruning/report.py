"""Figures written next to results (matplotlib, Agg backend; imported lazily by callers)."""

from __future__ import annotations

from pathlib import Path

import torch


def representative_maps(tier_maps: dict[str, torch.Tensor], per_kind: int = 3) -> list[str]:
    """Names of a few matrices: first, middle and last layer of the first and last matrix kind."""
    names = list(tier_maps)
    kinds = list(dict.fromkeys(n.split(".", 3)[-1].split(".", 1)[-1] for n in names))
    chosen = []
    for kind in dict.fromkeys([kinds[0], kinds[-1]]):
        of_kind = [n for n in names if n.endswith("." + kind)]
        picks = [of_kind[0], of_kind[len(of_kind) // 2], of_kind[-1]][:per_kind]
        chosen += list(dict.fromkeys(picks))
    return chosen


def plot_tier_maps(tier_maps: dict[str, torch.Tensor], path: str | Path, title: str = "") -> None:
    """Heat maps of the tiers (dense / 2:4 / top-k) of a few representative matrices."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    names = representative_maps(tier_maps)
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.9 * rows), squeeze=False, layout="constrained")
    cmap = ListedColormap(["#1b5e20", "#64b5f6", "#e0e0e0"])
    for ax, name in zip(axes.flat, names):
        tiers = tier_maps[name].numpy()
        image = ax.imshow(tiers, cmap=cmap, vmin=-0.5, vmax=2.5, interpolation="nearest", aspect="auto")
        shares = [(tiers == t).mean() for t in range(3)]
        ax.set_title(f"{name}\ndense {shares[0]:.0%} · 2:4 {shares[1]:.0%} · top-k {shares[2]:.0%}", fontsize=8)
        ax.set_xlabel("input block")
        ax.set_ylabel("output block")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    cbar = fig.colorbar(image, ax=axes, ticks=[0, 1, 2], shrink=0.8)
    cbar.ax.set_yticklabels(["dense", "2:4", "top-k"])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_frontier(rows: list[dict], axes_keys: list[tuple[str, str, float]], fronts: dict[str, list[bool]], path: str | Path,
                  title: str = "") -> None:
    """PPL (log) against each cost in axes_keys [(row key, axis label, divisor)], every row labelled,
    the Pareto frontier of each panel (fronts[row key]) drawn as a line through its points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(axes_keys), figsize=(7 * len(axes_keys), 5.2), squeeze=False, layout="constrained")
    for ax, (key, label, divisor) in zip(axes[0], axes_keys):
        xs = [r[key] / divisor for r in rows]
        ys = [r["ppl"] for r in rows]
        on = fronts[key]
        ax.scatter([x for x, f in zip(xs, on) if not f], [y for y, f in zip(ys, on) if not f], color="#9e9e9e", zorder=2)
        front = sorted((x, y) for x, y, f in zip(xs, ys, on) if f)
        ax.plot(*zip(*front), "-o", drawstyle="steps-post", color="#c62828", zorder=3, label="Pareto frontier")
        for x, y, row in zip(xs, ys, rows):
            ax.annotate(row["configuration"], (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
        ax.set_yscale("log")
        ax.margins(x=0.15)
        ax.set_xlabel(label)
        ax.set_ylabel("WikiText-2 perplexity (log)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
