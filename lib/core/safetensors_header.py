"""A safetensors file's header, checked against the file before anything reads its tensors.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON
(`{tensor name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}`,
padded with spaces), then the tensors' bytes back to back, offsets counted from the end of the
header. `read_header` checks all of that against the file's size without reading a tensor, so a
truncated, padded or garbage file is one line naming the file and the defect instead of a
`SafetensorError` from deep inside a loader. Used for model weights (`lib.models.weights`), tier maps
and tiered checkpoints (`lib.tiered`).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from lib.core.errors import WeightFileError

DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit


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


