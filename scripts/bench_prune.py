#!/usr/bin/env python
"""Whole-model pruning of the default model: split of wall time and peak memory.

Runs the three-tier pipeline (or any --sparsity_type / --prune_method) on the default
model and prints the wall time of loading, calibration data, calibration forwards
(statistics + recomputing layer outputs), mask math and evaluation, each as a share of
the total, and the peak resident memory (CPU) or peak allocated memory (CUDA).

    python scripts/bench_prune.py --data_dir ../shared/data --nsamples 32 --seqlen 512 --eval_windows 16
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from lib.data import get_loaders
from lib.models import DEFAULT_MODEL, effective_seqlen, load_model
from lib.perplexity import perplexity
from lib.prune import PruneConfig, measure_sparsity, prune_model
from lib.results import Timer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--eval_windows", type=int, default=16)
    parser.add_argument("--sparsity_type", default="three_tier")
    parser.add_argument("--prune_method", default="wanda")
    parser.add_argument("--calib_batch_size", type=int, default=8)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    timer = Timer()
    start = time.perf_counter()
    with timer("load"):
        model, tokenizer = load_model(args.model, device=args.device)
    seqlen = effective_seqlen(model, args.seqlen)
    with timer("data"):
        trainloader, testenc = get_loaders("wikitext2", args.nsamples, 0, seqlen, tokenizer, args.data_dir)
    config = PruneConfig(sparsity_type=args.sparsity_type, prune_method=args.prune_method, calib_batch_size=args.calib_batch_size)
    result = prune_model(model, [inp for inp, _ in trainloader], config, progress=False)
    with timer("evaluation"):
        ppl = perplexity(model, testenc.input_ids, seqlen, args.eval_windows, progress=False)
    total = time.perf_counter() - start
    split = {**{k: v for k, v in timer.seconds.items() if k != "evaluation"}, **result.timings, "evaluation": timer.seconds["evaluation"]}
    print(f"{args.model}: {args.sparsity_type} / {args.prune_method}, {args.nsamples} x {seqlen} calibration, "
          f"{ppl['n_windows']} eval windows; sparsity {measure_sparsity(model)['sparsity']:.4f}, PPL {ppl['ppl']:.2f}")
    print(f"{'stage':<22}{'seconds':>9}{'share':>8}")
    for name, seconds in split.items():
        print(f"{name:<22}{seconds:>9.1f}{seconds / total:>8.1%}")
    print(f"{'total':<22}{total:>9.1f}")
    if torch.cuda.is_available() and str(next(model.parameters()).device).startswith("cuda"):
        print(f"peak CUDA memory allocated: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    print(f"peak resident memory (process): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
