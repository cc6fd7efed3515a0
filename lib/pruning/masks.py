"""Pure mask math for Wanda-style pruning: scores, unstructured / N:M / three-tier keep masks.

Letters used in shapes: O = out_features, I = in_features, b = block_size,
R = ceil(O / b) block rows, C = ceil(I / b) block columns.
Polarity: a `keep` mask is a bool tensor, True = weight kept.
Tier codes in a tier map (uint8 [R, C]): DENSE = 0, NM = 1 (2:4), TOPK = 2 (lib.tiered.tier_map).

No modules, no devices, no logging: tensors in, new tensors out.
"""

from __future__ import annotations

import math

import torch

from lib.tiered.tier_map import (DEFAULT_BLOCK_SIZE, DEFAULT_TOPK_PER_BLOCK, DENSE, NM, TIER_NAMES, TOPK, check_block_size,
                                 check_ratios)
from lib.tiered.tiles import from_blocks, pad, to_blocks

INTRA_BLOCK_SCORES = ("method", "magnitude")  # inside 2:4 / top-k blocks: the ranking score, or |W|
INTRA_BLOCK_ALIASES = {"wanda": "method"}  # the spelling before other scores existed
DEFAULT_RATIOS = (0.35, 0.45, 0.2)  # block shares dense / 2:4 / top-k of the three-tier scheme


def wanda_score(weight: torch.Tensor, act_norm_sq: torch.Tensor) -> torch.Tensor:
    """Wanda importance |W| * ||X_j||: weight [O, I], act_norm_sq [I] (sum of x_j^2) -> float32 [O, I]."""
    if act_norm_sq.shape != weight.shape[1:]:
        raise ValueError(f"act_norm_sq has shape {tuple(act_norm_sq.shape)}, expected ({weight.shape[1]},) = in_features")
    return weight.float().abs() * act_norm_sq.float().sqrt().unsqueeze(0)


def ria_score(weight: torch.Tensor, act_norm_sq: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """RIA (Zhang et al., ICLR 2024): (|W_ij| / sum_j |W_ij| + |W_ij| / sum_i |W_ij|) * ||X_j||^alpha.

    The relative importance of a weight within its output row and its input column, times the
    input channel's activation norm to the power alpha (0.5 in the paper). weight [O, I],
    act_norm_sq [I] (sum of x_j^2, so ||X_j|| = sqrt) -> float32 [O, I].
    """
    if act_norm_sq.shape != weight.shape[1:]:
        raise ValueError(f"act_norm_sq has shape {tuple(act_norm_sq.shape)}, expected ({weight.shape[1]},) = in_features")
    magnitude = weight.float().abs()
    tiny = torch.finfo(torch.float32).tiny  # an all-zero row or column scores 0, not NaN
    relative = magnitude / magnitude.sum(1, keepdim=True).clamp_min(tiny) + magnitude / magnitude.sum(0, keepdim=True).clamp_min(tiny)
    return relative * act_norm_sq.float().sqrt().pow(alpha).unsqueeze(0)


def tier_counts(n_blocks: int, ratios: tuple[float, float, float]) -> tuple[int, int, int]:
    """Blocks per tier: floor(n * r1) dense, floor(n * r2) 2:4, the rest top-k."""
    n_dense = math.floor(n_blocks * ratios[0] + 1e-9)
    n_nm = min(math.floor(n_blocks * ratios[1] + 1e-9), n_blocks - n_dense)
    return n_dense, n_nm, n_blocks - n_dense - n_nm


def block_mean_scores(score: torch.Tensor, block_size: int) -> torch.Tensor:
    """Mean score of each block over its real elements: score [O, I] -> float32 [R, C]."""
    out_features, in_features = score.shape
    b = block_size
    sums = to_blocks(score.float(), b, 0.0).sum(dim=(2, 3))  # (R, C)
    row_sizes = torch.full((sums.shape[0],), b, dtype=torch.float32, device=score.device)
    col_sizes = torch.full((sums.shape[1],), b, dtype=torch.float32, device=score.device)
    row_sizes[-1] = out_features - b * (sums.shape[0] - 1)
    col_sizes[-1] = in_features - b * (sums.shape[1] - 1)
    return sums / (row_sizes[:, None] * col_sizes[None, :])


def rank_blocks(block_scores: torch.Tensor) -> torch.Tensor:
    """Flat block indices from best to worst; ties keep the lower index first. [R, C] -> long [R*C]."""
    return torch.sort(block_scores.flatten(), descending=True, stable=True).indices


def assign_tiers(block_scores: torch.Tensor, counts: tuple[int, int, int]) -> torch.Tensor:
    """Tier map from block ranking: the best counts[0] blocks DENSE, the next counts[1] NM, the rest TOPK.

    block_scores: [R, C]; returns uint8 [R, C].
    """
    n_dense, n_nm, n_topk = counts
    if n_dense + n_nm + n_topk != block_scores.numel() or min(counts) < 0:
        raise ValueError(f"tier counts {counts} do not partition {block_scores.numel()} blocks")
    order = rank_blocks(block_scores)
    tiers = torch.full((block_scores.numel(),), TOPK, dtype=torch.uint8, device=block_scores.device)
    tiers[order[:n_dense]] = DENSE
    tiers[order[n_dense : n_dense + n_nm]] = NM
    return tiers.view(block_scores.shape)


def assign_tiers_row_balanced(block_scores: torch.Tensor, counts: tuple[int, int, int]) -> torch.Tensor:
    """Tier map with the same block counts, spread evenly over block rows (output channels).

    Blocks are taken round-robin: every block row's best block first (best rows first),
    then every row's second best, and so on; the first counts[0] taken are DENSE, the
    next counts[1] NM, the rest TOPK. Each row's dense blocks are thus its best ones and
    no output channel loses all its blocks to top-k (Wanda's per-output comparison
    group, lifted to blocks). block_scores: [R, C]; returns uint8 [R, C].
    """
    n_dense, n_nm, n_topk = counts
    if n_dense + n_nm + n_topk != block_scores.numel() or min(counts) < 0:
        raise ValueError(f"tier counts {counts} do not partition {block_scores.numel()} blocks")
    flat = block_scores.flatten()
    by_score = torch.sort(flat, descending=True, stable=True).indices  # best first, ties by index
    rank_in_row = torch.sort(block_scores, dim=1, descending=True, stable=True).indices.argsort(dim=1).flatten()
    order = by_score[torch.sort(rank_in_row[by_score], stable=True).indices]  # round-robin by rank, then score
    tiers = torch.full((flat.numel(),), TOPK, dtype=torch.uint8, device=flat.device)
    tiers[order[:n_dense]] = DENSE
    tiers[order[n_dense : n_dense + n_nm]] = NM
    return tiers.view(block_scores.shape)


def expand_tier_map(tier_map: torch.Tensor, block_size: int, out_features: int, in_features: int) -> torch.Tensor:
    """Per-element tiers: uint8 [R, C] -> uint8 [O, I]."""
    full = tier_map.repeat_interleave(block_size, 0).repeat_interleave(block_size, 1)
    return full[:out_features, :in_features]


def _best_n_of_groups(groups: torch.Tensor, n: int) -> torch.Tensor:
    """Keep the n best entries of each group along the last dim: [..., m] -> bool [..., m].

    Ranks come from the m(m-1)/2 pairwise comparisons (vectorized over all groups);
    ties go to the lower index, so exactly min(n, m) entries are kept, deterministically.
    """
    m = groups.shape[-1]
    cols = groups.unbind(-1)
    ranks = [torch.zeros(cols[0].shape, dtype=torch.uint8, device=groups.device) for _ in range(m)]
    for i in range(m):
        for j in range(i + 1, m):
            j_wins = cols[j] > cols[i]
            ranks[i] += j_wins
            ranks[j] += ~j_wins
    return torch.stack(ranks, dim=-1) < n


def nm_keep(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the best n of every m consecutive weights along the input dimension.

    score: [O, I]; returns bool [O, I]. A trailing group of r < m columns keeps min(n, r).
    Ties are broken towards the lower column index, so the result is deterministic.
    """
    if not 0 < n <= m:
        raise ValueError(f"N:M sparsity needs 0 < N <= M, got {n}:{m}")
    out_features, in_features = score.shape
    groups = -(-in_features // m)
    s = pad(score.float(), out_features, groups * m, -math.inf).view(out_features, groups, m)  # (O, G, m)
    return _best_n_of_groups(s, n).view(out_features, groups * m)[:, :in_features]


def unstructured_keep(score: torch.Tensor, sparsity: float, per_row: bool = True) -> torch.Tensor:
    """Unstructured mask: Wanda's per output row (prune floor(I * sparsity) lowest scores in each
    row), or SparseGPT's over the whole tensor (prune round(O * I * sparsity) lowest), which
    stays exact when applied to narrow column chunks.

    score: [O, I]; returns bool [O, I].
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"--sparsity_ratio must be in [0, 1), got {sparsity}")
    if not per_row:
        n_prune = round(score.numel() * sparsity)
        keep = torch.ones(score.numel(), dtype=torch.bool, device=score.device)
        if n_prune:
            keep[score.float().flatten().topk(n_prune, largest=False).indices] = False
        return keep.view_as(score)
    n_prune = int(score.shape[1] * sparsity)
    keep = torch.ones_like(score, dtype=torch.bool)
    if n_prune:
        keep.scatter_(1, score.float().topk(n_prune, dim=1, largest=False).indices, False)
    return keep


def three_tier_keep(score: torch.Tensor, tier_map: torch.Tensor, block_size: int, topk_per_block: int) -> torch.Tensor:
    """Keep mask for a given tier map: dense blocks whole, 2:4 in NM blocks, top-k in TOPK blocks.

    Works in block space so each rule only touches the blocks of its tier.
    score: [O, I] (the intra-block metric); tier_map: uint8 [R, C]; returns bool [O, I].
    """
    if topk_per_block < 0:
        raise ValueError(f"--topk_per_block must be >= 0, got {topk_per_block}")
    b = block_size
    blocks = to_blocks(score.float(), b, -math.inf).reshape(-1, b, b)  # (R*C, b, b); padding never wins
    tiers = tier_map.flatten()
    keep = torch.zeros(blocks.shape, dtype=torch.bool, device=score.device)  # (R*C, b, b)
    keep[tiers == DENSE] = True
    nm = (tiers == NM).nonzero().squeeze(1)
    if nm.numel():
        groups = blocks[nm].view(-1, b, b // 4, 4)  # (n_nm, b, b/4, 4): groups of 4 along the input dim
        keep[nm] = _best_n_of_groups(groups, 2).view(-1, b, b)
    topk = (tiers == TOPK).nonzero().squeeze(1)
    k = min(topk_per_block, b * b)
    if topk.numel() and k:
        flat = blocks[topk].view(-1, b * b)  # (n_topk, b*b)
        keep[topk] = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, flat.topk(k, dim=1, sorted=False).indices, True).view(-1, b, b)
    n_rows, n_cols = tier_map.shape
    return from_blocks(keep.view(n_rows, n_cols, b, b), *score.shape)


def three_tier_mask(
    weight: torch.Tensor,
    act_norm_sq: torch.Tensor | None,
    ratios: tuple[float, float, float] = DEFAULT_RATIOS,
    block_size: int = DEFAULT_BLOCK_SIZE,
    topk_per_block: int = DEFAULT_TOPK_PER_BLOCK,
    intra_block_score: str = "method",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Three-tier block mask of one weight matrix.

    Blocks are ranked by mean Wanda score (|W| alone when act_norm_sq is None);
    exactly floor(n*r1) become dense, floor(n*r2) 2:4, the rest keep their top-k.

    Args:
        weight: [O, I].
        act_norm_sq: [I] per-input-channel sum of squared activations, or None for magnitude.
    Returns:
        keep: bool [O, I]; tier_map: uint8 [R, C].
    """
    check_ratios(ratios, "--sparsity_ratios")
    check_block_size(block_size, "--block_size")
    intra_block_score = INTRA_BLOCK_ALIASES.get(intra_block_score, intra_block_score)
    if intra_block_score not in INTRA_BLOCK_SCORES:
        raise ValueError(f"--intra_block_score {intra_block_score!r} is not one of {', '.join(INTRA_BLOCK_SCORES)}")
    score = weight.float().abs() if act_norm_sq is None else wanda_score(weight, act_norm_sq)
    block_scores = block_mean_scores(score, block_size)
    tier_map = assign_tiers(block_scores, tier_counts(block_scores.numel(), ratios))
    intra = score if intra_block_score == "method" else weight.float().abs()
    return three_tier_keep(intra, tier_map, block_size, topk_per_block), tier_map


def tier_histogram(tier_map: torch.Tensor) -> dict[str, int]:
    """Number of blocks per tier name."""
    counts = torch.bincount(tier_map.flatten().long(), minlength=3).tolist()
    return dict(zip(TIER_NAMES, counts))
