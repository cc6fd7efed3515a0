#!/usr/bin/env python
"""What the OWL profile costs, and how its layer shares move when it sees fewer samples.

In one run on the default model: the dense-model profile (`--owl`, `--tier_scope model`) on
all calibration samples and on the first N of them (`--profile_nsamples N`), each timed and
compared with the full profile (largest absolute difference of any layer's dense / 2:4 /
top-k share), then the prune itself without OWL, so that each profile's time is printed as
the share it adds to the prune's wall time.

    python scripts/bench_owl_profile.py --data_dir DATA --nsamples 32 --seqlen 512 --subsets 2 4 8 16
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.pruning.driver import PruneConfig, plan_layer_ratios, profile_model, prune_model
from scripts.bench_setup import add_model_args, load_calibrated


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--subsets", type=int, nargs="+", default=[2, 4, 8, 16], help="profile sample counts to compare")
    parser.add_argument("--prune_method", default="sparsegpt")
    parser.add_argument("--tier_scope", default="row")
    args = parser.parse_args()

    model, _, seqlen, samples, _ = load_calibrated(args)
    config = PruneConfig(prune_method=args.prune_method, tier_scope=args.tier_scope, owl=True)

    rows = []
    for n in [args.nsamples, *sorted(args.subsets, reverse=True)]:
        start = time.perf_counter()
        block_scores, outliers = profile_model(model, samples, dataclasses.replace(config, profile_nsamples=n), progress=False)
        seconds = time.perf_counter() - start
        rows.append((n, seconds, plan_layer_ratios(block_scores, outliers, config)))
    full = rows[0][2]
    prune = prune_model(model, samples, dataclasses.replace(config, owl=False), progress=False)
    prune_s = sum(prune.timings.values())

    print(f"{args.model}: {args.prune_method} / {args.tier_scope}, {args.nsamples} x {seqlen} WikiText-2 calibration; "
          f"prune without OWL {prune_s:.1f} s")
    print(f"{'profile samples':<17}{'seconds':>9}{'adds to prune':>15}{'max |share diff|':>18}")
    for n, seconds, ratios in rows:
        diff = max(abs(a - b) for r, f in zip(ratios, full) for a, b in zip(r, f))
        print(f"{n:<17}{seconds:>9.1f}{seconds / prune_s:>14.1%}{diff:>18.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
