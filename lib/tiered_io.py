"""Compressed model directories: write a pruned model in the tiered format, load it back as a normal model.

A directory holds config.json, generation_config.json, the tokenizer, tier_map.safetensors
(when the model has tier maps) and `model.tiered.safetensors`: every decoder Linear weight
encoded by `lib.tiered` (tensors named "<parameter name>.<field>"), every other tensor as it
is (tied weights once). The file's metadata "tiered" is JSON: format, version, dtype,
block_size, topk_per_block and, per encoded parameter, its encoding and shape [O, I].
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

from lib.models import decoder_linear_weights
from lib.tier_io import TIER_MAP_FILE, save_tier_maps
from lib.tiered import (BITMASK_FIELDS, TIERED_FIELDS, decode_bitmask, decode_tiered, encode_bitmask, encode_tiered,
                        nm_tier_map)

logger = logging.getLogger(__name__)

COMPRESSED_FILE = "model.tiered.safetensors"
FORMAT, VERSION = "wanda_hybrid_tiered", 1
ENCODINGS = ("tiered", "bitmask")
_FIELDS = {"tiered": TIERED_FIELDS, "bitmask": BITMASK_FIELDS}


def plan_encodings(
    weights: dict[str, torch.Tensor], tier_maps: dict[str, torch.Tensor], block_size: int, encoding: str = "tiered"
) -> dict[str, tuple[str, torch.Tensor | None]]:
    """Encoding of each weight by parameter name: ("tiered", tier map) or ("bitmask", None); dense weights are left out.

    encoding "tiered": a weight with a tier map (keyed by module path) is tiered; one that holds
    at most 2 nonzeros in every group of 4 gets an all-2:4 map; any other weight is stored as a
    bitmask when that is smaller than dense. encoding "bitmask": every weight with enough zeros
    to gain is a bitmask (the unstructured reference for the same zeros).
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding {encoding!r} is not one of {', '.join(ENCODINGS)}")
    plan: dict[str, tuple[str, torch.Tensor | None]] = {}
    for name, weight in weights.items():
        tier_map = tier_maps.get(name.removesuffix(".weight"))
        if encoding == "tiered" and tier_map is None and (weight == 0).any():
            tier_map = nm_tier_map(weight, block_size)
        if encoding == "tiered" and tier_map is not None:
            plan[name] = ("tiered", tier_map)
        elif int((weight == 0).sum()) * weight.element_size() * 8 > weight.numel():  # bitmask + values < dense
            plan[name] = ("bitmask", None)
    return plan


def encode_state_dict(
    model: nn.Module, tier_maps: dict[str, torch.Tensor], block_size: int, topk_per_block: int, encoding: str = "tiered"
) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of the compressed file for `model` (see the module docstring)."""
    weights = {name: w.detach() for name, w in decoder_linear_weights(model).items()}
    plan = plan_encodings(weights, tier_maps, block_size, encoding)
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:  # a tied weight, stored once
            continue
        seen.add(tensor.data_ptr())
        if name not in plan:
            tensors[name] = tensor
            continue
        kind, tier_map = plan[name]
        fields = encode_tiered(tensor, tier_map, block_size, topk_per_block) if kind == "tiered" else encode_bitmask(tensor)
        tensors.update({f"{name}.{field}": value for field, value in fields.items()})
    dtype = next(iter(weights.values())).dtype
    metadata = {"format": FORMAT, "version": VERSION, "dtype": str(dtype).removeprefix("torch."), "block_size": block_size,
                "topk_per_block": topk_per_block,
                "matrices": {name: {"encoding": kind, "shape": list(weights[name].shape)} for name, (kind, _) in plan.items()}}
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata


def save_compressed(
    model: nn.Module, tokenizer, out_dir: str | Path, tier_maps: dict[str, torch.Tensor], block_size: int = 16,
    topk_per_block: int = 15, encoding: str = "tiered", tier_metadata: dict | None = None,
) -> Path:
    """Write a compressed model directory (config, generation config, tokenizer, tier maps, the tensor file)."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors, metadata = encode_state_dict(model, tier_maps, block_size, topk_per_block, encoding)
    save_file(tensors, str(out_dir / COMPRESSED_FILE), metadata={"tiered": json.dumps(metadata)})
    model.config.save_pretrained(out_dir)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(out_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    if tier_maps:
        save_tier_maps(out_dir / TIER_MAP_FILE, tier_maps, tier_metadata or {"block_size": block_size, "topk_per_block": topk_per_block})
    return out_dir / COMPRESSED_FILE


def load_compressed_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Decode a `model.tiered.safetensors` file: (state dict with dense weights, its "tiered" metadata)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get("tiered")
        if raw is None:
            raise ValueError(f"{path} has no 'tiered' metadata; it was not written by save_compressed / compress_model.py")
        metadata = json.loads(raw)
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    if metadata.get("format") != FORMAT or metadata.get("version") != VERSION:
        raise ValueError(f"{path}: format {metadata.get('format')} v{metadata.get('version')}, expected {FORMAT} v{VERSION}")
    for name, info in metadata["matrices"].items():
        fields = {field: tensors.pop(f"{name}.{field}") for field in _FIELDS[info["encoding"]]}
        shape = tuple(info["shape"])
        tensors[name] = (decode_tiered(fields, shape, metadata["block_size"]) if info["encoding"] == "tiered"
                         else decode_bitmask(fields, shape))
    return tensors, metadata


def is_compressed_dir(path: str | Path) -> bool:
    return (Path(path) / COMPRESSED_FILE).is_file()


def load_tiered_model(path: str | Path, device: str | torch.device = "cpu"):
    """A compressed directory -> an AutoModelForCausalLM (eval mode) with the exact pruned weights.

    The model is built from config.json on the CPU (randomly initialized, then overwritten), so
    it needs host memory for the dense model; then moved to `device`.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    if not is_compressed_dir(path):
        raise FileNotFoundError(f"{path} has no {COMPRESSED_FILE}; write one with scripts/compress_model.py or --save_compressed")
    state_dict, metadata = load_compressed_state_dict(path / COMPRESSED_FILE)
    config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, metadata["dtype"]))
    result = model.load_state_dict(state_dict, strict=False)
    tensors = model.state_dict()
    loaded = {t.data_ptr() for name, t in tensors.items() if name in state_dict}
    untied = [name for name in result.missing_keys if tensors[name].data_ptr() not in loaded]  # tied weights are filled
    if untied or result.unexpected_keys:
        raise ValueError(f"{path}: tensors missing {untied[:5]} / unexpected {result.unexpected_keys[:5]} for this config")
    return model.to(device).eval()
