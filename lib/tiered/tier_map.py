"""The tier map: what pruning produces and the format, the kernel, training and loading consume.

A tier map is one uint8 [R, C] tensor per pruned Linear (R = ceil(out_features / b) block rows,
C = ceil(in_features / b) block columns, b = block size) holding a tier code per b x b block:
DENSE = 0 (kept whole), NM = 1 (2:4), TOPK = 2 (top-k weights of the block). `TierMetadata` says how
the maps were made; its defaults (block size 16, top-k 15) are the toolkit's, written only here.

On disk (`TIER_MAP_FILE`, safetensors): keys are module paths ("model.layers.0.mlp.up_proj");
metadata carries block size, ratios and top-k, each value as JSON. `load_tier_maps` checks the file
before trusting it (header against the file size, JSON metadata, every map 2-D uint8 with codes 0-2)
and names the file and the defect in one line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from lib.core.errors import WeightFileError
from lib.core.safetensors_header import read_header

DENSE, NM, TOPK = 0, 1, 2  # tier codes
TIER_NAMES = ("dense", "2:4", "topk")  # by code
DEFAULT_BLOCK_SIZE = 16  # side of the square blocks the tiers are assigned to
DEFAULT_TOPK_PER_BLOCK = 15  # weights kept in each top-k block
TIER_MAP_FILE = "tier_map.safetensors"


@dataclass(frozen=True)
class TierMetadata:
    """How a set of tier maps was made, as their file's metadata records it (keys in this order).

    block_size: b. ratios: the block shares (dense, 2:4, top-k). topk_per_block: weights kept per top-k
    block. tier_scope: what the blocks were ranked across (matrix, row, layer, model). owl: outlier-weighted
    layer shares. model: the model that was pruned.
    """

    block_size: int = DEFAULT_BLOCK_SIZE
    ratios: tuple[float, float, float] | None = None
    topk_per_block: int = DEFAULT_TOPK_PER_BLOCK
    tier_scope: str | None = None
    owl: bool | None = None
    model: str | None = None



def save_tier_maps(path: str | Path, tier_maps: dict[str, torch.Tensor], metadata: dict) -> None:
    """Write tier maps ({module path: uint8 [R, C]}) and JSON-encodable metadata to a safetensors file."""
    from safetensors.torch import save_file

    tensors = {name: t.to(torch.uint8).contiguous().cpu() for name, t in tier_maps.items()}
    save_file(tensors, str(path), metadata={k: json.dumps(v) for k, v in metadata.items()})


def _metadata(header: dict, path: Path) -> dict:
    """The JSON-decoded metadata values of a tier-map file's header."""
    try:
        return {k: json.loads(v) for k, v in header.get("__metadata__", {}).items()}
    except (TypeError, ValueError) as err:
        raise WeightFileError(f"{path}: damaged metadata: a value is not JSON ({err})") from None


def load_tier_maps(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read what `save_tier_maps` wrote: ({module path: uint8 [R, C]}, metadata).

    Raises WeightFileError (lib.core.errors) naming the file and the defect: an unreadable or truncated
    file, metadata that is not JSON, a map that is not 2-D uint8 or holds a code other than 0, 1, 2.
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
