#!/usr/bin/env python
"""Pruning quality of three-tier configurations on the default model, one table.

Prunes SmolLM2-135M-Instruct with 32 x 512 WikiText-2 calibration (validation as the
pool when there is no train split), seed 0, and reports perplexity on the first 64 test
windows of 512 tokens: dense; three-tier 0.35/0.45/0.2, k = 15, for every combination of
{wanda, sparsegpt} x {matrix, row, layer, model} x {owl off, on}; and unstructured Wanda and
SparseGPT at the same overall sparsity. `--only` picks rows by name, including rows outside
the default table (three-tier with magnitude intra-block choice, unstructured 0.5, 2:4
Wanda and magnitude). All configurations share one model load, one
set of calibration samples and one dense-model profile (model scope / OWL; its time is
added to the prune time of every row that uses it); weights are restored between them.

With `--rows_dir`, every finished row is saved there and reused by later runs with the same
settings: an interrupted run resumes, and workers with disjoint `--only` lists can fill
one table in parallel (one thread each), then a run without `--only` prints it.

    python scripts/bench_quality.py --data_dir ../shared/data --output out/bench_quality.json
    OMP_NUM_THREADS=1 python scripts/bench_quality.py --data_dir ../shared/data --rows_dir out/rows --only dense ...
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import re
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from lib.cost import checkpoint_cost
from lib.data import get_loaders
from lib.models import DEFAULT_MODEL, effective_seqlen, load_model
from lib.perplexity import perplexity
from lib.prune import PruneConfig, measure_sparsity, profile_model, prune_model
from lib.results import environment_info, write_json

logger = logging.getLogger("bench_quality")
RATIOS = (0.35, 0.45, 0.2)


def configurations(only: list[str] | None) -> dict[str, PruneConfig | None]:
    configs: dict[str, PruneConfig | None] = {"dense": None}
    for method, scope, owl in itertools.product(("wanda", "sparsegpt"), ("matrix", "row", "layer", "model"), (False, True)):
        name = f"three_tier {method} {scope}" + (" owl" if owl else "")
        configs[name] = PruneConfig(prune_method=method, ratios=RATIOS, tier_scope=scope, owl=owl)
    sparsity = RATIOS[1] * 0.5 + RATIOS[2] * (1 - 15 / 256)
    for method in ("wanda", "sparsegpt"):
        configs[f"unstructured {method}"] = PruneConfig(prune_method=method, sparsity_type="unstructured", sparsity_ratio=sparsity)
    # the pruning issue's comparison rows (not in the default table; select them with --only)
    extra = {
        "three_tier wanda matrix intra-magnitude": PruneConfig(ratios=RATIOS, intra_block_metric="magnitude"),
        "unstructured wanda 0.5": PruneConfig(sparsity_type="unstructured", sparsity_ratio=0.5),
        "2:4 wanda": PruneConfig(sparsity_type="2:4"),
        "2:4 magnitude": PruneConfig(sparsity_type="2:4", prune_method="magnitude"),
        "4:8 wanda": PruneConfig(sparsity_type="4:8"),
        # other tier shares along the cost axis (the frontier plot)
        "three_tier sparsegpt row 0.5/0.4/0.1": PruneConfig(prune_method="sparsegpt", ratios=(0.5, 0.4, 0.1), tier_scope="row"),
        "three_tier sparsegpt row 0.2/0.5/0.3": PruneConfig(prune_method="sparsegpt", ratios=(0.2, 0.5, 0.3), tier_scope="row"),
    }
    if not only:
        return configs
    configs.update(extra)
    unknown = [o for o in only if o not in configs]
    if unknown:
        raise SystemExit(f"error: unknown configuration(s) {unknown}; choose from: {', '.join(configs)}")
    return {k: configs[k] for k in only}  # in the order given


def _row_path(rows_dir: Path, name: str) -> Path:
    return rows_dir / (re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") + ".json")


def _cached_row(rows_dir: Path | None, name: str, settings: dict) -> dict | None:
    """A row saved by an earlier run with the same settings, else None."""
    if rows_dir is None or not _row_path(rows_dir, name).is_file():
        return None
    saved = json.loads(_row_path(rows_dir, name).read_text())
    return saved["row"] if saved.get("settings") == settings else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--eval_windows", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME", help='run only these rows, e.g. "dense" "three_tier wanda matrix"')
    parser.add_argument("--output", default=None, help="also write the table as JSON here")
    parser.add_argument("--rows_dir", default=None, help="save each finished row here and reuse rows saved with the same settings")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    configs = configurations(args.only)
    settings = {k: getattr(args, k) for k in ("model", "data_dir", "nsamples", "seqlen", "eval_windows", "seed")}
    rows_dir = Path(args.rows_dir) if args.rows_dir else None
    if rows_dir:
        rows_dir.mkdir(parents=True, exist_ok=True)

    rows = {name: _cached_row(rows_dir, name, settings) for name in configs}
    todo = [name for name, row in rows.items() if row is None]
    model = tokenizer = testenc = samples = original = None
    if todo:
        torch.manual_seed(args.seed)
        model, tokenizer = load_model(args.model, device=args.device)
        seqlen = effective_seqlen(model, args.seqlen)
        trainloader, testenc = get_loaders("wikitext2", args.nsamples, args.seed, seqlen, tokenizer, args.data_dir)
        samples = [inp for inp, _ in trainloader]
        original = {k: v.detach().clone() for k, v in model.state_dict().items()}
    profiles: dict[tuple, tuple] = {}  # (block size, owl_m, calibrated) -> (profile, seconds)

    header = f"{'configuration':<34}{'sparsity':>10}{'PPL':>10}{'PPL/dense':>11}{'prune s':>9}{'eval s':>8}"
    print(header, flush=True)
    dense_ppl = next((r["ppl"] for n, r in rows.items() if n == "dense" and r), None)
    for name, config in configs.items():
        row = rows[name]
        if row is None:
            model.load_state_dict(original)
            prune_s = 0.0
            profile = None
            if config is not None and config.needs_profile:
                key = (config.block_size, config.owl_m, config.needs_calibration)
                if key not in profiles:
                    start = time.perf_counter()
                    profiles[key] = (profile_model(model, samples, config, progress=False), time.perf_counter() - start)
                profile, prune_s = profiles[key]
            start = time.perf_counter()
            tier_maps = prune_model(model, samples, config, progress=False, profile=profile).tier_maps if config else {}
            prune_s += time.perf_counter() - start
            start = time.perf_counter()
            ppl = perplexity(model, testenc.input_ids, seqlen, args.eval_windows, progress=False)["ppl"]
            eval_s = time.perf_counter() - start
            row = {"configuration": name, "sparsity": measure_sparsity(model)["sparsity"], "ppl": ppl,
                   "prune_s": prune_s, "eval_s": eval_s,
                   **checkpoint_cost(model, tier_maps, *((config.block_size, config.topk_per_block) if config else ()))}
            if rows_dir:
                write_json(_row_path(rows_dir, name), {"settings": settings, "row": row})
        dense_ppl = row["ppl"] if name == "dense" else dense_ppl
        row["ppl_over_dense"] = row["ppl"] / dense_ppl if dense_ppl else None
        rows[name] = row
        ratio = f"{row['ppl_over_dense']:.2f}" if dense_ppl else "-"
        print(f"{name:<34}{row['sparsity']:>10.4f}{row['ppl']:>10.2f}{ratio:>11}{row['prune_s']:>9.1f}{row['eval_s']:>8.1f}", flush=True)
    if args.output:
        write_json(args.output, {"settings": vars(args), "environment": environment_info(), "rows": list(rows.values())})
    return 0


if __name__ == "__main__":
    sys.exit(main())
