#!/usr/bin/env python
"""Pruning and evaluation of the default model, each phase against its floor, in one run.

Floors are bare no-grad forwards of the whole model measured in the same process, right
before the phase they bound, so the ratios hold on a machine whose speed drifts:
- a prune (Wanda three-tier, SparseGPT 2:4, SparseGPT three-tier with budgeted tiers at 2:4's bytes per matrix
  and per row of blocks, the best three-tier configuration) against
  two forwards over the calibration tokens in batches of --calib_batch_size (the layer-wise
  driver has to compute every layer's inputs and outputs once each);
- perplexity over --eval_windows windows against one forward over the same windows in
  batches of --eval_batch_size.
Wall and process CPU time are both printed (CPU time is steadier on a shared machine).
Each prune starts from the dense weights. Also prints each prune's split (calibration
forwards, mask math, profile), each budgeted prune's time over SparseGPT 2:4's (wall and CPU)
when both ran, and the peak resident memory.

    OMP_NUM_THREADS=2 python scripts/bench_prune.py --data_dir DATA
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

from lib.eval.perplexity import perplexity
from lib.models.arch import measure_sparsity, model_device
from lib.pruning.driver import PruneConfig, prune_model
from scripts.bench_setup import add_model_args, load_calibrated

PRUNES = {
    "wanda_three_tier": dict(sparsity_type="three_tier", prune_method="wanda"),
    "sparsegpt_2_4": dict(sparsity_type="2:4", prune_method="sparsegpt"),
    "sparsegpt_budgeted_matrix": dict(prune_method="sparsegpt", tier_assignment="budgeted", tier_budget="2:4"),
    "sparsegpt_budgeted_row": dict(prune_method="sparsegpt", tier_assignment="budgeted", tier_budget="2:4", tier_scope="row"),
    "best_three_tier": dict(sparsity_type="three_tier", prune_method="sparsegpt", tier_scope="row", owl=True),
}
PHASES = (*PRUNES, "perplexity")
BUDGET_REFERENCE = "sparsegpt_2_4"  # the budgeted phases' time is also printed against this one's (issue 22: <= 1.10)


class Clock:
    """Wall and process CPU seconds of a block: `with Clock() as c: ...; c.wall, c.cpu`.

    CPU time (all threads of this process) is the steadier measure on a shared machine.
    """

    def __enter__(self) -> "Clock":
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu


@torch.no_grad()
def bare_forwards(model, batches: list[torch.Tensor], passes: int) -> Clock:
    """`passes` plain forwards of the whole model over `batches` ([B, T] ids each), timed."""
    device = model_device(model)
    with Clock() as clock:
        for _ in range(passes):
            for ids in batches:
                model(ids.to(device), use_cache=False)
    return clock


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--eval_windows", type=int, default=64)
    parser.add_argument("--calib_batch_size", type=int, default=8)
    parser.add_argument("--eval_batch_size", type=int, default=8)
    parser.add_argument("--phases", nargs="+", default=list(PHASES), choices=PHASES, help="phases to run, in this order")
    args = parser.parse_args()

    model, _, seqlen, samples, testenc = load_calibrated(args)
    calib_batches = [torch.cat(samples[i : i + args.calib_batch_size]) for i in range(0, len(samples), args.calib_batch_size)]
    dense = {k: v.clone() for k, v in model.state_dict().items()}
    print(f"{args.model}: {len(samples)} x {seqlen} calibration, {args.eval_windows} x {seqlen} evaluation, "
          f"{torch.get_num_threads()} threads")
    seconds: dict[str, Clock] = {}
    print(f"{'phase':<26}{'wall s':>8}{'floor':>8}{'ratio':>7}{'cpu s':>8}{'floor':>8}{'ratio':>7}  details")
    for phase in args.phases:
        model.load_state_dict(dense)
        if phase == "perplexity":
            n_windows = min(args.eval_windows, testenc.input_ids.shape[1] // seqlen)
            windows = testenc.input_ids[0, : n_windows * seqlen].view(n_windows, seqlen)
            floor = bare_forwards(model, list(windows.split(args.eval_batch_size)), passes=1)
            with Clock() as clock:
                ppl = perplexity(model, testenc.input_ids, seqlen, args.eval_windows, args.eval_batch_size, progress=False)
            details = f"dense PPL {ppl['ppl']:.6f} over {ppl['n_windows']} windows"
        else:
            floor = bare_forwards(model, calib_batches, passes=2)
            config = PruneConfig(calib_batch_size=args.calib_batch_size, **PRUNES[phase])
            with Clock() as clock:
                result = prune_model(model, samples, config, progress=False)
            split = ", ".join(f"{k} {v:.1f}" for k, v in result.timings.items())
            details = f"sparsity {measure_sparsity(model)['sparsity']:.4f}; {split}"
        seconds[phase] = clock
        print(f"{phase:<26}{clock.wall:>8.1f}{floor.wall:>8.1f}{clock.wall / floor.wall:>7.2f}"
              f"{clock.cpu:>8.1f}{floor.cpu:>8.1f}{clock.cpu / floor.cpu:>7.2f}  {details}", flush=True)
    for phase in [p for p in seconds if p.startswith("sparsegpt_budgeted") and BUDGET_REFERENCE in seconds]:
        ref = seconds[BUDGET_REFERENCE]
        print(f"{phase} / {BUDGET_REFERENCE} prune time: wall {seconds[phase].wall / ref.wall:.3f}, "
              f"cpu {seconds[phase].cpu / ref.cpu:.3f} (issue 22 asks <= 1.10)")
    if torch.cuda.is_available() and str(model_device(model)).startswith("cuda"):
        print(f"peak CUDA memory allocated: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    print(f"peak resident memory (process): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
