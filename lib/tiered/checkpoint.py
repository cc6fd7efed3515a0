"""Compressed model directories: write a pruned model in the tiered format, load it back as a normal model.

The directory, the `model.tiered.safetensors` file (tensor names, the "tiered" header JSON, versions 1
and 2, the CRC-32 checksums) and what loading checks before it decodes anything are specified in
docs/tiered-format.md; `lib.tiered.format` encodes and checks one matrix. Every defect found on load is
one line (TieredFormatError / WeightFileError) naming the file and the tensor or field; `verify=False`
(--no_verify_checksums) skips only the checksums, for trusted files.
"""

from __future__ import annotations

import json
import logging
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import nn

from lib.core.cli import one_line
from lib.core.errors import WeightFileError
from lib.core.safetensors_header import read_header
from lib.tiered.format import (BITMASK_FIELDS, TIERED_FIELDS, TieredFormatError, check_bitmask, check_tiered,
                               decode_bitmask, decode_tiered, encode_bitmask, encode_tiered, nm_tier_map)
from lib.tiered.kernel.linear import install_hybrid
from lib.tiered.tier_map import TIER_MAP_FILE, TierMetadata, check_block_size, check_topk, is_int, save_tier_maps

logger = logging.getLogger(__name__)

COMPRESSED_FILE = "model.tiered.safetensors"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}  # value dtypes by name
FORMAT, VERSION = "wanda_hybrid_tiered", 2
READABLE_VERSIONS = (1, 2)  # 1: no checksums
CHECKSUM_ALGORITHM = "crc32"
ENCODINGS = ("tiered", "bitmask")
_FIELDS = {"tiered": TIERED_FIELDS, "bitmask": BITMASK_FIELDS}
NO_VERIFY_HELP = ("do not verify the checksums of a tiered --model directory (for trusted files: loads faster; "
                  "its structure is still checked)")


def add_verify_flag(parser) -> None:
    """`--no_verify_checksums` (dest verify_checksums, default True) on an argparse parser that takes --model."""
    parser.add_argument("--no_verify_checksums", dest="verify_checksums", action="store_false", help=NO_VERIFY_HELP)


def tensor_checksum(tensor: torch.Tensor) -> str:
    """CRC-32, 8 hex digits, of the tensor's dtype and shape as text ("torch.float32[16, 16]"), then its raw bytes."""
    described = zlib.crc32(f"{tensor.dtype}{list(tensor.shape)}".encode())
    return f"{zlib.crc32(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy(), described):08x}"


def metadata_checksum(metadata: dict) -> str:
    """CRC-32, 8 hex digits, of the metadata JSON without "checksums" (sorted keys, no spaces)."""
    rest = {key: value for key, value in metadata.items() if key != "checksums"}
    return f"{zlib.crc32(json.dumps(rest, sort_keys=True, separators=(',', ':')).encode()):08x}"


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
    model: nn.Module, weights: dict[str, torch.Tensor], tier_maps: dict[str, torch.Tensor],
    tiers: TierMetadata = TierMetadata(), encoding: str = "tiered",
) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, "tiered" metadata) of the compressed file for `model` (docs/tiered-format.md).

    weights: the matrices to encode, {parameter name: weight [O, I]} (the decoder Linears:
    `lib.models.arch.decoder_linear_weights`); every other tensor of the state dict is stored as it is.
    tiers: the tier maps' metadata (its block size and top-k tile every tiered matrix).
    """
    block_size, topk_per_block = tiers.block_size, tiers.topk_per_block
    weights = {name: w.detach() for name, w in weights.items()}
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
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    metadata["checksums"] = {"algorithm": CHECKSUM_ALGORITHM, "metadata": metadata_checksum(metadata),
                             "tensors": {name: tensor_checksum(t) for name, t in tensors.items()}}
    return tensors, metadata


def save_compressed(
    model: nn.Module, tokenizer, out_dir: str | Path, weights: dict[str, torch.Tensor], tier_maps: dict[str, torch.Tensor],
    tiers: TierMetadata = TierMetadata(), encoding: str = "tiered",
) -> Path:
    """Write a compressed model directory (config, generation config, tokenizer, tier maps with `tiers` as their
    metadata, the tensor file); `weights` and `tiers` as `encode_state_dict` takes them."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors, metadata = encode_state_dict(model, weights, tier_maps, tiers, encoding)
    save_file(tensors, str(out_dir / COMPRESSED_FILE), metadata={"tiered": json.dumps(metadata)})
    model.config.save_pretrained(out_dir)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(out_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    if tier_maps:
        save_tier_maps(out_dir / TIER_MAP_FILE, tier_maps, tiers)
    return out_dir / COMPRESSED_FILE


def check_metadata(metadata, path: Path) -> None:
    """Raise TieredFormatError (naming `path` and the field) unless the "tiered" metadata is one this loader reads
    (docs/tiered-format.md: What loading checks, step 2)."""
    def bad(defect: str) -> TieredFormatError:
        return TieredFormatError(f"{path}: {defect}")

    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise bad(f"not a {FORMAT} file (format {metadata.get('format') if isinstance(metadata, dict) else metadata!r:.40})")
    version = metadata.get("version")
    if version not in READABLE_VERSIONS or not is_int(version):
        raise bad(f"format version {version!r:.20}; this toolkit reads versions {', '.join(map(str, READABLE_VERSIONS))}")
    if not isinstance(metadata.get("dtype"), str) or metadata["dtype"] not in DTYPES:
        raise bad(f"dtype {metadata.get('dtype')!r:.40} is not one of {', '.join(DTYPES)}")
    try:  # the tiling rules of the tier maps (lib.tiered.tier_map)
        check_block_size(metadata.get("block_size"))
        check_topk(metadata.get("topk_per_block"), metadata["block_size"])
    except ValueError as err:
        raise bad(str(err)) from None
    matrices = metadata.get("matrices")
    if not isinstance(matrices, dict):
        raise bad("metadata has no 'matrices' object")
    for name, info in matrices.items():
        if not isinstance(info, dict) or info.get("encoding") not in ENCODINGS:
            raise bad(f"{name}: encoding {info.get('encoding') if isinstance(info, dict) else info!r:.40} is not one of "
                      f"{', '.join(ENCODINGS)}")
        shape = info.get("shape")
        if not (isinstance(shape, list) and len(shape) == 2 and all(is_int(d) and d > 0 for d in shape)):
            raise bad(f"{name}: shape {shape!r:.40} is not two positive integers")
    checksums = metadata.get("checksums")
    if version == 1 and checksums is not None:
        raise bad("version 1 has no checksums, but this file carries them: its version field was changed")
    if version >= 2 and not (isinstance(checksums, dict) and checksums.get("algorithm") == CHECKSUM_ALGORITHM
                             and isinstance(checksums.get("metadata"), str) and isinstance(checksums.get("tensors"), dict)):
        raise bad(f"version {version} needs 'checksums' with algorithm {CHECKSUM_ALGORITHM!r}, 'metadata' and 'tensors'")


def read_metadata(header: dict, path: Path, verify: bool = True) -> dict:
    """The checked "tiered" metadata of a safetensors header (`lib.core.safetensors_header.read_header`); with `verify`,
    its own checksum too."""
    raw = header.get("__metadata__", {}).get("tiered")
    if raw is None:
        raise TieredFormatError(f"{path} has no 'tiered' metadata; it was not written by save_compressed / compress_model.py")
    try:
        metadata = json.loads(raw)
    except (TypeError, ValueError) as err:
        raise TieredFormatError(f"{path}: damaged 'tiered' metadata: not JSON ({err})") from None
    check_metadata(metadata, path)
    if metadata["version"] == 1:
        logger.warning("%s is format version 1, which has no checksums: its structure is checked, damaged values would "
                       "not be noticed; rewrite it with scripts/compress_model.py to add them", path)
    elif verify and metadata_checksum(metadata) != metadata["checksums"]["metadata"]:
        raise TieredFormatError(f"{path}: the 'tiered' metadata fails its {CHECKSUM_ALGORITHM} checksum: the header is "
                                "damaged or was edited; write the directory again")
    return metadata


def check_tensor_names(metadata: dict, stored: set[str], path: Path, verify: bool = True) -> None:
    """Raise TieredFormatError for an encoded field the file lacks; with `verify` (version 2) also for a stored
    tensor without a checksum or a checksum without its tensor."""
    for name, info in metadata["matrices"].items():
        for field in _FIELDS[info["encoding"]]:
            if f"{name}.{field}" not in stored:
                raise TieredFormatError(f"{path}: tensor {name}.{field} is missing ({info['encoding']} encoding of {name})")
    if verify and metadata["version"] >= 2:
        listed = set(metadata["checksums"]["tensors"])
        unmatched = sorted(listed ^ stored)
        if unmatched:
            name = unmatched[0]
            raise TieredFormatError(f"{path}: tensor {name} is " + ("missing (its checksum is listed)" if name in listed
                                                                    else "stored without a checksum"))


def read_tensors(path: Path, names: list[str]) -> dict[str, torch.Tensor]:
    """The named tensors of a safetensors file (backed by the mapped file: reading them is what touches the bytes)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {name: f.get_tensor(name) for name in names}
    except SafetensorError as err:
        raise WeightFileError(f"{path}: {one_line(err)}") from None


def first_mismatch(tensors: dict[str, torch.Tensor], checksums: dict[str, str]) -> str | None:
    """The first tensor (in `tensors` order) whose `tensor_checksum` is not its entry in `checksums`, else None."""
    return next((name for name, tensor in tensors.items() if tensor_checksum(tensor) != checksums[name]), None)


def checksum_error(path: Path, name: str) -> TieredFormatError:
    return TieredFormatError(f"{path}: tensor {name} fails its {CHECKSUM_ALGORITHM} checksum: the file is damaged "
                             "(or was edited); copy or write it again")


def checked_matrices(tensors: dict[str, torch.Tensor], metadata: dict, path: Path
                     ) -> dict[str, tuple[str, dict[str, torch.Tensor], tuple[int, int]]]:
    """Take each encoded matrix's fields out of `tensors`, check its invariants, and return
    {name: (encoding, fields, shape)}."""
    dtype, b = DTYPES[metadata["dtype"]], metadata["block_size"]
    matrices = {}
    for name, info in metadata["matrices"].items():
        fields = {field: tensors.pop(f"{name}.{field}") for field in _FIELDS[info["encoding"]]}
        shape = tuple(info["shape"])
        try:
            if info["encoding"] == "tiered":
                check_tiered(fields, shape, b, metadata["topk_per_block"], dtype)
            else:
                check_bitmask(fields, shape, dtype)
        except TieredFormatError as err:
            raise TieredFormatError(f"{path}: tensor {name}.{err}") from None
        matrices[name] = (info["encoding"], fields, shape)
    return matrices


def decode_matrices(tensors: dict[str, torch.Tensor], metadata: dict, path: Path) -> dict[str, torch.Tensor]:
    """Replace each encoded matrix's fields in `tensors` by the decoded weight [O, I], after checking its invariants."""
    b = metadata["block_size"]
    for name, (encoding, fields, shape) in checked_matrices(tensors, metadata, path).items():
        tensors[name] = decode_tiered(fields, shape, b) if encoding == "tiered" else decode_bitmask(fields, shape)
    return tensors


def open_compressed(path: Path, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict, dict[str, str] | None]:
    """(stored tensors, checked metadata, the tensor checksums to verify or None) of a `model.tiered.safetensors`
    file: header, metadata (and its checksum) and tensor names checked, the tensors' bytes not yet."""
    header = read_header(path)
    metadata = read_metadata(header, path, verify)
    stored = [name for name in header if name != "__metadata__"]
    check_tensor_names(metadata, set(stored), path, verify)
    if not verify:
        logger.info("%s: checksums not verified (trusted file)", path)
    checksums = metadata["checksums"]["tensors"] if verify and metadata["version"] >= 2 else None
    return read_tensors(path, stored), metadata, checksums


def load_compressed_state_dict(path: str | Path, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """Decode a `model.tiered.safetensors` file: (state dict with dense weights, its "tiered" metadata).

    Checks the file as docs/tiered-format.md (What loading checks) says; `verify=False` skips the checksums.
    """
    path = Path(path)
    tensors, metadata, checksums = open_compressed(path, verify)
    if checksums is not None and (name := first_mismatch(tensors, checksums)) is not None:
        raise checksum_error(path, name)
    return decode_matrices(tensors, metadata, path), metadata


def is_compressed_dir(path: str | Path) -> bool:
    return (Path(path) / COMPRESSED_FILE).is_file()


def check_against_model(state_dict: dict[str, torch.Tensor], model: nn.Module, path: Path) -> None:
    """Raise TieredFormatError unless the decoded tensors are exactly the model's (tied weights once): names,
    shapes, and floating point or not."""
    expected = model.state_dict()
    for name, tensor in state_dict.items():
        if name not in expected:
            raise TieredFormatError(f"{path}: tensor {name} is not a tensor of the model {path.parent / 'config.json'} describes")
        want = expected[name]
        if tensor.shape != want.shape or tensor.dtype.is_floating_point != want.dtype.is_floating_point:
            raise TieredFormatError(f"{path}: tensor {name} decodes to {str(tensor.dtype)[6:]} {tuple(tensor.shape)}, the "
                                    f"model of config.json has {str(want.dtype)[6:]} {tuple(want.shape)}")
    stored = {t.data_ptr() for name, t in expected.items() if name in state_dict}
    untied = [name for name, t in expected.items() if name not in state_dict and t.data_ptr() not in stored]
    if untied:
        raise TieredFormatError(f"{path}: tensor {untied[0]} is missing ({len(untied)} model tensors are not stored)")


def load_tiered_model(path: str | Path, device: str | torch.device = "cpu", verify: bool = True, kernel: str = "none"):
    """A compressed directory -> an AutoModelForCausalLM (eval mode) with the exact pruned weights.

    kernel "hybrid": the encoded Linears become `lib.tiered.kernel.linear.HybridLinear` built from the stored
    fields (no dense copy of them is kept; CPU only); "none": every weight is decoded to a dense tensor.

    The file is checked as docs/tiered-format.md says; `verify=False` skips the checksums (trusted
    files). The checksums are computed in a second thread while this one builds the model from
    config.json (on the CPU, randomly initialized, then overwritten: host memory for the dense model),
    which hides their cost where a core is free; then moved to `device`.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    if not is_compressed_dir(path):
        raise FileNotFoundError(f"{path} has no {COMPRESSED_FILE}; write one with scripts/compress_model.py or --save_compressed")
    file = path / COMPRESSED_FILE
    tensors, metadata, checksums = open_compressed(file, verify)
    with ThreadPoolExecutor(max_workers=1) as pool:
        mismatch = pool.submit(first_mismatch, tensors, checksums) if checksums is not None else None
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
        model = AutoModelForCausalLM.from_config(config, dtype=DTYPES[metadata["dtype"]])
        damaged = mismatch.result() if mismatch is not None else None
    if damaged is not None:
        raise checksum_error(file, damaged)
    if kernel == "hybrid":
        matrices = checked_matrices(tensors, metadata, file)
        placeholders = {name: torch.empty(shape, dtype=DTYPES[metadata["dtype"]], device="meta")
                        for name, (_, _, shape) in matrices.items()}
        check_against_model({**tensors, **placeholders}, model, file)
        model.load_state_dict(tensors, strict=False)
        on_kernel = install_hybrid(model, matrices, metadata["block_size"])
        logger.info("%s: %d of %d pruned Linears run the hybrid kernel", path, on_kernel, len(matrices))
        return model.eval()
    state_dict = decode_matrices(tensors, metadata, file)
    check_against_model(state_dict, model, file)
    model.load_state_dict(state_dict, strict=False)
    return model.to(device).eval()
