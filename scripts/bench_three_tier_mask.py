#!/usr/bin/env python
"""Time the three-tier mask function on the CPU against a memory-bound floor.

For a Llama-2-7B MLP matrix (4096 x 11008) and a SmolLM2-135M MLP matrix (576 x 1536),
float32, prints the mask time (median of --repeats), ms per million weights, the time of
`W.clone()` on the same matrix (a memory-bound floor) and their ratio. Goal: mask <= 20x
clone on 4096 x 11008.

    python scripts/bench_three_tier_mask.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from lib.pruning.masks import three_tier_mask

SHAPES = ((4096, 11008), (576, 1536))


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, median of {args.repeats}")
    print(f"{'shape':>14}{'mask ms':>10}{'ms/Mweight':>12}{'clone ms':>10}{'mask/clone':>12}")
    for out_features, in_features in SHAPES:
        weight = torch.randn(out_features, in_features)
        act_norm_sq = torch.rand(in_features)
        mask_ms = median_ms(lambda: three_tier_mask(weight, act_norm_sq), args.repeats)
        clone_ms = median_ms(weight.clone, args.repeats)
        per_million = mask_ms / (weight.numel() / 1e6)
        print(f"{out_features:>6} x {in_features:<6}{mask_ms:>10.1f}{per_million:>12.2f}{clone_ms:>10.2f}{mask_ms / clone_ms:>12.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
