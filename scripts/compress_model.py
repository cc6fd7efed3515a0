#!/usr/bin/env python
"""Write a pruned (or fine-tuned) model directory in the compact tiered format, and report sizes.

    python scripts/compress_model.py out/pruned_model out/pruned_tiered
    python scripts/compress_model.py out/pruned_model out/pruned_bitmask --encoding bitmask

MODEL_DIR is a `save_pretrained` directory (`--save_model`, or a fine-tuned model); its
tier_map.safetensors (when present) gives each decoder Linear's tiers. A matrix without a
tier map that holds at most 2 nonzeros per group of 4 is stored as all-2:4 tiles; any other
matrix with enough zeros to gain is stored as a bitmask. MODEL_DIR may also be a tiered directory
(checksums verified): that rewrites, e.g., a format-1 file in the current format with checksums.
The model keeps its dtype. The output
loads with `lib.tiered.checkpoint.load_tiered_model(OUT)` (and with every `--model` flag); `--verify`
reloads it and checks every tensor against the input. OUT follows the toolkit's output rule
(lib/core/outputs.py): it replaces only a missing path, an empty directory or an earlier tiered_model
output of this toolkit; --overwrite writes into any other directory, replacing same-named entries
and deleting nothing.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from lib.core.cli import OneLineParser, run_or_fail, setup_logging
from lib.core.outputs import Output, claim_outputs
from lib.core.writes import atomic_dir
from lib.models.arch import decoder_linear_weights
from lib.models.checks import check_model_dir
from lib.models.loading import run_inputs, saved_size_estimate
from lib.models.weights import check_model_weights
from lib.tiered.checkpoint import COMPRESSED_FILE, ENCODINGS, is_compressed_dir, load_tiered_model, save_compressed
from lib.tiered.tier_map import DEFAULT_BLOCK_SIZE, TIER_MAP_FILE, TierMetadata, check_block_size, load_tier_maps

logger = logging.getLogger("compress_model")


class RoundTripError(Exception):
    """The reloaded output differs from the input (exit 1, not a usage error)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(description=__doc__)
    parser.add_argument("model_dir", help="pruned model directory (save_pretrained, with tier_map.safetensors when three-tier)")
    parser.add_argument("out", help="output directory (replaces only an earlier output of this toolkit; see --overwrite)")
    parser.add_argument("--encoding", choices=ENCODINGS, default="tiered", help="tiered (default), or bitmask for every sparse matrix (the reference)")
    parser.add_argument("--block_size", type=int, default=None,
                        help=f"tile size for matrices without a tier map (default: the tier map's, else {DEFAULT_BLOCK_SIZE})")
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                        help="store the values in this dtype (default: the model's own); zeros stay zeros")
    parser.add_argument("--verify", action="store_true", help="reload the output and check it equals the input")
    parser.add_argument("--overwrite", action="store_true",
                        help="let OUT write into a directory this toolkit did not write: same-named entries are replaced, "
                             "nothing else is deleted (default: refuse)")
    return parser.parse_args(argv)


def read_tier_maps(model_dir: Path, block_size: int | None) -> tuple[dict[str, torch.Tensor], TierMetadata]:
    """The tier maps of `model_dir` and their metadata (checked: lib.tiered.tier_map.TierMetadata), or none and the
    default metadata; `block_size` (--block_size) tiles the matrices without a tier map and must match a tier map's."""
    tier_maps, tiers = load_tier_maps(model_dir / TIER_MAP_FILE) if (model_dir / TIER_MAP_FILE).is_file() else ({}, TierMetadata())
    if block_size is None or block_size == tiers.block_size:
        return tier_maps, tiers
    if tier_maps:
        raise ValueError(f"--block_size {block_size} differs from the tier map's {tiers.block_size}; drop the flag")
    return tier_maps, replace(tiers, block_size=block_size)


def compress(args: argparse.Namespace) -> None:
    model_dir, out = Path(args.model_dir), Path(args.out)
    if args.block_size is not None:
        check_block_size(args.block_size, "--block_size")
    if not (model_dir / "config.json").is_file():
        raise ValueError(f"{model_dir} is not a model directory (no config.json); pass a --save_model or fine-tuning output")
    check_model_dir(model_dir, str(model_dir))  # never code from the model directory
    output = Output("out", out, "tiered_model", size=saved_size_estimate(str(model_dir)) // 4)
    with claim_outputs([output], run_inputs(str(model_dir), model_flag="model_dir"), overwrite=args.overwrite):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tier_maps, tiers = read_tier_maps(model_dir, args.block_size)
        dtype = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
        if is_compressed_dir(model_dir):
            model = load_tiered_model(model_dir)
            model = model if dtype == "auto" else model.to(dtype)
        else:
            check_model_weights(model_dir)
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, trust_remote_code=False).eval()
        tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
        with atomic_dir(out, "tiered_model", args.overwrite, "out") as tmp:
            save_compressed(model, tokenizer, tmp, decoder_linear_weights(model), tier_maps, tiers, args.encoding)
    dense = sum(t.nbytes for t in {t.data_ptr(): t for t in model.state_dict().values()}.values())
    compressed = (out / COMPRESSED_FILE).stat().st_size
    logger.info("%s: %d bytes (%s, %s); the dense tensors: %d bytes; ratio %.3f",
                out / COMPRESSED_FILE, compressed, args.encoding, str(model.dtype)[6:], dense, compressed / dense)
    if args.verify:
        reloaded = load_tiered_model(out).state_dict()
        bad = [k for k, v in model.state_dict().items() if not torch.equal(v, reloaded[k])]
        if bad:
            raise RoundTripError(f"{len(bad)} tensors differ after the round trip, e.g. {bad[0]}")
        logger.info("verified: all %d tensors equal after reloading", len(reloaded))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    try:
        return run_or_fail(compress, args, errors=(ValueError, OSError))
    except RoundTripError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
