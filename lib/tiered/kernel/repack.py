"""Repacking the stored encodings into the hybrid kernel's layout: pure tensor functions, run once at load time.

Tiered (from `lib.tiered.format.encode_tiered`'s fields; uniform 2:4 is the all-NM tier map): the tiles
of each tier are already in row-major tile order, so per block row they are contiguous; `repack_tiered`
adds the CSR row pointers `ptr` int64 [3, R+1] (dense, 2:4, top-k) and the block column of every tile
(int32 [T]), and lays the values out for the kernel (csrc/hybrid_kernel.cpp):
  dense      [Td, b, b] transposed: dense[t, j, i] = W_tile[i, j];
  nm_values  [Tn, b/2, b] slot major: nm_values[t, s, i] = the s-th kept value of tile row i;
  nm_index   uint8 [Tn, b/2, b]: its column inside the tile, decoded from the 2-bit metadata;
  topk_values [Tk, k], topk_positions [Tk, k] as stored (row * b + column inside the tile).
Bitmask (`encode_bitmask`): `repack_bitmask` gives CSR per output row (row_ptr int64 [O+1], cols int16
when I <= 32767 else int32, values [nnz] in row-major order, which is the stored order).
`tiered_to_dense` / `csr_to_dense` turn a layout back into the weight [O, I] (prefill and tests).
"""

from __future__ import annotations

import torch

from lib.tiered.format import unpack_nm_meta
from lib.tiered.tier_map import DENSE, NM, TOPK
from lib.tiered.tiles import from_blocks

TIERED_LAYOUT = ("ptr", "dense_cols", "dense", "nm_cols", "nm_values", "nm_index", "topk_cols", "topk_values",
                 "topk_positions")
CSR_LAYOUT = ("row_ptr", "cols", "values")


def _row_pointers(tiers: torch.Tensor, tier: int) -> torch.Tensor:
    """tier_map [R, C] -> int64 [R+1]: start of each block row's tiles of `tier`."""
    counts = (tiers == tier).sum(1)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)]).to(torch.int64)


def _block_cols(tiers: torch.Tensor, tier: int) -> torch.Tensor:
    """tier_map [R, C] -> int32 [T]: the block column of each tile of `tier`, in row-major tile order."""
    return (tiers == tier).nonzero()[:, 1].to(torch.int32)


def repack_tiered(encoded: dict[str, torch.Tensor], block_size: int) -> dict[str, torch.Tensor]:
    """The TIERED_FIELDS of one matrix -> the TIERED_LAYOUT tensors (contiguous, CPU)."""
    b = block_size
    tiers = encoded["tier_map"].cpu()
    nm_values = encoded["nm_values"].cpu()
    group_start = torch.arange(0, b, 4).view(1, 1, b // 4, 1)
    nm_index = (unpack_nm_meta(encoded["nm_meta"].cpu(), b) + group_start).reshape(len(nm_values), b, b // 2)
    return {
        "ptr": torch.stack([_row_pointers(tiers, tier) for tier in (DENSE, NM, TOPK)]).contiguous(),
        "dense_cols": _block_cols(tiers, DENSE),
        "dense": encoded["dense"].cpu().transpose(1, 2).contiguous(),
        "nm_cols": _block_cols(tiers, NM),
        "nm_values": nm_values.transpose(1, 2).contiguous(),
        "nm_index": nm_index.transpose(1, 2).to(torch.uint8).contiguous(),
        "topk_cols": _block_cols(tiers, TOPK),
        "topk_values": encoded["topk_values"].cpu().contiguous(),
        "topk_positions": encoded["topk_positions"].cpu().contiguous(),
    }


def tiered_to_dense(layout: dict[str, torch.Tensor], shape: tuple[int, int], block_size: int) -> torch.Tensor:
    """The weight [O, I] = shape that a TIERED_LAYOUT holds (zeros where nothing is stored)."""
    b = block_size
    n_rows, n_cols = -(-shape[0] // b), -(-shape[1] // b)
    dtype = layout["dense"].dtype
    tiles = torch.zeros(n_rows * n_cols, b * b, dtype=dtype)  # (R*C, b*b), row-major tile order

    def tile_index(tier: int) -> torch.Tensor:
        rows = torch.repeat_interleave(torch.arange(n_rows), layout["ptr"][tier].diff())
        return rows * n_cols + layout[("dense_cols", "nm_cols", "topk_cols")[tier]].long()

    tiles[tile_index(DENSE)] = layout["dense"].transpose(1, 2).reshape(-1, b * b)
    nm = layout["nm_values"].transpose(1, 2)  # (Tn, b, b/2)
    nm_flat = torch.zeros(len(nm), b, b, dtype=dtype)
    nm_flat.scatter_(2, layout["nm_index"].transpose(1, 2).long(), nm)
    tiles[tile_index(NM)] = nm_flat.reshape(-1, b * b)
    topk = torch.zeros(len(layout["topk_values"]), b * b, dtype=dtype)
    topk.scatter_(1, layout["topk_positions"].long(), layout["topk_values"])
    tiles[tile_index(TOPK)] = topk
    return from_blocks(tiles.reshape(n_rows, n_cols, b, b), *shape)


def repack_bitmask(encoded: dict[str, torch.Tensor], shape: tuple[int, int]) -> dict[str, torch.Tensor]:
    """The BITMASK_FIELDS of a [O, I] = shape matrix -> CSR_LAYOUT (values keep the stored row-major order)."""
    out_features, in_features = shape
    bits = (encoded["bitmask"].cpu().long().unsqueeze(-1) >> torch.arange(8)) & 1  # (O, I/8, 8)
    nonzero = bits.reshape(out_features, -1)[:, :in_features].bool()
    counts = nonzero.sum(1)
    index_dtype = torch.int16 if in_features <= torch.iinfo(torch.int16).max else torch.int32
    return {
        "row_ptr": torch.cat([counts.new_zeros(1), counts.cumsum(0)]).to(torch.int64),
        "cols": nonzero.nonzero()[:, 1].to(index_dtype),
        "values": encoded["values"].cpu().contiguous(),
    }


def csr_to_dense(layout: dict[str, torch.Tensor], shape: tuple[int, int]) -> torch.Tensor:
    """The weight [O, I] = shape that a CSR_LAYOUT holds."""
    rows = torch.repeat_interleave(torch.arange(shape[0]), layout["row_ptr"].diff())
    weight = torch.zeros(shape, dtype=layout["values"].dtype)
    weight[rows, layout["cols"].long()] = layout["values"]
    return weight


def layout_bytes(layout: dict[str, torch.Tensor]) -> int:
    """Bytes of every tensor of a layout: what one pass of the kernel reads of this matrix."""
    return sum(t.numel() * t.element_size() for t in layout.values())
