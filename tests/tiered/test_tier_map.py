"""lib/tiered/tier_map.py: TierMetadata is the one schema of the tier-map file's metadata, as docs/tiered-format.md
specifies it; the file bytes are what the pruning CLI wrote before TierMetadata existed."""

from __future__ import annotations

import json
import re
from dataclasses import fields

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import lib.tiered.checkpoint as checkpoint
import lib.tiered.format as tiered_format
import lib.tiered.tier_map as tier_map
from lib.core.errors import WeightFileError
from lib.tiered.tier_map import TIER_MAP_FILE, TierMetadata, load_tier_maps, save_tier_maps
from tests.helpers import REPO

SPEC = REPO / "docs" / "tiered-format.md"
MAPS = {"model.layers.0.mlp.up_proj": torch.tensor([[0, 1], [2, 1], [0, 2]], dtype=torch.uint8)}
# what main_block_three_tier.py wrote into the header before TierMetadata (a dict of json.dumps values, in this order)
WRITTEN_BEFORE = {"block_size": "16", "ratios": "[0.35, 0.45, 0.2]", "topk_per_block": "15", "tier_scope": '"matrix"',
                  "owl": "false", "model": '"smollm2-135m"'}


def header_metadata(path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def test_metadata_round_trip_keeps_the_header_bytes_of_before(tmp_path):
    path = tmp_path / TIER_MAP_FILE
    metadata = TierMetadata(16, (0.35, 0.45, 0.2), 15, "matrix", False, "smollm2-135m")
    save_tier_maps(path, MAPS, metadata)
    assert header_metadata(path) == WRITTEN_BEFORE
    assert list(metadata.to_dict()) == list(WRITTEN_BEFORE)  # the keys in the order the file has always had
    maps, loaded = load_tier_maps(path)
    assert loaded == metadata and loaded.ratios == (0.35, 0.45, 0.2)
    assert torch.equal(maps["model.layers.0.mlp.up_proj"], MAPS["model.layers.0.mlp.up_proj"])


def test_absent_keys_mean_the_defaults(tmp_path):
    path = tmp_path / TIER_MAP_FILE
    save_file(MAPS, str(path), metadata={"block_size": "8"})
    assert load_tier_maps(path)[1] == TierMetadata(8, None, 15)
    save_tier_maps(path, MAPS, TierMetadata())
    assert header_metadata(path) == {"block_size": "16", "topk_per_block": "15"}


@pytest.mark.parametrize("metadata, expected", [
    ({"block_size": "16", "method": '"wanda"'}, "tier-map metadata has the key 'method', which is not one of block_size, "
                                                "ratios, topk_per_block, tier_scope, owl, model"),
    ({"block_size": "6"}, "tier-map metadata: block_size 6 is not a positive multiple of 4"),
    ({"block_size": "true"}, "tier-map metadata: block_size True is not a positive multiple of 4"),
    ({"topk_per_block": "257"}, "tier-map metadata: topk_per_block 257 is not in [0, 256] (block_size 16 squared)"),
    ({"ratios": "[0.5, 0.5, 0.5]"}, "tier-map metadata: ratios 0.5 0.5 0.5 must be >= 0 and sum to 1 (they sum to 1.5)"),
    ({"ratios": "[0.5, 0.5]"}, "tier-map metadata: ratios needs 3 values (dense, 2:4, top-k), got [0.5, 0.5]"),
    ({"tier_scope": '"global"'}, "tier-map metadata: tier_scope 'global' is not one of matrix, row, layer, model"),
    ({"owl": '"yes"'}, "tier-map metadata: owl 'yes' is not true or false"),
])
def test_metadata_outside_the_schema_is_one_line(tmp_path, metadata, expected):
    path = tmp_path / TIER_MAP_FILE
    save_file(MAPS, str(path), metadata=metadata)
    with pytest.raises(WeightFileError) as caught:
        load_tier_maps(path)
    assert str(caught.value).startswith(f"{path}: {expected}"), caught.value
    assert "\n" not in str(caught.value)


def test_the_spec_is_linked_from_the_code_and_lists_the_schema():
    text = SPEC.read_text()
    for module in (tiered_format, checkpoint, tier_map):
        assert "docs/tiered-format.md" in module.__doc__, module.__name__
    section = text.split("## `tier_map.safetensors`", 1)[1].split("\n## ", 1)[0]
    keys = re.findall(r"^\| `(\w+)` \|", section, flags=re.M)
    assert keys == [f.name for f in fields(TierMetadata)]
    example = json.loads(re.search(r"For example `(\{.*?\})`", section, flags=re.S).group(1).replace("\n", " "))
    assert example == WRITTEN_BEFORE
    header = text.split("## `model.tiered.safetensors`", 1)[1].split("\n| field |", 1)[1].split("\n\n", 1)[0]
    assert re.findall(r"^\| `(\w+)` \|", header, flags=re.M) == [
        "format", "version", "dtype", "block_size", "topk_per_block", "matrices", "checksums"]
    assert f'"format": "{checkpoint.FORMAT}", "version": {checkpoint.VERSION}' in text
