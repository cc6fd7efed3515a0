"""Reference hybrid matmul: y = x W^T straight from the tiered encoding (`lib.tiered.format`), tier by tier.

Dense tiles: one batched matmul of the tiles with the input slices they see. 2:4 tiles: gather
the input columns named by the 2-bit metadata, multiply by the stored values, sum the pairs of
each tile row, index_add into the output rows. Top-k tiles: gather the input column of every
stored position, multiply, index_add into its output row. Pure tensor code on x's device; tiles
are processed in chunks so the gathered inputs stay under `max_elements`. Shapes: x [..., I],
y [..., O]; letters as in `lib.tiered.format`.

This is a correctness reference for kernel authors, not a fast kernel: on a CPU the gathers
are far slower than a dense GEMM (scripts/bench_hybrid_matmul.py measures by how much).
"""

from __future__ import annotations

import torch

from lib.tiered.format import unpack_nm_meta
from lib.tiered.tier_map import DENSE, NM, TOPK


def _chunks(n_tiles: int, elements_per_tile: int, max_elements: int):
    step = max(1, max_elements // max(elements_per_tile, 1))
    for start in range(0, n_tiles, step):
        yield slice(start, min(start + step, n_tiles))


def tiered_matmul(
    x: torch.Tensor, encoded: dict[str, torch.Tensor], shape: tuple[int, int], block_size: int, max_elements: int = 1 << 24
) -> torch.Tensor:
    """y = x @ W^T for the weight W [O, I] = shape that `encode_tiered` encoded; x [..., I] -> y [..., O].

    Computed in the stored values' dtype (x is cast to it).
    """
    out_features, in_features = shape
    b = block_size
    tier_map = encoded["tier_map"].to(x.device)
    n_rows, n_cols = tier_map.shape
    dtype = encoded["dense"].dtype
    lead = x.shape[:-1]
    x2 = x.reshape(-1, in_features).to(dtype)
    n = x2.shape[0]
    xp = x2.new_zeros(n, n_cols * b)
    xp[:, :in_features] = x2  # (N, C*b)
    y = x2.new_zeros(n, n_rows * b)  # (N, R*b)
    tiers = tier_map.flatten()

    def tile_rows_cols(tier: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = (tiers == tier).nonzero().squeeze(1)
        return index // n_cols, index % n_cols  # block row, block column per tile

    rows, cols = tile_rows_cols(DENSE)
    tiles = encoded["dense"]
    xt = xp.view(n, n_cols, b)
    yt = y.view(n, n_rows, b)
    for part in _chunks(len(tiles), n * b, max_elements):
        inputs = xt[:, cols[part], :].permute(1, 2, 0)  # (T, b, N)
        yt.index_add_(1, rows[part], torch.bmm(tiles[part], inputs).permute(2, 0, 1))  # (N, T, b)

    rows, cols = tile_rows_cols(NM)
    values = encoded["nm_values"]  # (T, b, b/2)
    offsets = unpack_nm_meta(encoded["nm_meta"], b)  # (T, b, b/4, 2)
    group_start = torch.arange(0, b, 4, device=x.device).view(1, 1, b // 4, 1)
    in_tile = (offsets + group_start).reshape(len(values), b, b // 2)  # (T, b, b/2): column inside the tile
    out_row = rows[:, None] * b + torch.arange(b, device=x.device)  # (T, b)
    for part in _chunks(len(values), n * b * b // 2, max_elements):
        gathered = xp[:, (cols[part, None, None] * b + in_tile[part])]  # (N, T, b, b/2)
        y.index_add_(1, out_row[part].flatten(), (gathered * values[part]).sum(-1).reshape(n, -1))

    rows, cols = tile_rows_cols(TOPK)
    values = encoded["topk_values"]  # (T, k)
    positions = encoded["topk_positions"].long()
    out_row = rows[:, None] * b + positions // b  # (T, k)
    in_col = cols[:, None] * b + positions % b
    for part in _chunks(len(values), n * values.shape[1], max_elements):
        y.index_add_(1, out_row[part].flatten(), (xp[:, in_col[part]] * values[part]).reshape(n, -1))
    return y[:, :out_features].reshape(*lead, out_features)
