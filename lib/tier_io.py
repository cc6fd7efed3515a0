"""Tier maps on disk: one uint8 [block rows, block cols] map per pruned Linear, in safetensors.

Tier codes: 0 = dense, 1 = 2:4, 2 = top-k. Keys are module paths
("model.layers.0.mlp.up_proj"); metadata carries block size, ratios and top-k.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lib.masks import DENSE, NM, TOPK, TIER_NAMES  # noqa: F401  (tier codes, re-exported)

TIER_MAP_FILE = "tier_map.safetensors"


def save_tier_maps(path: str | Path, tier_maps: dict[str, torch.Tensor], metadata: dict) -> None:
    """Write tier maps ({module path: uint8 [R, C]}) and JSON-encodable metadata to a safetensors file."""
    from safetensors.torch import save_file

    tensors = {name: t.to(torch.uint8).contiguous().cpu() for name, t in tier_maps.items()}
    save_file(tensors, str(path), metadata={k: json.dumps(v) for k, v in metadata.items()})


def load_tier_maps(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read what `save_tier_maps` wrote: ({module path: uint8 [R, C]}, metadata)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
        maps = {name: f.get_tensor(name) for name in f.keys()}
    return maps, metadata
