"""Tier allocation: how many dense / 2:4 / top-k blocks each matrix gets (pure functions).

Scopes (`--tier_scope`):
  matrix: every matrix gets floor(n*r1) dense and floor(n*r2) 2:4 blocks of its own n blocks.
  row:    the same counts per matrix, spread evenly over its block rows (output channels)
          so that no output channel loses all its blocks to top-k.
  layer:  blocks of all matrices of a decoder layer are ranked together; the layer gets
          floor(N*r1) / floor(N*r2) of its N blocks.
  model:  blocks of the whole (dense) model are ranked together once, which fixes each
          layer's tier shares; inside a layer blocks are then ranked jointly as in `layer`.
OWL (`--owl`, Yin et al. 2023) shifts blocks between the top-k and dense tiers of each
layer in proportion to the layer's activation-outlier ratio, with zero mean over layers.
"""

from __future__ import annotations

from typing import Any

import torch

from lib.pruning.masks import rank_blocks, tier_counts
from lib.tiered.tier_map import DENSE, NM, TOPK

Counts = tuple[int, int, int]  # (dense, 2:4, top-k) blocks
Ratios = tuple[float, float, float]


def joint_counts(block_scores: dict[str, torch.Tensor], totals: Counts) -> dict[str, Counts]:
    """Rank the blocks of several matrices together and count each matrix's blocks per tier.

    block_scores: {name: [R, C]} mean block scores; totals: tier sizes of the joint ranking.
    """
    names = list(block_scores)
    sizes = [block_scores[n].numel() for n in names]
    if sum(totals) != sum(sizes):
        raise ValueError(f"tier totals {totals} do not partition {sum(sizes)} blocks")
    flat = torch.cat([block_scores[n].flatten().float().cpu() for n in names])
    owner = torch.repeat_interleave(torch.arange(len(names)), torch.tensor(sizes))
    tiers = torch.full_like(owner, TOPK)
    order = rank_blocks(flat)
    tiers[order[: totals[0]]] = DENSE
    tiers[order[totals[0] : totals[0] + totals[1]]] = NM
    counts = torch.zeros(len(names), 3, dtype=torch.long).index_put_((owner, tiers), torch.ones_like(owner), accumulate=True)
    return {n: tuple(int(c) for c in counts[i]) for i, n in enumerate(names)}


def outlier_ratio(scores: list[torch.Tensor], owl_m: float) -> float:
    """OWL's layer outlier ratio: share of Wanda scores above owl_m times their mean (all matrices of a layer)."""
    flat = torch.cat([s.flatten().float() for s in scores])
    return (flat > owl_m * flat.mean()).float().mean().item()


def owl_shifts(ratios_by_layer: list[float], owl_lambda: float, keep_fraction_topk: float) -> list[float]:
    """Per-layer share of blocks to move from top-k to dense (negative: dense to top-k).

    OWL maps outlier ratios linearly onto densities in [-lambda, lambda] around zero mean;
    one block moved from top-k to dense adds (1 - keep_fraction_topk) of its weights, so
    the block share is the density shift divided by that.
    """
    d = torch.tensor(ratios_by_layer, dtype=torch.float64)
    spread = d.max() - d.min()
    if spread <= 0:
        return [0.0] * len(ratios_by_layer)
    density = (d - d.min()) / spread * 2 * owl_lambda
    density -= density.mean()
    return (density / (1.0 - keep_fraction_topk)).tolist()


def shifted_ratios(base: list[Ratios], shifts: list[float], weights: list[int]) -> list[Ratios]:
    """Move shifts[l] of layer l's blocks from top-k to dense, keeping the global shares exact.

    A layer cannot give more dense blocks than it has (shift >= -r1) nor take more top-k
    blocks than it has (shift <= r3); the clamped excess is spread over the other layers
    by adding one constant c to every shift, with c found by bisection so that the
    block-weighted shifts still sum to zero.
    """
    lows = torch.tensor([-r[0] for r in base], dtype=torch.float64)
    highs = torch.tensor([r[2] for r in base], dtype=torch.float64)
    s = torch.tensor(shifts, dtype=torch.float64)
    w = torch.tensor(weights, dtype=torch.float64)

    def net(c: float) -> float:
        return float((torch.minimum(torch.maximum(s + c, lows), highs) * w).sum())

    lo, hi = -1.0, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if net(mid) < 0 else (lo, mid)
    final = torch.minimum(torch.maximum(s + (lo + hi) / 2, lows), highs).tolist()
    return [(r[0] + d, r[1], r[2] - d) for r, d in zip(base, final)]


def layer_ratios_from_counts(counts: dict[str, Counts]) -> Ratios:
    """Tier shares of a layer given its matrices' block counts."""
    total = torch.tensor([c for c in counts.values()], dtype=torch.float64).sum(0)
    return tuple((total / total.sum()).tolist())


def matrix_counts(
    block_scores: dict[str, torch.Tensor], ratios: Ratios, scope: str
) -> dict[str, Counts]:
    """Blocks per tier for each matrix of one layer, given the layer's tier shares.

    scope "matrix" / "row": floor per matrix; "layer" / "model": joint ranking inside the layer.
    """
    if scope in ("matrix", "row"):
        return {n: tier_counts(s.numel(), ratios) for n, s in block_scores.items()}
    total = sum(s.numel() for s in block_scores.values())
    return joint_counts(block_scores, tier_counts(total, ratios))


def plan_layer_ratios(
    block_scores: list[dict[str, torch.Tensor]], outliers: list[float], config: Any
) -> list[tuple[float, float, float]]:
    """Per-layer tier shares from the model-wide ranking and/or OWL shifts."""
    n_layers = len(block_scores)
    if config.tier_scope == "model":
        flat = {f"{i}.{n}": s for i, layer in enumerate(block_scores) for n, s in layer.items()}
        total = sum(s.numel() for s in flat.values())
        counts = joint_counts(flat, tier_counts(total, config.ratios))
        ratios = [
            layer_ratios_from_counts({n: counts[f"{i}.{n}"] for n in block_scores[i]}) for i in range(n_layers)
        ]
    else:
        ratios = [config.ratios] * n_layers
    if config.owl:
        keep_fraction = min(config.topk_per_block, config.block_size**2) / config.block_size**2
        shifts = owl_shifts(outliers, config.owl_lambda, keep_fraction)
        sizes = [sum(s.numel() for s in layer.values()) for layer in block_scores]
        ratios = shifted_ratios(ratios, shifts, sizes)
    return ratios
