"""What a pruned matrix costs an ideal kernel: stored bytes and multiply-accumulates per token.

Per matrix, in the encoding `lib.tiered.checkpoint.plan_encodings` picks (the one the compressed file
stores), with s = bytes per value and b = block size:
- tiered: 1 byte per tile (tier map); dense tile b*b values (b*b MACs); 2:4 tile b*b/2 values +
  b*b/8 metadata bytes (b*b/2 MACs); top-k tile k values + k position bytes (k MACs).
- bitmask (unstructured, and N:M other than 2:4): 1 bit per weight + the nonzeros (nnz MACs).
- dense: every weight (O*I MACs).
At batch 1 a kernel reads each stored weight byte once per token, so the bytes are also the
weight bytes read per token.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

from lib.core.uncertainty import difference_test, holm_adjust, mean_sd
from lib.tiered.checkpoint import plan_encodings, save_compressed
from lib.tiered.tier_map import DENSE, NM, TOPK, TierMetadata


def tile_bytes(block_size: int, topk_per_block: int, value_bytes: int) -> dict[int, int]:
    """{tier code: stored bytes of one tile of that tier}, without the tile's 1 tier-map byte."""
    tile = block_size * block_size
    k = min(topk_per_block, tile)
    position_bytes = 1 if tile <= 256 else 2
    return {DENSE: tile * value_bytes, NM: tile // 2 * value_bytes + tile // 8, TOPK: k * (value_bytes + position_bytes)}


def tiered_cost(tier_map: torch.Tensor, block_size: int, topk_per_block: int, value_bytes: int) -> dict[str, int]:
    """{"bytes", "macs"} of one matrix in the tiered format; tier_map uint8 [R, C]."""
    counts = torch.bincount(tier_map.flatten().long(), minlength=3).tolist()
    tile = block_size * block_size
    k = min(topk_per_block, tile)
    stored = tile_bytes(block_size, topk_per_block, value_bytes)
    macs = {DENSE: tile, NM: tile // 2, TOPK: k}
    return {"bytes": tier_map.numel() + sum(counts[t] * stored[t] for t in stored),
            "macs": sum(counts[t] * macs[t] for t in macs)}


def bitmask_cost(shape: tuple[int, int], nnz: int, value_bytes: int) -> dict[str, int]:
    """{"bytes", "macs"} of one [O, I] matrix as a bitmask (rows padded to whole bytes) + nnz values."""
    return {"bytes": shape[0] * -(-shape[1] // 8) + nnz * value_bytes, "macs": nnz}


def dense_cost(shape: tuple[int, int], value_bytes: int) -> dict[str, int]:
    return {"bytes": shape[0] * shape[1] * value_bytes, "macs": shape[0] * shape[1]}


def model_cost(model: nn.Module, weights: dict[str, torch.Tensor], tier_maps: dict[str, torch.Tensor],
               tiers: TierMetadata = TierMetadata()) -> dict:
    """Weight bytes and MACs per token of the decoder Linears (as compressed) plus the dense output head.

    weights: the decoder Linear weights, {parameter name: [O, I]} (`lib.models.arch.decoder_linear_weights`);
    tiers: the tier maps' metadata (block size, top-k).
    Returns {"weight_bytes_per_token", "macs_per_token", "decoder_bytes", "decoder_macs",
    "dense_decoder_bytes", "encodings": {encoding: matrices}}; embeddings, norms and attention
    score products are not counted.
    """
    block_size, topk_per_block = tiers.block_size, tiers.topk_per_block
    weights = {name: w.detach() for name, w in weights.items()}
    plan = plan_encodings(weights, tier_maps, block_size)
    decoder = {"bytes": 0, "macs": 0}
    dense_bytes = 0
    encodings = {"tiered": 0, "bitmask": 0, "dense": 0}
    for name, weight in weights.items():
        kind, tier_map = plan.get(name, ("dense", None))
        shape, size = tuple(weight.shape), weight.element_size()
        if kind == "tiered":
            cost = tiered_cost(tier_map, block_size, topk_per_block, size)
        elif kind == "bitmask":
            cost = bitmask_cost(shape, int((weight != 0).sum()), size)
        else:
            cost = dense_cost(shape, size)
        encodings[kind] += 1
        dense_bytes += weight.numel() * size
        decoder = {key: decoder[key] + cost[key] for key in decoder}
    head = model.get_output_embeddings().weight
    head_cost = dense_cost(tuple(head.shape), head.element_size())
    return {"weight_bytes_per_token": decoder["bytes"] + head_cost["bytes"], "macs_per_token": decoder["macs"] + head_cost["macs"],
            "decoder_bytes": decoder["bytes"], "decoder_macs": decoder["macs"], "dense_decoder_bytes": dense_bytes,
            "encodings": encodings}


def checkpoint_cost(model: nn.Module, weights: dict[str, torch.Tensor], tier_maps: dict[str, torch.Tensor],
                    tiers: TierMetadata = TierMetadata()) -> dict:
    """`model_cost` plus "stored_bytes": the size of the compressed tensor file, written to a temporary directory."""
    with tempfile.TemporaryDirectory() as tmp:
        path = save_compressed(model, None, Path(tmp), weights, tier_maps, tiers)
        stored = path.stat().st_size
    return {"stored_bytes": stored, **model_cost(model, weights, tier_maps, tiers)}


def no_costlier(cost_q: float, cost_p: float, rel_tol: float) -> bool:
    """q costs no more than p, costs within `rel_tol` of each other counting as equal."""
    return cost_q <= cost_p * (1 + rel_tol)


def pareto_front(costs: list[float], losses: list[float], rel_tol: float = 1e-3) -> list[bool]:
    """True where no other point is at least as good on both (lower is better) and better on one.

    Costs within `rel_tol` of each other count as equal, so a few bytes of difference (e.g. a
    handful of extra exact zeros) do not keep a worse-quality point on the frontier.
    """
    points = list(zip(costs, losses))

    def dominates(q: tuple[float, float], p: tuple[float, float]) -> bool:
        return no_costlier(q[0], p[0], rel_tol) and q[1] <= p[1] and (q[1] < p[1] or q[0] < p[0] * (1 - rel_tol))

    return [not any(dominates(q, p) for q in points if q is not p) for p in points]


def established_front(costs: list[float], samples: list[list[float]], rel_tol: float = 1e-3, alpha: float = 0.05
                      ) -> tuple[list[bool], list[dict]]:
    """Pareto marks that trust only established quality differences (lower is better on both axes).

    Point q dominates point p when q costs no more (within `rel_tol`, as in `pareto_front`) and q's loss is
    lower by a test over the per-seed values (`difference_test`: Welch's t; a single value, e.g. the dense
    model, is exact) whose p-value, Holm-adjusted over every candidate pair of this axis (q no costlier and
    with the lower mean), is below `alpha`. A cheaper point whose lower loss is not established does not
    remove a costlier one: the costlier one may be better.

    costs: [n]; samples: n lists of per-seed losses. Returns (on the front [n], one dict per candidate pair:
    {"better", "worse" (indices), "difference", "p", "p_holm", "established"}).
    """
    means = [mean_sd(s)[0] for s in samples]
    pairs = [(q, p) for p in range(len(costs)) for q in range(len(costs))
             if q != p and no_costlier(costs[q], costs[p], rel_tol) and means[q] < means[p]]
    tests = [difference_test(samples[q], samples[p]) for q, p in pairs]
    adjusted = holm_adjust([t["p"] for t in tests])
    verdicts = [{"better": q, "worse": p, "difference": t["difference"], "p": t["p"], "p_holm": holm,
                 "established": holm is not None and holm < alpha} for (q, p), t, holm in zip(pairs, tests, adjusted)]
    dominated = {v["worse"] for v in verdicts if v["established"]}
    return [i not in dominated for i in range(len(costs))], verdicts
