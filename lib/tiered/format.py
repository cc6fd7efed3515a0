"""Compact encodings of one pruned weight matrix: the tiered format and a bitmask reference.

Pure tensor functions: a weight in, a dict of tensors out, and back, exactly (every stored value keeps
its bits; a weight that is not stored decodes as +0.0). The fields (TIERED_FIELDS, BITMASK_FIELDS),
their dtypes and shapes, the 2:4 metadata bit layout, the top-k positions, the bitmask and the
invariants that `check_tiered` / `check_bitmask` enforce (TieredFormatError naming the field and the
first offending tile) are specified in docs/tiered-format.md.
Letters: O = out_features, I = in_features, b = block_size, R = ceil(O / b), C = ceil(I / b),
k = values kept per top-k tile, T = number of tiles of a tier.
"""

from __future__ import annotations

import torch

from lib.tiered.tier_map import DENSE, NM, TOPK
from lib.tiered.tiles import from_blocks, to_blocks

TIERED_FIELDS = ("tier_map", "dense", "nm_values", "nm_meta", "topk_values", "topk_positions")
BITMASK_FIELDS = ("bitmask", "values")
_NIBBLE = torch.tensor([[n & 3, n >> 2] for n in range(16)])  # (16, 2): nibble -> (first, second)
_POPCOUNT = torch.tensor([bin(n).count("1") for n in range(256)])  # (256,): byte -> set bits


class TieredFormatError(ValueError):
    """Stored fields that break the format's invariants; the message names the field (and the file, once known)."""


def position_dtype(block_size: int) -> torch.dtype:
    """dtype of the top-k positions of b x b tiles: uint8 when b*b <= 256, else int16."""
    return torch.uint8 if block_size * block_size <= 256 else torch.int16


def _first_slots(nonzero: torch.Tensor, n_slots: int, what: str) -> torch.Tensor:
    """Indices of the n_slots stored entries along the last dim: the nonzeros, then the lowest free positions,
    ascending. nonzero: bool [..., m] -> long [..., n_slots]. Raises if an entry holds more than n_slots nonzeros."""
    counts = nonzero.sum(-1)
    if counts.numel() and int(counts.max()) > n_slots:
        raise ValueError(
            f"{what} has {int(counts.max())} nonzeros where its tier stores {n_slots}; "
            "the weights do not follow the tier map (pass the tier map the model was pruned with)"
        )
    order = torch.sort((~nonzero).to(torch.uint8), dim=-1, stable=True).indices  # nonzeros first, by index
    return order[..., :n_slots].sort(dim=-1).values


def tiled(weight: torch.Tensor, block_size: int) -> torch.Tensor:
    """[O, I] -> [R*C, b, b]: zero-padded tiles in row-major tile order."""
    return to_blocks(weight, block_size, 0.0).reshape(-1, block_size, block_size)


def encode_tiered(weight: torch.Tensor, tier_map: torch.Tensor, block_size: int, topk_per_block: int) -> dict[str, torch.Tensor]:
    """Encode weight [O, I] under tier_map uint8 [R, C]; returns the TIERED_FIELDS (docs/tiered-format.md)."""
    b = block_size
    n_rows, n_cols = -(-weight.shape[0] // b), -(-weight.shape[1] // b)
    if tuple(tier_map.shape) != (n_rows, n_cols):
        raise ValueError(f"tier map has shape {tuple(tier_map.shape)}; a {tuple(weight.shape)} weight with block size {b} needs ({n_rows}, {n_cols})")
    tiles = tiled(weight, b)  # (R*C, b, b)
    tiers = tier_map.flatten().to(weight.device)
    nm_tiles = tiles[tiers == NM].reshape(-1, b, b // 4, 4)  # (T_nm, b, b/4, 4)
    nm_slots = _first_slots(nm_tiles != 0, 2, "a group of 4 in a 2:4 tile")  # (T_nm, b, b/4, 2)
    nibbles = (nm_slots[..., 0] | nm_slots[..., 1] << 2).reshape(len(nm_tiles), b * b // 8, 2)  # (T_nm, b*b/8, 2)
    k = min(topk_per_block, b * b)
    topk_tiles = tiles[tiers == TOPK].reshape(-1, b * b)  # (T_topk, b*b)
    topk_slots = _first_slots(topk_tiles != 0, k, "a top-k tile")  # (T_topk, k)
    return {
        "tier_map": tier_map.to(torch.uint8).cpu().contiguous(),
        "dense": tiles[tiers == DENSE].contiguous(),
        "nm_values": nm_tiles.gather(-1, nm_slots).reshape(len(nm_tiles), b, b // 2),
        "nm_meta": (nibbles[..., 0] | nibbles[..., 1] << 4).to(torch.uint8),
        "topk_values": topk_tiles.gather(1, topk_slots),
        "topk_positions": topk_slots.to(position_dtype(b)),
    }


def unpack_nm_meta(nm_meta: torch.Tensor, block_size: int) -> torch.Tensor:
    """uint8 [T, b*b/8] -> column offsets long [T, b, b/4, 2] of the two kept values in each group of 4."""
    nibbles = torch.stack((nm_meta & 15, nm_meta >> 4), dim=-1).long()  # (T, b*b/8, 2)
    return _NIBBLE.to(nm_meta.device)[nibbles].reshape(len(nm_meta), block_size, block_size // 4, 2)


def decode_tiered(encoded: dict[str, torch.Tensor], shape: tuple[int, int], block_size: int) -> torch.Tensor:
    """The weight [O, I] that `encode_tiered` encoded (shape = (O, I))."""
    tier_map, dense, values, b = encoded["tier_map"], encoded["dense"], encoded["nm_values"], block_size
    tiers = tier_map.flatten().to(values.device)
    tiles = values.new_zeros(tiers.numel(), b, b)  # (R*C, b, b)
    tiles[tiers == DENSE] = dense
    groups = values.new_zeros(len(values), b, b // 4, 4)
    groups.scatter_(-1, unpack_nm_meta(encoded["nm_meta"], b), values.reshape(len(values), b, b // 4, 2))
    tiles[tiers == NM] = groups.reshape(-1, b, b)
    topk_values = encoded["topk_values"]
    flat = topk_values.new_zeros(len(topk_values), b * b)
    flat.scatter_(1, encoded["topk_positions"].long(), topk_values)
    tiles[tiers == TOPK] = flat.reshape(-1, b, b)
    return from_blocks(tiles.reshape(*tier_map.shape, b, b), *shape)


def _expect(tensor: torch.Tensor, field: str, shape: tuple[int, ...], dtype: torch.dtype, what: str) -> None:
    """Raise TieredFormatError unless `tensor` has `shape` and `dtype` (`what` says where the shape comes from)."""
    if tensor.dtype != dtype:
        raise TieredFormatError(f"{field}: dtype {str(tensor.dtype)[6:]}, expected {str(dtype)[6:]}")
    if tuple(tensor.shape) != shape:
        raise TieredFormatError(f"{field}: shape {tuple(tensor.shape)}, expected {shape} ({what})")


def _first(bad: torch.Tensor) -> tuple[int, ...]:
    """Index of the first True entry of a bool tensor, in row-major order."""
    return tuple(int(i) for i in bad.nonzero()[0])


def check_tiered(encoded: dict[str, torch.Tensor], shape: tuple[int, int], block_size: int, topk_per_block: int,
                 dtype: torch.dtype) -> None:
    """Raise TieredFormatError unless `encoded` (the TIERED_FIELDS) can be what `encode_tiered` wrote for a
    [O, I] = `shape` weight of `dtype` (docs/tiered-format.md, What loading checks, step 5). block_size: a multiple of 4."""
    b = block_size
    grid = (-(-shape[0] // b), -(-shape[1] // b))
    tier_map = encoded["tier_map"]
    _expect(tier_map, "tier_map", grid, torch.uint8, f"ceil({shape[0]}/{b}) x ceil({shape[1]}/{b}) tiles")
    if (tier_map > TOPK).any():
        r, c = _first(tier_map > TOPK)
        raise TieredFormatError(f"tier_map: tile ({r}, {c}) has tier code {int(tier_map[r, c])}; "
                                f"codes are {DENSE} dense, {NM} 2:4, {TOPK} top-k")
    n = torch.bincount(tier_map.flatten().long(), minlength=3).tolist()
    k = min(topk_per_block, b * b)
    _expect(encoded["dense"], "dense", (n[DENSE], b, b), dtype, f"{n[DENSE]} dense tiles in the tier map")
    _expect(encoded["nm_values"], "nm_values", (n[NM], b, b // 2), dtype, f"{n[NM]} 2:4 tiles in the tier map")
    _expect(encoded["nm_meta"], "nm_meta", (n[NM], b * b // 8), torch.uint8, f"{n[NM]} 2:4 tiles in the tier map")
    _expect(encoded["topk_values"], "topk_values", (n[TOPK], k), dtype, f"{n[TOPK]} top-k tiles x {k} values")
    _expect(encoded["topk_positions"], "topk_positions", (n[TOPK], k), position_dtype(b), f"{n[TOPK]} top-k tiles x {k} values")
    nibbles = torch.stack((encoded["nm_meta"] & 15, encoded["nm_meta"] >> 4), dim=-1)  # (T_nm, b*b/8, 2)
    unordered = (nibbles & 3) >= (nibbles >> 2)
    if unordered.any():
        t, byte, half = _first(unordered)
        nibble = int(nibbles[t, byte, half])
        raise TieredFormatError(f"nm_meta: 2:4 tile {t}, group {2 * byte + half}: offsets {nibble & 3}, {nibble >> 2} "
                                "(the first must be below the second)")
    positions = encoded["topk_positions"].long()  # (T_topk, k)
    outside = (positions < 0) | (positions >= b * b)
    if outside.any():
        t, j = _first(outside)
        raise TieredFormatError(f"topk_positions: top-k tile {t}, slot {j}: position {int(positions[t, j])} is outside 0..{b * b - 1}")
    unordered = positions[:, 1:] <= positions[:, :-1]
    if unordered.any():
        t, j = _first(unordered)
        raise TieredFormatError(f"topk_positions: top-k tile {t}, slots {j}, {j + 1}: positions {int(positions[t, j])}, "
                                f"{int(positions[t, j + 1])} are not strictly increasing")


def check_bitmask(encoded: dict[str, torch.Tensor], shape: tuple[int, int], dtype: torch.dtype) -> None:
    """Raise TieredFormatError unless `encoded` (the BITMASK_FIELDS) can be what `encode_bitmask` wrote for a
    [O, I] = `shape` weight of `dtype`: bitmask uint8 [O, ceil(I/8)] with no bit past column I, values [popcount]."""
    bitmask, values = encoded["bitmask"], encoded["values"]
    _expect(bitmask, "bitmask", (shape[0], -(-shape[1] // 8)), torch.uint8, f"{shape[0]} rows x ceil({shape[1]}/8) bytes")
    if shape[1] % 8 and bitmask.numel() and int(bitmask[:, -1].max()) >> (shape[1] % 8):
        row = _first(bitmask[:, -1] >> (shape[1] % 8) != 0)[0]
        raise TieredFormatError(f"bitmask: row {row} sets a bit past column {shape[1] - 1}")
    n_set = int(_POPCOUNT[bitmask.long()].sum())
    _expect(values, "values", (n_set,), dtype, "one per bit the bitmask sets")


def nm_tier_map(weight: torch.Tensor, block_size: int) -> torch.Tensor | None:
    """An all-2:4 tier map uint8 [R, C] when weight [O, I] has at most 2 nonzeros in every group of 4
    consecutive columns (zero-padded to whole tiles), else None."""
    groups = tiled(weight, block_size).reshape(-1, 4)
    if int((groups != 0).sum(-1).max()) > 2:
        return None
    n_rows, n_cols = -(-weight.shape[0] // block_size), -(-weight.shape[1] // block_size)
    return torch.full((n_rows, n_cols), NM, dtype=torch.uint8)


def encode_bitmask(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """weight [O, I] -> {"bitmask": uint8 [O, ceil(I/8)], "values": dtype [nnz]}."""
    out_features, in_features = weight.shape
    n_bytes = -(-in_features // 8)
    nonzero = weight != 0
    bits = nonzero.new_zeros(out_features, n_bytes * 8)
    bits[:, :in_features] = nonzero
    weights_of_bits = 1 << torch.arange(8, device=weight.device)
    packed = (bits.view(out_features, n_bytes, 8).long() * weights_of_bits).sum(-1).to(torch.uint8)  # (O, I/8)
    return {"bitmask": packed, "values": weight[nonzero]}


def decode_bitmask(encoded: dict[str, torch.Tensor], shape: tuple[int, int]) -> torch.Tensor:
    """The weight [O, I] that `encode_bitmask` encoded."""
    packed, values = encoded["bitmask"], encoded["values"]
    bits = (packed.long().unsqueeze(-1) >> torch.arange(8, device=packed.device)) & 1  # (O, I/8, 8)
    nonzero = bits.reshape(shape[0], -1)[:, : shape[1]].bool()
    weight = values.new_zeros(shape)
    weight[nonzero] = values
    return weight
