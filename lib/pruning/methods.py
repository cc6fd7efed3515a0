"""Registries of pruning scores and sparsity patterns: a new score or pattern is one entry.

A `Score` says which input statistic of each Linear it needs (a lib.pruning.stats accumulator class,
None for weights only) and how it turns weight [O, I] + statistic into an importance [O, I]
(float32, larger = keep). `reconstruct=True` marks a method that, besides ranking, rewrites the
kept weights (SparseGPT: OBS updates under the same pattern). A `Pattern` gives the mask rule
for a chunk of columns (see lib.pruning.sparsegpt.ChunkSelector) and the chunk width; the driver in
lib.pruning.driver applies it to whole matrices (Wanda, magnitude, ...) or chunk by chunk (SparseGPT),
so every score and SparseGPT run over every pattern.

Register from outside `lib` the same way: `SCORES["mine"] = Score(ActNormStats, my_score, "...")`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from lib.pruning.masks import nm_keep, ria_score, three_tier_keep, unstructured_keep, wanda_score
from lib.pruning.sparsegpt import ChunkSelector
from lib.pruning.stats import ActNormStats, HessianStats


@dataclass(frozen=True)
class Score:
    stats_class: type | None  # accumulator of each Linear's inputs it needs; None: weights only
    score: Callable[[torch.Tensor, Any], torch.Tensor]  # (weight [O, I], statistic or None) -> float32 [O, I]
    help: str
    reconstruct: bool = False  # SparseGPT: also rewrites the kept weights (needs HessianStats)


@dataclass(frozen=True)
class Pattern:
    selector: Callable[[Any, torch.Tensor | None], tuple[ChunkSelector, int]]  # (config, tier map) -> (rule, width)
    help: str
    tiers: bool = False  # needs a tier map per matrix (ranked blocks)
    row_wise: bool = False  # each row's rule is independent of the others (N:M): stacked matrices share one run


SCORES: dict[str, Score] = {
    "wanda": Score(ActNormStats, lambda weight, stats: wanda_score(weight, stats.act_norm_sq),
                   "|W_ij| * ||X_j|| (Wanda)"),
    "magnitude": Score(None, lambda weight, stats: weight.float().abs(), "|W_ij|"),
    "ria": Score(ActNormStats, lambda weight, stats: ria_score(weight, stats.act_norm_sq), "RIA: relative importance x ||X_j||^0.5"),
    "sparsegpt": Score(HessianStats, lambda weight, stats: wanda_score(weight, stats.act_norm_sq),
                       "SparseGPT: OBS reconstruction of the kept weights (blocks ranked by Wanda)", reconstruct=True),
}


def _three_tier(config, tier_map: torch.Tensor | None) -> tuple[ChunkSelector, int]:
    b, k = config.block_size, config.topk_per_block

    def select(score: torch.Tensor, first_column: int) -> torch.Tensor:
        columns = slice(first_column // b, first_column // b + math.ceil(score.shape[1] / b))
        return three_tier_keep(score, tier_map[:, columns], b, k)

    return select, b


def _unstructured(config, tier_map: torch.Tensor | None) -> tuple[ChunkSelector, int]:
    # SparseGPT decides 128 columns at a time: rank over the whole chunk, or the per-row
    # floor(128 * ratio) would fall short of the ratio (0.4062 for 0.4133)
    per_row = not SCORES[config.prune_method].reconstruct
    return (lambda score, first_column: unstructured_keep(score, config.sparsity_ratio, per_row)), 128


def _n_m(n: int, m: int) -> Callable[[Any, torch.Tensor | None], tuple[ChunkSelector, int]]:
    return lambda config, tier_map: ((lambda score, first_column: nm_keep(score, n, m)), m)


PATTERNS: dict[str, Pattern] = {
    "three_tier": Pattern(_three_tier, "blocks ranked into dense / 2:4 / top-k tiers", tiers=True),
    "unstructured": Pattern(_unstructured, "the lowest --sparsity_ratio of each row (SparseGPT: of each chunk)"),
    "2:4": Pattern(_n_m(2, 4), "2 of every 4 consecutive weights along the input", row_wise=True),
    "4:8": Pattern(_n_m(4, 8), "4 of every 8 consecutive weights along the input", row_wise=True),
}


def score_names() -> tuple[str, ...]:
    return tuple(SCORES)


def pattern_names() -> tuple[str, ...]:
    return tuple(PATTERNS)
