#!/usr/bin/env python
"""What checksum verification adds to loading a tiered checkpoint (lib/tiered/checkpoint.py, format version 2).

Loads DIR with `load_tiered_model(DIR, verify=True)` and `verify=False` alternately (one warm-up
each, then --repeats of each, interleaved and alternating which goes first, so that other load on
a shared machine hits both alike) and prints the median wall and process CPU seconds of each and
the ratios verified / not verified, which the format promises to keep at or below 1.05: the ratio
of the wall medians, of the CPU medians, and the median of the per-pair wall ratios. Make the
default model's checkpoint with

    python main_block_three_tier.py --nsamples 8 --seqlen 256 --no_eval --data_dir sample_data --save_compressed out/tiered
    python scripts/bench_tiered_verify.py out/tiered
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.core.cli import OneLineParser, run_or_fail, setup_logging
from lib.core.errors import ModelLoadError
from lib.tiered.checkpoint import COMPRESSED_FILE, is_compressed_dir, load_tiered_model


def seconds(fn) -> tuple[float, float]:
    """(wall, process CPU) seconds of fn(), without freeing its result."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    elapsed = time.perf_counter() - wall, time.process_time() - cpu
    del result
    return elapsed


def medians(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def bench(args: argparse.Namespace) -> None:
    if args.repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {args.repeats}")
    if not is_compressed_dir(args.dir):
        raise ValueError(f"{args.dir} has no {COMPRESSED_FILE}; write one with --save_compressed (see --help)")
    path = Path(args.dir) / COMPRESSED_FILE
    times: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for verify in (True, False):  # warm-up: page cache, imports
        load_tiered_model(args.dir, verify=verify)
    for repeat in range(args.repeats):
        for verify in ((True, False) if repeat % 2 == 0 else (False, True)):
            times[verify].append(seconds(lambda: load_tiered_model(args.dir, verify=verify)))
    paired = statistics.median(v[0] / t[0] for v, t in zip(times[True], times[False]))
    (verified, verified_cpu), (trusted, trusted_cpu) = medians(times[True]), medians(times[False])
    print(f"{path}: {path.stat().st_size / 1e6:.1f} MB; {args.repeats} loads each, interleaved")
    for verify, label in ((True, "checksums verified   "), (False, "--no_verify_checksums")):
        wall, cpu = medians(times[verify])
        print(f"load, {label}  median {wall:.3f} s wall, {cpu:.3f} s CPU  "
              f"(wall: {' '.join(f'{t:.2f}' for t, _ in times[verify])})")
    print(f"ratio verified / not verified: {verified / trusted:.3f} (wall medians), {verified_cpu / trusted_cpu:.3f} "
          f"(CPU medians), {paired:.3f} (median of the {args.repeats} paired wall ratios)")


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(description=__doc__)
    parser.add_argument("dir", help="a tiered checkpoint directory (--save_compressed / compress_model.py)")
    parser.add_argument("--repeats", type=int, default=11, help="loads of each kind (median)")
    args = parser.parse_args(argv)
    setup_logging()
    return run_or_fail(bench, args, errors=(ValueError, ModelLoadError, OSError))


if __name__ == "__main__":
    sys.exit(main())
