"""The tier map: what pruning produces and the format, the kernel, training and loading consume.

A tier map is one uint8 [R, C] tensor per pruned Linear (R = ceil(out_features / b) block rows,
C = ceil(in_features / b) block columns, b = block size) holding a tier code per b x b block:
DENSE = 0 (kept whole), NM = 1 (2:4), TOPK = 2 (top-k weights of the block). `TierMetadata` says how
the maps were made and is the one schema of that record wherever it is written or read; its defaults
(block size 16, top-k 15) are the toolkit's, written only here.

On disk (`TIER_MAP_FILE`, safetensors): keys are module paths ("model.layers.0.mlp.up_proj");
the header metadata holds `TierMetadata.to_dict()`, each value as JSON. `load_tier_maps` checks the
file before trusting it and names the file and the defect in one line. The specification, with the
tiered checkpoint that carries this file: docs/tiered-format.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from lib.core.errors import WeightFileError
from lib.core.safetensors_header import read_header

DENSE, NM, TOPK = 0, 1, 2  # tier codes
TIER_NAMES = ("dense", "2:4", "topk")  # by code
DEFAULT_BLOCK_SIZE = 16  # side of the square blocks the tiers are assigned to
DEFAULT_TOPK_PER_BLOCK = 15  # weights kept in each top-k block
TIER_SCOPES = ("matrix", "row", "layer", "model")  # what the blocks are ranked across
TIER_ASSIGNMENTS = ("shares", "budgeted")  # fixed shares by mean block score, or least loss within a byte budget
TIER_MAP_FILE = "tier_map.safetensors"


def is_int(value: Any) -> bool:
    """An int and not a bool (JSON's true is not a block size)."""
    return type(value) is int


def check_block_size(block_size: Any, name: str = "block_size") -> None:
    """Raise ValueError (starting with `name`) unless `block_size` is a positive multiple of 4."""
    if not (is_int(block_size) and block_size > 0 and block_size % 4 == 0):
        raise ValueError(f"{name} {block_size!r:.20} is not a positive multiple of 4 (2:4 groups must stay inside blocks)")


def check_topk(topk_per_block: Any, block_size: int, name: str = "topk_per_block") -> None:
    """Raise ValueError (starting with `name`) unless `topk_per_block` is an int in [0, block_size**2]."""
    if not (is_int(topk_per_block) and 0 <= topk_per_block <= block_size * block_size):
        raise ValueError(f"{name} {topk_per_block!r:.20} is not in [0, {block_size * block_size}] "
                         f"(block_size {block_size} squared)")


def check_ratios(ratios: Any, name: str = "ratios") -> None:
    """Raise ValueError (starting with `name`) unless `ratios` are three numbers >= 0 summing to 1 within 1e-6."""
    if not isinstance(ratios, (tuple, list)) or len(ratios) != 3:
        raise ValueError(f"{name} needs 3 values (dense, 2:4, top-k), got {ratios!r:.60}")
    if not all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in ratios):
        raise ValueError(f"{name} {ratios!r:.60} are not three numbers")
    if not all(r >= 0 for r in ratios) or not abs(sum(ratios) - 1.0) <= 1e-6:  # NaN fails too
        raise ValueError(f"{name} {' '.join(map(str, ratios))} must be >= 0 and sum to 1 (they sum to {sum(ratios):.6g}); "
                         "no normalization is applied")


@dataclass(frozen=True)
class TierMetadata:
    """How a set of tier maps was made, as their file's metadata records it (keys in this order).

    block_size: b, a positive multiple of 4. ratios: the block shares (dense, 2:4, top-k), >= 0, summing
    to 1. topk_per_block: weights kept per top-k block, in [0, b*b]. tier_scope: what the blocks were
    ranked across (TIER_SCOPES). owl: outlier-weighted layer shares. model: the model that was pruned.
    tier_assignment, tier_budget: "budgeted" and its --tier_budget when the tiers were chosen within a byte
    budget (ratios then None); left out for fixed shares.
    None: not recorded (left out of the file); a file without block_size / topk_per_block means 16 / 15.
    Checked on construction (ValueError naming the field).
    """

    block_size: int = DEFAULT_BLOCK_SIZE
    ratios: tuple[float, float, float] | None = None
    topk_per_block: int = DEFAULT_TOPK_PER_BLOCK
    tier_scope: str | None = None
    owl: bool | None = None
    model: str | None = None
    tier_assignment: str | None = None
    tier_budget: str | None = None

    def __post_init__(self) -> None:
        check_block_size(self.block_size)
        check_topk(self.topk_per_block, self.block_size)
        if self.ratios is not None:
            check_ratios(self.ratios)
            object.__setattr__(self, "ratios", tuple(self.ratios))
        if self.tier_scope is not None and self.tier_scope not in TIER_SCOPES:
            raise ValueError(f"tier_scope {self.tier_scope!r:.40} is not one of {', '.join(TIER_SCOPES)}")
        if self.owl is not None and not isinstance(self.owl, bool):
            raise ValueError(f"owl {self.owl!r:.20} is not true or false")
        if self.model is not None and not isinstance(self.model, str):
            raise ValueError(f"model {self.model!r:.40} is not a string")
        if self.tier_assignment is not None and self.tier_assignment not in TIER_ASSIGNMENTS:
            raise ValueError(f"tier_assignment {self.tier_assignment!r:.40} is not one of {', '.join(TIER_ASSIGNMENTS)}")
        if self.tier_budget is not None and not isinstance(self.tier_budget, str):
            raise ValueError(f"tier_budget {self.tier_budget!r:.40} is not a string")

    def to_dict(self) -> dict[str, Any]:
        """{field: value} of the fields that are not None, in field order (ratios as a list): the file's metadata."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {name: list(value) if isinstance(value, tuple) else value for name, value in values.items() if value is not None}

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str | Path) -> TierMetadata:
        """The metadata a tier-map file at `source` holds (decoded JSON values); a key this schema does not have or
        a bad value raises WeightFileError naming `source` and the key."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise WeightFileError(f"{source}: tier-map metadata has the key {unknown[0]!r:.40}, which is not one of "
                                  f"{', '.join(known)}")
        try:
            return cls(**values)
        except ValueError as err:
            raise WeightFileError(f"{source}: tier-map metadata: {err}") from None


def save_tier_maps(path: str | Path, tier_maps: dict[str, torch.Tensor], metadata: TierMetadata) -> None:
    """Write tier maps ({module path: uint8 [R, C]}) and their metadata (each value as JSON) to a safetensors file."""
    from safetensors.torch import save_file

    tensors = {name: t.to(torch.uint8).contiguous().cpu() for name, t in tier_maps.items()}
    save_file(tensors, str(path), metadata={k: json.dumps(v) for k, v in metadata.to_dict().items()})


def _metadata(header: dict, path: Path) -> TierMetadata:
    """The checked metadata of a tier-map file's header (`TierMetadata.from_dict` of its JSON values)."""
    try:
        values = {k: json.loads(v) for k, v in header.get("__metadata__", {}).items()}
    except (TypeError, ValueError) as err:
        raise WeightFileError(f"{path}: damaged metadata: a value is not JSON ({err})") from None
    return TierMetadata.from_dict(values, path)


def load_tier_maps(path: str | Path) -> tuple[dict[str, torch.Tensor], TierMetadata]:
    """Read what `save_tier_maps` wrote: ({module path: uint8 [R, C]}, metadata).

    Raises WeightFileError (lib.core.errors) naming the file and the defect: an unreadable or truncated
    file, metadata that is not JSON or not `TierMetadata`'s (`from_dict`), a map that is not 2-D uint8 or
    holds a code other than 0, 1, 2.
    """
    from safetensors import safe_open

    path = Path(path)
    header = read_header(path)
    metadata = _metadata(header, path)
    for name, entry in header.items():
        if name != "__metadata__" and (entry["dtype"] != "U8" or len(entry["shape"]) != 2):
            raise WeightFileError(f"{path}: tier map {name} is {entry['dtype']} {entry['shape']}; tier maps are 2-D uint8")
    with safe_open(str(path), framework="pt") as f:
        maps = {name: f.get_tensor(name) for name in f.keys()}
    for name, tier_map in maps.items():
        if tier_map.numel() and int(tier_map.max()) > TOPK:
            raise WeightFileError(f"{path}: tier map {name} holds the code {int(tier_map.max())}; codes are "
                                  f"{DENSE} dense, {NM} 2:4, {TOPK} top-k")
    return maps, metadata
