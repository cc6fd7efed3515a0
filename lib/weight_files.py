"""Safetensors files checked before anything reads their tensors: the header, the file size, the config's shapes.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON
(`{tensor name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}`,
padded with spaces), then the tensors' bytes back to back, offsets counted from the end of the
header. `read_header` checks all of that against the file's size without reading a tensor, so a
truncated, padded or garbage file is one line naming the file and the defect instead of a
`SafetensorError` from deep inside a loader. `check_model_weights` does it for the weight files
of a `save_pretrained` directory (one file or shards) and compares their shapes with the model
its config.json describes, built on the meta device (no memory for weights).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import torch

from lib.models import ModelLoadError

WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit


class WeightFileError(ModelLoadError):
    """A weight or tier-map file that is not what it claims to be; the message names the file and the defect."""


def _read_prefix(path: Path) -> tuple[int, bytes]:
    """(file size, header bytes) of a safetensors file; the header length is checked against the size."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            length = f.read(8)
            if len(length) < 8:
                raise WeightFileError(f"{path}: not a safetensors file ({size} bytes, shorter than the 8-byte header length)")
            (n,) = struct.unpack("<Q", length)
            if n > min(size - 8, MAX_HEADER_BYTES):
                raise WeightFileError(f"{path}: not a safetensors file, or truncated: its header length {n} exceeds the "
                                      f"{size - 8} bytes that follow")
            return size, f.read(n)
    except OSError as err:
        raise WeightFileError(f"{path}: cannot read it ({err.strerror or err})") from None


def _check_entry(path: Path, name: str, entry) -> tuple[int, int]:
    """The (begin, end) data offsets of one header entry, after checking its dtype and shape agree with them."""
    if not (isinstance(entry, dict) and isinstance(entry.get("dtype"), str) and entry["dtype"] in DTYPE_SIZES and isinstance(entry.get("shape"), list)
            and all(type(d) is int and d >= 0 for d in entry["shape"]) and isinstance(entry.get("data_offsets"), list)
            and len(entry["data_offsets"]) == 2 and all(type(o) is int and o >= 0 for o in entry["data_offsets"])):
        raise WeightFileError(f"{path}: damaged header: tensor {name!r} has no valid dtype, shape and data_offsets ({entry!r:.80})")
    begin, end = entry["data_offsets"]
    if end - begin != math.prod(entry["shape"]) * DTYPE_SIZES[entry["dtype"]]:
        raise WeightFileError(f"{path}: damaged header: tensor {name!r} ({entry['dtype']} {entry['shape']}) spans "
                              f"bytes {begin}..{end}, which is not its size")
    return begin, end


def read_header(path: str | Path) -> dict:
    """The parsed JSON header of a safetensors file, checked against the file's size.

    Raises WeightFileError (one line naming the file) when the file is shorter or longer than the
    header says (truncated, appended to), the header is not JSON, an entry's dtype, shape and byte
    span disagree, or the tensors do not tile the data region back to back.
    """
    path = Path(path)
    size, raw = _read_prefix(path)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise WeightFileError(f"{path}: damaged or not a safetensors file: its header is not JSON ({err})") from None
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__", {}), dict):
        raise WeightFileError(f"{path}: damaged header: not a JSON object of tensors")
    spans = sorted(_check_entry(path, name, entry) for name, entry in header.items() if name != "__metadata__")
    data = size - 8 - len(raw)
    position = 0
    for begin, end in spans:
        if begin != position:
            raise WeightFileError(f"{path}: damaged header: the tensors' data offsets leave a gap or overlap at byte {position}")
        position = end
    if position != data:
        what = "truncated" if position > data else "damaged (bytes after the last tensor)"
        raise WeightFileError(f"{path}: {what}: the header describes {position} bytes of tensor data, the file holds "
                              f"{data}; copy or download it again")
    return header


def tensor_shapes(header: dict) -> dict[str, list[int]]:
    """{tensor name: shape} of a header from `read_header`."""
    return {name: entry["shape"] for name, entry in header.items() if name != "__metadata__"}


def weight_files(model_dir: Path) -> list[Path]:
    """The safetensors files `from_pretrained` reads from a directory: model.safetensors, else the index's shards."""
    if (model_dir / WEIGHTS_FILE).is_file():
        return [model_dir / WEIGHTS_FILE]
    index = model_dir / WEIGHTS_INDEX
    if not index.is_file():
        return []
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise WeightFileError(f"{index}: damaged shard index ({err.__class__.__name__}: {err})") from None
    missing = [s for s in shards if not (model_dir / s).is_file()]
    if missing:
        raise WeightFileError(f"{index}: names shard {missing[0]}, which is not in {model_dir}; copy the whole directory")
    return [model_dir / s for s in shards]


def config_shapes(config) -> tuple[dict[str, tuple[int, ...]], dict[str, set[str]]]:
    """({state dict name: shape}, {name: the names tied to the same tensor}) of the model `config` describes (meta device)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    groups: dict[int, set[str]] = {}
    for name, tensor in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        groups.setdefault(id(tensor), set()).add(name)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    return shapes, {name: group for group in groups.values() for name in group}


def check_model_weights(model_dir: str | Path) -> None:
    """Check a save_pretrained directory's safetensors files before `from_pretrained` reads them.

    Every file's header against its size (`read_header`); every stored tensor whose name the
    model of config.json has must have its shape; and, when all stored names are the model's
    (no checkpoint renaming in play, as for fused mixture-of-experts tensors), every model
    tensor must be stored (one of a tied group suffices). Raises WeightFileError naming the
    file and the defect. A directory without safetensors files passes (from_pretrained decides).
    """
    from transformers import AutoConfig

    model_dir = Path(model_dir)
    files = weight_files(model_dir)
    stored: dict[str, tuple[Path, list[int]]] = {}
    for path in files:
        stored.update({name: (path, shape) for name, shape in tensor_shapes(read_header(path)).items()})
    if not stored:
        return
    shapes, tied = config_shapes(AutoConfig.from_pretrained(model_dir, trust_remote_code=False))
    for name, (path, shape) in stored.items():
        if name in shapes and tuple(shape) != shapes[name]:
            raise WeightFileError(f"{path}: tensor {name} has shape {tuple(shape)}, but the model of "
                                  f"{model_dir / 'config.json'} needs {shapes[name]}; the weights belong to another config")
    if stored.keys() <= shapes.keys():
        missing = sorted(name for name in shapes if not tied.get(name, {name}) & stored.keys())
        if missing:
            where = files[0] if len(files) == 1 else model_dir / WEIGHTS_INDEX
            raise WeightFileError(f"{where}: lacks {len(missing)} tensors the model of "
                                  f"{model_dir / 'config.json'} needs, e.g. {missing[0]}; copy or save the model again")
