"""Compact encodings of pruned weight matrices: the tiered format and a bitmask reference.

Pure tensor functions: a weight in, a dict of tensors out, and back (bit-exact, see below).
Letters: O = out_features, I = in_features, b = block_size, R = ceil(O / b), C = ceil(I / b),
k = values kept per top-k tile, T = number of tiles of a tier.

**Tiered** (`encode_tiered` / `decode_tiered`): the weight is padded with zeros at the
bottom/right to [R*b, C*b] and cut into b x b tiles; tile (r, c) covers rows r*b.. and
columns c*b.. of the padded matrix and has tier `tier_map[r, c]` (0 dense, 1 2:4, 2 top-k).
Tiles of one tier are stored in row-major tile order (the order of `tier_map.flatten()`):

    tier_map        uint8 [R, C]
    dense           dtype [T_dense, b, b]       the tile as is
    nm_values       dtype [T_nm, b, b/2]        per tile row, the 2 kept values of each group of 4
                                                consecutive columns, in column order
    nm_meta         uint8 [T_nm, b*b/8]         their column offsets in the group (0..3), 2 bits each:
                                                group g (row-major over the tile's b x b/4 groups)
                                                is nibble g: byte g // 2, low nibble for even g;
                                                nibble = first | second << 2, first < second
    topk_values     dtype [T_topk, k]           kept values, by ascending position
    topk_positions  uint8 [T_topk, k]           row * b + column inside the padded tile
                                                (int16 when b*b > 256)

A tile holding fewer nonzeros than its slots (weights already zero, edge padding, or
fine-tuning) stores zeros as values, lowest free positions first. Positions of edge tiles
index the padded tile; padding positions hold zero.

**Bitmask** (`encode_bitmask` / `decode_bitmask`), the unstructured reference:

    bitmask   uint8 [O, ceil(I/8)]   bit j (least significant first) of byte q = column 8q + j is nonzero
    values    dtype [nnz]            the nonzero weights in row-major order

Exactness: every stored value keeps its bits; a weight that is not stored decodes as +0.0,
so a pruned -0.0 (what multiplying by a mask writes) comes back as +0.0, the same number.
"""

from __future__ import annotations

import torch

from lib.masks import DENSE, NM, TOPK, from_blocks, to_blocks

TIERED_FIELDS = ("tier_map", "dense", "nm_values", "nm_meta", "topk_values", "topk_positions")
BITMASK_FIELDS = ("bitmask", "values")
_NIBBLE = torch.tensor([[n & 3, n >> 2] for n in range(16)])  # (16, 2): nibble -> (first, second)


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
    """Encode weight [O, I] under tier_map uint8 [R, C]; returns the fields in the module docstring."""
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
        "topk_positions": topk_slots.to(torch.uint8 if b * b <= 256 else torch.int16),
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
