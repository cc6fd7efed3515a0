"""Budgeted tier assignment (`--tier_assignment budgeted`): the byte budget, each block's loss per tier, tier maps.

A block's loss in a tier is the importance that tier's keep rule drops in it (dense: 0; 2:4: the 2 of each 4
the rule drops; top-k: all but the k kept), with the importance of weight (i, j):
- Wanda-style scores s (wanda, magnitude, ria): s^2, so Wanda's is |W_ij|^2 * ||X_j||^2;
- SparseGPT: its own saliency w_ij^2 / [H^-1]_jj (the factor U of lib.pruning.sparsegpt: [H^-1]_jj -> U_jj^2),
  computed with the factor the reconstruction then reuses (one factorization per input, as without a budget).
A block's cost in a tier is its stored bytes in the tiered format (lib.tiered.cost): 1 tier-map byte plus the
tile's bytes. The tiers are chosen by lib.pruning.tier_solver, per --tier_scope: each matrix (matrix), each row
of blocks with an equal share of its matrix's budget (row), the matrices of a layer pooled (layer), or the model
pooled on the dense-model profile, which fixes each matrix's bytes (model). Ties go to the fixed-share map
(--sparsity_ratios by mean block score, as --tier_assignment shares ranks them), so losses that carry no
information give back the fork's assignment when the budget is its bytes.

--tier_budget, per matrix, as a fraction F of the bytes of the same matrix stored as uniform 2:4 (all 2:4 tiles):
"2:4" (F = 1), "Fx2:4" (e.g. "0.9x2:4"), or "s=S", a sparsity-equivalent target: F = 2 (1 - S), the bytes per
kept weight of 2:4 at density 1 - S ("s=0.5" = "2:4").
Shapes: O = out_features, I = in_features, b = block size, R x C blocks.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lib.pruning.masks import assign_tiers, assign_tiers_row_balanced, block_mean_scores, three_tier_keep, tier_counts
from lib.pruning.methods import SCORES
from lib.pruning.sparsegpt import HessianFactor, inverse_hessian_factor
from lib.pruning.tier_solver import solve_tiers
from lib.tiered.cost import tile_bytes, tiered_cost
from lib.tiered.tier_map import NM, TIER_ASSIGNMENTS, TOPK
from lib.tiered.tiles import to_blocks

BUDGET_FORMS = "2:4, a fraction of it like 0.9x2:4, or a sparsity-equivalent like s=0.5"


def parse_tier_budget(text: str) -> float:
    """--tier_budget -> the fraction of uniform 2:4's bytes: "2:4" -> 1.0, "0.9x2:4" -> 0.9, "s=0.5" -> 1.0."""
    error = ValueError(f"--tier_budget {text!r:.40} is not {BUDGET_FORMS} (a positive fraction; 0 <= s < 1)")
    value = str(text).replace(" ", "")
    try:
        if value == "2:4":
            return 1.0
        if value.startswith("s="):
            sparsity = float(value[2:])
            if 0 <= sparsity < 1:
                return 2 * (1 - sparsity)
        elif value.endswith("x2:4"):
            fraction = float(value[: -len("x2:4")])
            if 0 < fraction < float("inf"):
                return fraction
    except ValueError:
        pass
    raise error


def check_budget_flags(config: Any) -> None:
    """One-line ValueErrors for the budget flags of a PruneConfig that cannot go together."""
    if config.tier_assignment not in TIER_ASSIGNMENTS:
        raise ValueError(f"--tier_assignment {config.tier_assignment!r} is not one of {', '.join(TIER_ASSIGNMENTS)}")
    if config.tier_assignment == "shares":
        if config.tier_budget is not None:
            raise ValueError("--tier_budget applies to --tier_assignment budgeted only")
        return
    if config.sparsity_type != "three_tier":
        raise ValueError("--tier_assignment budgeted applies to --sparsity_type three_tier only")
    if config.tier_budget is None:
        raise ValueError(f"--tier_assignment budgeted needs --tier_budget ({BUDGET_FORMS})")
    if config.owl:
        raise ValueError("--owl shifts fixed tier shares; it does not apply to --tier_assignment budgeted")
    parse_tier_budget(config.tier_budget)


def tier_costs(block_size: int, topk_per_block: int, value_bytes: int) -> torch.Tensor:
    """Stored bytes of one block per tier, its tier-map byte included: float64 [3] by tier code."""
    stored = tile_bytes(block_size, topk_per_block, value_bytes)
    return torch.tensor([1 + stored[t] for t in sorted(stored)], dtype=torch.float64)


def check_budget_fits(config: Any, value_bytes: int) -> None:
    """Raise ValueError when --tier_budget is below the bytes of the cheapest tier everywhere (same for every matrix)."""
    costs = tier_costs(config.block_size, config.topk_per_block, value_bytes)
    least = (costs.min() / costs[NM]).item()
    if parse_tier_budget(config.tier_budget) < least:
        raise ValueError(f"--tier_budget {config.tier_budget} is below the bytes of the cheapest tiles everywhere "
                         f"({least:.3f}x2:4 with {value_bytes}-byte weights, --topk_per_block {config.topk_per_block}); "
                         "raise it")


def matrix_budget(shape: tuple[int, int], config: Any, value_bytes: int) -> float:
    """--tier_budget in bytes for one [O, I] matrix: its fraction of the matrix's bytes as uniform 2:4."""
    b = config.block_size
    all_nm = torch.full((-(-shape[0] // b), -(-shape[1] // b)), NM, dtype=torch.uint8)
    nm_bytes = tiered_cost(all_nm, b, config.topk_per_block, value_bytes)["bytes"]
    return parse_tier_budget(config.tier_budget) * nm_bytes


def block_losses(importance: torch.Tensor, keep_score: torch.Tensor, block_size: int, topk_per_block: int) -> torch.Tensor:
    """The importance each tier drops in each block: importance, keep_score [O, I] -> float64 [R, C, 3] (dense 0).

    keep_score is what the tiers' keep rules rank by (lib.pruning.masks.three_tier_keep), as in the real mask.
    """
    b = block_size
    shape = (-(-importance.shape[0] // b), -(-importance.shape[1] // b))
    losses = [torch.zeros(shape, dtype=torch.float64, device=importance.device)]
    for tier in (NM, TOPK):
        keep = three_tier_keep(keep_score, torch.full(shape, tier, dtype=torch.uint8, device=importance.device), b, topk_per_block)
        losses.append(to_blocks(importance.float() * ~keep, b, 0.0).sum(dim=(2, 3), dtype=torch.float64))
    return torch.stack(losses, dim=-1)


def saliency(weight: torch.Tensor, factor: HessianFactor) -> torch.Tensor:
    """SparseGPT's w^2 / [H^-1]_jj with the factor's U_jj^2 (dead inputs: 0): weight [O, I] -> float32 [O, I]."""
    u, dead = factor
    w = weight.float().masked_fill(dead.unsqueeze(0), 0)
    return w.pow(2) / u.diagonal().pow(2)


def importances(linears: dict[str, nn.Linear], scores: dict[str, torch.Tensor], stats: dict[str, Any] | None, config: Any
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[int, HessianFactor]]:
    """({name: importance [O, I]}, {name: keep score [O, I]}, {id(stats): factor} for SparseGPT, else {}).

    stats None (the dense-model profile): the Wanda-style importance of `scores` whatever the method.
    """
    if stats is None or not SCORES[config.prune_method].reconstruct:
        keep = {n: linears[n].weight.float().abs() if config.intra_block_score == "magnitude" else s for n, s in scores.items()}
        return {n: s.float().pow(2) for n, s in scores.items()}, keep, {}
    factors: dict[int, HessianFactor] = {}
    for name in linears:
        if id(stats[name]) not in factors:
            factors[id(stats[name])] = inverse_hessian_factor(stats[name].hessian, config.percdamp)
    salient = {n: saliency(m.weight, factors[id(stats[n])]) for n, m in linears.items()}
    return salient, salient, factors


def layer_losses(linears: dict[str, nn.Linear], scores: dict[str, torch.Tensor], stats: dict[str, Any] | None, config: Any
                 ) -> tuple[dict[str, torch.Tensor], dict[int, HessianFactor]]:
    """({name: block losses [R, C, 3]}, SparseGPT factors by id(stats)) of one layer's Linears."""
    importance, keep, factors = importances(linears, scores, stats, config)
    b, k = config.block_size, config.topk_per_block
    return {n: block_losses(importance[n], keep[n], b, k).cpu() for n in linears}, factors


def solve_layer(losses: dict[str, torch.Tensor], budgets: dict[str, float], scope: str, costs: torch.Tensor,
                priors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tier maps {name: uint8 [R, C]} from block losses {name: [R, C, 3]} and byte budgets {name: bytes} per scope.

    scope "matrix" / "model": each matrix alone within its budget; "row": each row of blocks within an equal share
    of its matrix's budget; "layer": all blocks of the layer pooled within the sum of the budgets.
    priors: {name: uint8 [R, C]}, the fixed-share maps, which win ties (lib.pruning.tier_solver.solve_tiers).
    """
    if scope == "layer":
        flat = torch.cat([loss.reshape(-1, 3) for loss in losses.values()])
        prior = torch.cat([priors[n].flatten().cpu() for n in losses])
        tiers = solve_tiers(flat.unsqueeze(0), costs, torch.tensor([sum(budgets.values())]), prior.unsqueeze(0))[0]
        sizes = [loss.shape[0] * loss.shape[1] for loss in losses.values()]
        return {n: part.view(loss.shape[:2]) for (n, loss), part in zip(losses.items(), tiers.split(sizes))}
    maps = {}
    for name, loss in losses.items():
        groups = loss if scope == "row" else loss.reshape(1, -1, 3)
        budget = torch.full((groups.shape[0],), budgets[name] / groups.shape[0], dtype=torch.float64)
        maps[name] = solve_tiers(groups, costs, budget, priors[name].reshape(groups.shape[:2])).view(loss.shape[:2])
    return maps


def layer_tier_maps(linears: dict[str, nn.Linear], scores: dict[str, torch.Tensor], stats: dict[str, Any] | None,
                    config: Any, allotted: dict[str, float] | None = None
                    ) -> tuple[dict[str, torch.Tensor], dict[int, HessianFactor]]:
    """Budgeted tier maps of one layer's Linears {name: uint8 [R, C]}, and the SparseGPT factors to reuse.

    allotted: {name: bytes} fixed by the model-wide plan (`model_allotments`), else each matrix's --tier_budget.
    """
    losses, factors = layer_losses(linears, scores, stats, config)
    value_bytes = next(iter(linears.values())).weight.element_size()
    budgets = allotted or {n: matrix_budget(tuple(m.weight.shape), config, value_bytes) for n, m in linears.items()}
    costs = tier_costs(config.block_size, config.topk_per_block, value_bytes)
    assign = assign_tiers_row_balanced if config.tier_scope == "row" else assign_tiers
    block = {n: block_mean_scores(s, config.block_size) for n, s in scores.items()}
    priors = {n: assign(block[n], tier_counts(block[n].numel(), config.ratios)) for n in linears}
    maps = solve_layer(losses, budgets, config.tier_scope, costs, priors)
    return {n: t.to(linears[n].weight.device) for n, t in maps.items()}, factors


def profile_entry(linears: dict[str, nn.Linear], scores: dict[str, torch.Tensor], config: Any) -> dict[str, Any]:
    """What the dense-model profile keeps of one layer for the model-wide plan: block losses [R, C, 3] (with the
    profile's Wanda-style scores) and each matrix's --tier_budget bytes, under "losses" and "budgets"."""
    value_bytes = next(iter(linears.values())).weight.element_size()
    losses, _ = layer_losses(linears, scores, None, config)
    return {"losses": losses, "value_bytes": value_bytes,
            "budgets": {n: matrix_budget(tuple(m.weight.shape), config, value_bytes) for n, m in linears.items()}}


def model_allotments(profile: list[dict[str, Any]], config: Any) -> list[dict[str, float]]:
    """Bytes of every matrix (per layer, by name) from one solve over all blocks of the model, within the sum of
    the matrices' budgets (profile: `profile_entry` per layer)."""
    costs = tier_costs(config.block_size, config.topk_per_block, profile[0]["value_bytes"])
    keys = [(i, n) for i, layer in enumerate(profile) for n in layer["losses"]]
    flat = torch.cat([profile[i]["losses"][n].reshape(-1, 3) for i, n in keys])
    total = sum(profile[i]["budgets"][n] for i, n in keys)
    tiers = solve_tiers(flat.unsqueeze(0), costs, torch.tensor([total]))[0].long()
    spent = costs[tiers].split([profile[i]["losses"][n].shape[0] * profile[i]["losses"][n].shape[1] for i, n in keys])
    allotted: list[dict[str, float]] = [{} for _ in profile]
    for (i, n), part in zip(keys, spent):
        allotted[i][n] = part.sum().item()
    return allotted
