#!/usr/bin/env python
"""Time the hybrid CPU kernel (lib/tiered/kernel, docs/kernel.md) against dense, per matrix and end to end.

Kernel rows: y = x W^T for one matrix at batch 1 and 4, the kernel (`HybridLinear`) against `F.linear` on the
same dense-with-zeros matrix, both timed interleaved in this run (warm-up, then the median of --repeats) with
the same thread count. Shapes: 4096 x 11008 (a Llama-2-7B MLP, random weights) and the seven Linears of one
decoder layer of the default model (real weights; --layer). Structures: three_tier (0.35/0.45/0.2, b = 16,
k = 15, blocks ranked by |W| with the toolkit's mask code), 2:4 (uniform, by |W|) and bitmask (50%
unstructured, by |W| per row). bytes_ratio = bytes the kernel reads (its layout) / dense bytes: the limit of
time_ratio for a memory-bound product.

Decode rows: greedy generation (KV cache) of --prompt_tokens tokens of WikiText-2 test text followed by
--new_tokens new tokens, batch 1 and 4, for the dense --model and every --checkpoint NAME=DIR (a tiered
directory, loaded with kernel="hybrid"), timed interleaved; tokens_per_s counts new tokens of all rows of the
batch, speedup = tokens/s / dense's in this run, bytes_ratio = bytes the decoder Linears read / dense's.
same_tokens says whether a checkpoint's generated tokens equal those of the same checkpoint decoded to dense
weights (load_model with kernel "none", the exact product); where they differ, first_difference gives the
step and the top-2 logit gap of both runs there (a gap within float tolerance explains the difference).

Every row is logged when measured and --json OUT (JSON, written after every row) keeps them all.

    python scripts/bench_decode.py --data_dir DATA --checkpoint three_tier=out/tiered --json out/bench_decode.json
    python scripts/bench_decode.py --quick --data_dir DATA --json out/bench_decode_quick.json
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import torch.nn.functional as F

from lib.core.cli import OneLineParser, check_range, run_or_fail, setup_logging
from lib.core.errors import ModelLoadError, OutputError
from lib.core.outputs import Output, claim_outputs
from lib.core.results import environment_info
from lib.core.writes import write_output_json
from lib.pruning.masks import nm_keep, three_tier_mask, unstructured_keep
from lib.tiered.checkpoint import is_compressed_dir
from lib.tiered.format import encode_bitmask, encode_tiered, nm_tier_map
from lib.tiered.kernel.linear import HybridLinear
from lib.tiered.tier_map import DEFAULT_BLOCK_SIZE, DEFAULT_TOPK_PER_BLOCK

logger = logging.getLogger("bench_decode")
STRUCTURES = ("three_tier", "2:4", "bitmask")
KIND = "decode_bench"
LLAMA_MLP = (4096, 11008)


def build_parser() -> argparse.ArgumentParser:
    from lib.models.loading import DEFAULT_MODEL

    p = OneLineParser(description=__doc__)
    p.add_argument("--model", default=DEFAULT_MODEL, help="the dense model (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="NAME=DIR",
                   help="a tiered checkpoint directory of --model to decode with the hybrid kernel (repeatable)")
    p.add_argument("--data_dir", default=None, help="local data root (default: env WANDA_DATA_DIR, else the Hub)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for every row (default: torch's)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per row (median; default 21 kernel, 3 decode)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4], help="batch sizes (default 1 4)")
    p.add_argument("--prompt_tokens", type=int, default=128)
    p.add_argument("--new_tokens", type=int, default=128)
    p.add_argument("--layer", type=int, default=0, help="decoder layer of --model whose Linears are timed")
    p.add_argument("--only", choices=("kernel", "decode"), default=None, help="only the kernel rows or the decode rows")
    p.add_argument("--quick", action="store_true",
                   help="a tiny run: kernel rows on one 576 x 1536 random matrix, batch 1, 16 + 8 tokens, 2 repeats")
    p.add_argument("--json", default=None, metavar="OUT", help="write every row to this JSON file")
    p.add_argument("--overwrite", action="store_true", help="let --json replace a file this toolkit did not write")
    return p


def parse_checkpoints(values: list[str]) -> dict[str, str]:
    """["name=dir", ...] -> {name: dir}; one line for a malformed value, a repeated name or a non-tiered dir."""
    checkpoints: dict[str, str] = {}
    for value in values:
        name, sep, directory = value.partition("=")
        if not sep or not name or not directory:
            raise ValueError(f"--checkpoint {value!r}: use NAME=DIR")
        if name in checkpoints or name == "dense":
            raise ValueError(f"--checkpoint name {name!r} is used twice (dense is the baseline's name)")
        if not is_compressed_dir(directory):
            raise ValueError(f"--checkpoint {name}={directory} is not a tiered checkpoint directory (write one with "
                             "main_block_three_tier.py --save_compressed)")
        checkpoints[name] = directory
    return checkpoints


def interleaved_medians(fns: list, repeats: int, warmup: int = 2) -> list[float]:
    """Median seconds of each fn, called in turn (fn0, fn1, fn0, fn1, ...) after `warmup` rounds."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return [statistics.median(bucket) for bucket in times]


def structured(weight: torch.Tensor, structure: str) -> tuple[HybridLinear, torch.Tensor]:
    """(`weight` pruned to `structure` by |W| as a HybridLinear, the same pruned weight dense with zeros)."""
    shape, b, k = tuple(weight.shape), DEFAULT_BLOCK_SIZE, DEFAULT_TOPK_PER_BLOCK
    if structure == "three_tier":
        keep, tier_map = three_tier_mask(weight, None)
        pruned = weight * keep
        return HybridLinear("tiered", encode_tiered(pruned, tier_map, b, k), shape, b), pruned
    if structure == "2:4":
        pruned = weight * nm_keep(weight.abs(), 2, 4)
        return HybridLinear("tiered", encode_tiered(pruned, nm_tier_map(pruned, b), b, k), shape, b), pruned
    pruned = weight * unstructured_keep(weight.abs(), 0.5)
    return HybridLinear("bitmask", encode_bitmask(pruned), shape, b), pruned


def kernel_rows(matrices: dict[str, torch.Tensor], batches: list[int], repeats: int, emit) -> None:
    for label, weight in matrices.items():
        for structure in STRUCTURES:
            module, dense = structured(weight, structure)
            dense_bytes = dense.numel() * dense.element_size()
            for batch in batches:
                x = torch.randn(batch, weight.shape[1])
                with torch.inference_mode():
                    kernel_s, linear_s = interleaved_medians([lambda: module(x), lambda: F.linear(x, dense)], repeats)
                emit({"kind": "kernel", "matrix": label, "shape": list(weight.shape), "structure": structure,
                      "batch": batch, "time_ratio": kernel_s / linear_s, "kernel_s": kernel_s, "linear_s": linear_s,
                      "bytes_ratio": module.stored_bytes() / dense_bytes, "kernel": module.uses_kernel})


def layer_matrices(model_name: str, layer: int) -> dict[str, torch.Tensor]:
    """The seven Linear weights of decoder layer `layer` of `model_name` (float32), by module name."""
    from lib.models.arch import decoder_linear_weights
    from lib.models.loading import load_model

    model, _ = load_model(model_name, device="cpu")
    prefix = f"model.layers.{layer}."
    return {name.removesuffix(".weight"): w.detach().float().clone()
            for name, w in decoder_linear_weights(model).items() if name.startswith(prefix)}


def linear_bytes(model, names: list[str]) -> int:
    """Bytes the decoder Linears `names` (the dense model's weight names) read per token: a HybridLinear's stored
    layout, else the dense weight."""
    total = 0
    for name in names:
        module = model.get_submodule(name.removesuffix(".weight"))
        total += module.stored_bytes() if isinstance(module, HybridLinear) else module.weight.numel() * module.weight.element_size()
    return total


def generate(model, prompts: torch.Tensor, new_tokens: int):
    """Greedy generation with the KV cache: (generated ids [B, new_tokens], raw logits [new_tokens, B, V])."""
    with torch.inference_mode():
        out = model.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, use_cache=True, return_dict_in_generate=True,
                             output_logits=True, pad_token_id=model.config.eos_token_id)
    return out.sequences[:, prompts.shape[1]:], torch.stack(out.logits)


def first_difference(dense_ids, dense_logits, ids, logits) -> dict | None:
    """None when the tokens are equal; else the first differing (step, row) and both runs' top-2 logit gaps there
    (dense_top2_gap: the reference run's)."""
    differ = (dense_ids != ids).nonzero()
    if not len(differ):
        return None
    step = int(differ[:, 1].min())
    row = int(differ[differ[:, 1] == step][0, 0])

    def gap(values):
        top = values[step, row].float().topk(2).values
        return float(top[0] - top[1])

    return {"step": step, "row": row, "dense_top2_gap": gap(dense_logits), "top2_gap": gap(logits)}


def decode_rows(args, checkpoints: dict[str, str], repeats: int, emit) -> None:
    from lib.data import get_eval_tokens
    from lib.models.loading import load_model

    dense, tokenizer = load_model(args.model, device="cpu")
    models = {"dense": dense, **{name: load_model(d, device="cpu", kernel="hybrid")[0] for name, d in checkpoints.items()}}
    tokens = get_eval_tokens("wikitext2", tokenizer, args.data_dir)[0]
    need = max(args.batches) * args.prompt_tokens
    if len(tokens) < need:
        raise ValueError(f"the WikiText-2 test text has {len(tokens)} tokens; {need} are needed (--prompt_tokens x batch)")
    from lib.models.arch import decoder_linear_weights

    names = list(decoder_linear_weights(dense))
    dense_bytes = linear_bytes(dense, names)
    for batch in args.batches:
        prompts = tokens[:need].reshape(-1, args.prompt_tokens)[:batch].clone()
        results = {name: generate(model, prompts, args.new_tokens) for name, model in models.items()}  # also warm-up
        references = {name: generate(load_model(d, device="cpu")[0], prompts, args.new_tokens)  # kernel none: decoded
                      for name, d in checkpoints.items()}
        seconds = interleaved_medians([lambda m=m: generate(m, prompts, args.new_tokens) for m in models.values()],
                                      repeats, warmup=0)
        dense_rate = batch * args.new_tokens / seconds[0]
        for (name, model), s in zip(models.items(), seconds):
            rate = batch * args.new_tokens / s
            ids, logits = results[name]
            diff = first_difference(*references[name], ids, logits) if name in references else None
            row = {"kind": "decode", "name": name, "batch": batch, "tokens_per_s": rate, "speedup": rate / dense_rate,
                   "bytes_ratio": linear_bytes(model, names) / dense_bytes, "same_tokens": diff is None,
                   "seconds": s, "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens}
            if diff is not None:
                row["first_difference"] = diff
            emit(row)


def run(args: argparse.Namespace) -> int:
    from lib.models.loading import run_inputs

    check_range("--threads", args.threads, 1)
    check_range("--repeats", args.repeats, 1)
    check_range("--prompt_tokens", args.prompt_tokens, 1)
    check_range("--new_tokens", args.new_tokens, 1)
    for batch in args.batches:
        check_range("--batches", batch, 1)
    checkpoints = parse_checkpoints(args.checkpoint)
    if args.quick:
        args.batches, args.prompt_tokens, args.new_tokens = [1], 16, 8
    if args.threads:
        torch.set_num_threads(args.threads)
    rows: list[dict] = []
    settings = {**vars(args), "threads": torch.get_num_threads()}
    outputs = [Output("--json", args.json, KIND, is_file=True)] if args.json else []
    extra = {f"--checkpoint {name}": Path(d) for name, d in checkpoints.items()}
    with claim_outputs(outputs, run_inputs(args.model, data_dir=args.data_dir, extra=extra), overwrite=args.overwrite):
        def emit(row: dict) -> None:
            rows.append(row)
            logger.info("%s", " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
            if args.json:
                write_output_json(args.json, {"settings": settings, "environment": environment_info(), "rows": rows},
                                  KIND, args.overwrite, "--json")

        torch.manual_seed(0)
        logger.info("torch %s, %d threads", torch.__version__, torch.get_num_threads())
        if args.only != "decode":
            if args.quick:
                matrices = {"random": torch.randn(576, 1536)}
            else:
                matrices = {"random": torch.randn(*LLAMA_MLP), **layer_matrices(args.model, args.layer)}
            kernel_rows(matrices, [1] if args.quick else args.batches, args.repeats or (2 if args.quick else 21), emit)
        if args.only != "kernel":
            decode_rows(args, checkpoints, args.repeats or (2 if args.quick else 3), emit)
    if args.json:
        logger.info("wrote %s (%d rows)", args.json, len(rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    return run_or_fail(run, args, errors=(ValueError, ModelLoadError, FileNotFoundError, OutputError))


if __name__ == "__main__":
    sys.exit(main())
