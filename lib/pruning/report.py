"""The tier-map figure written next to the pruning results (matplotlib, Agg backend, imported when it is drawn)."""

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
