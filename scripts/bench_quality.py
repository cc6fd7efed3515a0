#!/usr/bin/env python
"""Pruning quality of three-tier configurations on the default model, one table.

Prunes SmolLM2-135M-Instruct with 32 x 512 WikiText-2 calibration (validation as the
pool when there is no train split), once per calibration seed (`--seeds 0 1 2`; default 0),
and reports perplexity on the first 64 test
windows of 512 tokens: dense; three-tier 0.35/0.45/0.2, k = 15, for every combination of
{wanda, sparsegpt} x {matrix, row, layer, model} x {owl off, on}; and unstructured Wanda and
SparseGPT at the same overall sparsity. `--only` picks rows by name, including rows outside
the default table (three-tier with magnitude intra-block choice, unstructured 0.5, 2:4
Wanda and magnitude). All configurations share one model load, one
set of calibration samples and one dense-model profile (model scope / OWL; its time is
added to the prune time of every row that uses it); weights are restored between them.

With several seeds each row shows the mean and sample sd (ddof 1) of PPL over the seeds and
every seed's value, and pairs of rows (`--compare A B`; default: each OWL row against its
row without OWL, each row-scope row against its matrix-scope row) are compared with Welch's
t test over the per-seed perplexities: "exceeds the seed spread" when its p-value, adjusted by
Holm's method over all the comparisons of the run (family-wise error 0.05), is < 0.05, else "not
established". The dense row does not depend on the seed and is measured once.

`--frontier` runs the hardware frontier against SparseGPT 2:4 (`FRONTIER_ROWS`: SparseGPT 2:4 and 4:8,
unstructured SparseGPT at 50% and 41.3%, Wanda 2:4, the best fixed-share three-tier, budgeted three-tier at 2:4's
bytes (`--tier_assignment budgeted`) with k = 8 / 15 / 32 / 64, fixed shares at no more than 2:4's bytes) and
compares every pruned row with SparseGPT 2:4.

With `--rows_dir`, every finished (row, seed) is saved there and reused by later runs with the
same settings: an interrupted run resumes, and workers with disjoint `--only` / `--seeds`
lists can fill one table in parallel (one thread each), then a run with all of them prints it.

    python scripts/bench_quality.py --data_dir DATA --output out/bench_quality.json
    OMP_NUM_THREADS=1 python scripts/bench_quality.py --data_dir DATA --rows_dir out/rows --only dense ...
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

from lib.core.cli import OneLineParser, check_range, fail, interrupts_end_in_one_line, setup_logging
from lib.core.outputs import Output, check_outputs
from lib.core.results import environment_info, write_json
from lib.core.uncertainty import holm_adjust, mean_sd, welch_t
from lib.core.writes import write_output_json
from lib.data import check_sources, get_loaders
from lib.eval.perplexity import perplexity, window_count
from lib.models.arch import decoder_linear_weights, measure_sparsity
from lib.models.checks import effective_seqlen, given_seqlen
from lib.models.loading import DEFAULT_MODEL, check_model_early, load_model, run_inputs
from lib.pruning.driver import PruneConfig, profile_model, prune_model
from lib.pruning.masks import DEFAULT_RATIOS
from lib.tiered.cost import checkpoint_cost
from lib.tiered.tier_map import DEFAULT_BLOCK_SIZE, DEFAULT_TOPK_PER_BLOCK

logger = logging.getLogger("bench_quality")
DEFAULT_SEQLEN = 512


MATCHED_SHARES = ((0.15, 0.65, 0.2), (0.25, 0.45, 0.3), (0.35, 0.25, 0.4))  # dense / 2:4 / top-k block shares
OTHER_K = (4, 8, 32, 64)  # top-k sizes beside the default 15 (4: where the k trend of the budgeted rows points)
# the frontier table (--frontier): the structures hardware runs, SparseGPT's unstructured references at 50% and
# at the default three-tier's 41.3%, the best fixed-share three-tier and the budgeted rows at 2:4's bytes
FRONTIER_ROWS = ("dense", "2:4 sparsegpt", "4:8 sparsegpt", "unstructured sparsegpt 0.5", "unstructured sparsegpt",
                 "2:4 wanda", "three_tier sparsegpt row owl", "three_tier wanda matrix budget 2:4",
                 "three_tier sparsegpt matrix budget 2:4", "three_tier sparsegpt row budget 2:4",
                 *(f"three_tier sparsegpt row budget 2:4 k={k}" for k in OTHER_K),
                 *(f"three_tier sparsegpt row {'/'.join(map(str, r))}" for r in MATCHED_SHARES))
FRONTIER_REFERENCE = "2:4 sparsegpt"  # what --frontier compares every other pruned row against


def budgeted_rows() -> dict[str, PruneConfig]:
    """Budgeted tier assignment at exactly uniform 2:4's bytes (--tier_budget 2:4), and the top-k size as an axis."""
    rows = {f"three_tier {method} {scope} budget 2:4": PruneConfig(prune_method=method, tier_scope=scope,
                                                                   tier_assignment="budgeted", tier_budget="2:4")
            for method, scope in (("wanda", "matrix"), ("sparsegpt", "matrix"), ("sparsegpt", "row"))}
    rows.update({f"three_tier sparsegpt row budget 2:4 k={k}": PruneConfig(
        prune_method="sparsegpt", tier_scope="row", tier_assignment="budgeted", tier_budget="2:4", topk_per_block=k)
        for k in OTHER_K})
    return rows


def configurations(only: list[str] | None) -> dict[str, PruneConfig | None]:
    configs: dict[str, PruneConfig | None] = {"dense": None}
    for method, scope, owl in itertools.product(("wanda", "sparsegpt"), ("matrix", "row", "layer", "model"), (False, True)):
        name = f"three_tier {method} {scope}" + (" owl" if owl else "")
        configs[name] = PruneConfig(prune_method=method, tier_scope=scope, owl=owl)
    sparsity = DEFAULT_RATIOS[1] * 0.5 + DEFAULT_RATIOS[2] * (1 - DEFAULT_TOPK_PER_BLOCK / DEFAULT_BLOCK_SIZE**2)
    for method in ("wanda", "sparsegpt"):
        configs[f"unstructured {method}"] = PruneConfig(prune_method=method, sparsity_type="unstructured", sparsity_ratio=sparsity)
    # the pruning issue's comparison rows (not in the default table; select them with --only)
    extra = {
        "three_tier wanda matrix intra-magnitude": PruneConfig(intra_block_score="magnitude"),
        "three_tier ria matrix": PruneConfig(prune_method="ria"),
        "unstructured wanda 0.5": PruneConfig(sparsity_type="unstructured", sparsity_ratio=0.5),
        "2:4 wanda": PruneConfig(sparsity_type="2:4"),
        "2:4 magnitude": PruneConfig(sparsity_type="2:4", prune_method="magnitude"),
        "4:8 wanda": PruneConfig(sparsity_type="4:8"),
        # other tier shares along the cost axis (the frontier plot)
        "three_tier sparsegpt row 0.5/0.4/0.1": PruneConfig(prune_method="sparsegpt", ratios=(0.5, 0.4, 0.1), tier_scope="row"),
        "three_tier sparsegpt row 0.2/0.5/0.3": PruneConfig(prune_method="sparsegpt", ratios=(0.2, 0.5, 0.3), tier_scope="row"),
        # the hardware frontier against SparseGPT 2:4 (issue 22; FRONTIER_ROWS)
        "2:4 sparsegpt": PruneConfig(sparsity_type="2:4", prune_method="sparsegpt"),
        "4:8 sparsegpt": PruneConfig(sparsity_type="4:8", prune_method="sparsegpt"),
        "unstructured sparsegpt 0.5": PruneConfig(prune_method="sparsegpt", sparsity_type="unstructured", sparsity_ratio=0.5),
        **budgeted_rows(),
        # fixed shares at no more than 2:4's bytes (float32 and bfloat16) and sparsity-equivalent >= 50%
        **{f"three_tier sparsegpt row {'/'.join(map(str, r))}": PruneConfig(prune_method="sparsegpt", ratios=r, tier_scope="row")
           for r in MATCHED_SHARES},
        **{f"three_tier sparsegpt row owl k={k}": PruneConfig(prune_method="sparsegpt", tier_scope="row", owl=True,
                                                              topk_per_block=k) for k in OTHER_K},
    }
    if not only:
        return configs
    configs.update(extra)
    unknown = [o for o in only if o not in configs]
    if unknown:
        fail(f"unknown configuration(s) {unknown}; choose from: {', '.join(configs)}")
    return {k: configs[k] for k in only}  # in the order given


def _row_path(rows_dir: Path, name: str, seed: int) -> Path:
    suffix = f"_seed{seed}" if seed else ""  # seed 0 keeps the name rows were saved under before --seeds
    return rows_dir / (re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") + suffix + ".json")


def _cached_row(rows_dir: Path | None, name: str, seed: int, settings: dict) -> dict | None:
    """A row saved by an earlier run with the same settings (seed included), else None.

    Rows saved before --seeds (no per-window NLLs) are measured again.
    """
    if rows_dir is None or not _row_path(rows_dir, name, seed).is_file():
        return None
    saved = json.loads(_row_path(rows_dir, name, seed).read_text())
    return saved["row"] if saved.get("settings") == settings and "window_nll" in saved["row"] else None


class Bench:
    """One model load and test text; calibration samples and dense-model profiles per seed."""

    def __init__(self, args: argparse.Namespace, explicit_seqlen: bool = True):
        self.args = args
        check_model_early(args.model, args.seqlen, explicit_seqlen)  # the config and the data before the weights
        check_sources("wikitext2", args.data_dir)
        self.model, self.tokenizer = load_model(args.model, device=args.device)
        self.seqlen = effective_seqlen(self.model, args.seqlen, explicit_seqlen)
        self.original = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.samples: dict[int, list] = {}
        self.testenc, self.n_windows = None, None
        self.profiles: dict[tuple, tuple] = {}  # (seed, block size, owl_m, calibrated) -> (profile, seconds)

    def calibration(self, seed: int) -> list:
        if seed not in self.samples:
            loader, self.testenc = get_loaders("wikitext2", self.args.nsamples, seed, self.seqlen, self.tokenizer,
                                               self.args.data_dir)
            self.n_windows = window_count(self.testenc.input_ids.shape[1], self.seqlen, self.args.eval_windows,
                                          "the WikiText-2 test text")  # before the first pruning
            self.samples[seed] = [inp for inp, _ in loader]
        return self.samples[seed]

    def measure_row(self, name: str, config: PruneConfig | None, seed: int) -> dict:
        """Prune a fresh copy of the dense weights with `config` (None: dense) on seed `seed`'s calibration
        samples and measure perplexity: {"configuration", "seed", "sparsity", "ppl", "window_nll", "prune_s", "eval_s"}."""
        torch.manual_seed(seed)
        samples = self.calibration(seed)
        self.model.load_state_dict(self.original)
        prune_s, profile = 0.0, None
        if config is not None and config.needs_profile:
            key = (seed, config.block_size, config.owl_m, config.needs_calibration)
            if config.budgeted:  # its profile holds block losses and byte budgets, not mean scores
                key += (config.tier_budget, config.topk_per_block, config.intra_block_score, config.prune_method)
            if key not in self.profiles:
                start = time.perf_counter()
                self.profiles[key] = (profile_model(self.model, samples, config, progress=False), time.perf_counter() - start)
            profile, prune_s = self.profiles[key]
        start = time.perf_counter()
        tier_maps = prune_model(self.model, samples, config, progress=False, profile=profile).tier_maps if config else {}
        prune_s += time.perf_counter() - start
        start = time.perf_counter()
        result = perplexity(self.model, self.testenc.input_ids, self.seqlen, self.n_windows, progress=False)
        eval_s = time.perf_counter() - start
        return {"configuration": name, "seed": seed, "sparsity": measure_sparsity(self.model)["sparsity"],
                "ppl": result["ppl"], "window_nll": result["window_nll"], "prune_s": prune_s, "eval_s": eval_s,
                **checkpoint_cost(self.model, decoder_linear_weights(self.model), tier_maps,
                                  *((config.tier_metadata(self.args.model),) if config else ()))}


RUN_ONLY = ("seed", "window_nll")  # per-seed fields that a summarized row does not carry


def summarize(name: str, runs: list[dict], dense_ppl: float | None) -> dict:
    """One table row from its per-seed runs: mean ± sd of PPL over seeds and every seed's value."""
    ppl, ppl_sd = mean_sd([run["ppl"] for run in runs])
    row = {"configuration": name, "seeds": [run["seed"] for run in runs], "sparsity": runs[0]["sparsity"], "ppl": ppl,
           "ppl_sd": ppl_sd, "ppl_per_seed": [run["ppl"] for run in runs],
           "prune_s": mean_sd([run["prune_s"] for run in runs])[0], "eval_s": mean_sd([run["eval_s"] for run in runs])[0]}
    row["ppl_over_dense"] = ppl / dense_ppl if dense_ppl else None
    row.update({key: value for key, value in runs[0].items() if key not in row and key not in RUN_ONLY})  # costs: seed 0's
    return row


def default_comparisons(names: list[str]) -> list[tuple[str, str]]:
    """(with OWL, without) and (row scope, matrix scope) for every such pair of rows in the table."""
    pairs = [(name, name[: -len(" owl")]) for name in names if name.endswith(" owl")]
    pairs += [(name, name.replace(" row", " matrix")) for name in names if " row" in name]
    return [(a, b) for a, b in pairs if a in names and b in names]


def frontier_comparisons(names: list[str]) -> list[tuple[str, str]]:
    """(row, FRONTIER_REFERENCE) for every pruned row of the table but the reference itself."""
    return [(name, FRONTIER_REFERENCE) for name in names if name not in ("dense", FRONTIER_REFERENCE) and FRONTIER_REFERENCE in names]


def compare(a: dict, b: dict) -> dict:
    """Welch's t test of PPL(a) - PPL(b) over the per-seed perplexities (lib.core.uncertainty.welch_t), labelled."""
    return {"a": a["configuration"], "b": b["configuration"], **welch_t(a["ppl_per_seed"], b["ppl_per_seed"])}


def comparison_lines(tests: list[dict]) -> list[str]:
    """One line per test, its verdict from Holm's adjustment over all the tests that have a p-value.

    "exceeds the seed spread" needs the Holm-adjusted p < 0.05; a test with p < 0.05 that does not
    survive the adjustment is reported as not established, with both p-values.
    """
    adjusted = holm_adjust([test["p"] for test in tests])
    family = sum(p is not None for p in adjusted)
    lines = []
    for test, holm in zip(tests, adjusted):
        head = f"{test['a']} - {test['b']}: {test['difference']:+.2f} PPL"
        if test["p"] is None:
            lines.append(head + "; one seed (or no spread): run --seeds 0 1 2 to compare against the seed spread")
            continue
        if holm < 0.05:
            verdict = "exceeds the seed spread"
        elif test["p"] < 0.05:
            verdict = "exceeds the seed spread before the correction only: not established"
        else:
            verdict = "within the seed spread: not established"
        lines.append(head + f"; Welch's t = {test['t']:.2f}, df = {test['df']:.1f}, p = {test['p']:.4f}, "
                     f"Holm-adjusted over {family} = {holm:.4f}: {verdict}")
    return lines


def check_arguments(args: argparse.Namespace) -> None:
    """One-line ValueErrors for numbers that cannot run, before anything loads."""
    check_range("--nsamples", args.nsamples, 1)
    check_range("--seqlen", args.seqlen, 2)
    check_range("--eval_windows", args.eval_windows, 1)
    for seed in [*args.seeds, *([] if args.seed is None else [args.seed])]:
        check_range("--seeds / --seed", seed, 0)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(description=__doc__)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=None,
                        help=f"default {DEFAULT_SEQLEN}, capped at the model's max_position_embeddings; a larger "
                             "explicit value is an error")
    parser.add_argument("--eval_windows", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], metavar="SEED",
                        help="calibration seeds: every row is pruned once per seed (default: 0)")
    parser.add_argument("--seed", type=int, default=None, help="one calibration seed (same as --seeds SEED)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME", help='run only these rows, e.g. "dense" "three_tier wanda matrix"')
    parser.add_argument("--frontier", action="store_true",
                        help=f"run the frontier rows ({len(FRONTIER_ROWS)}, then any --only rows) and compare every "
                             f"pruned row with {FRONTIER_REFERENCE!r} by default")
    parser.add_argument("--compare", nargs=2, action="append", default=None, metavar=("A", "B"),
                        help="compare two rows against the seed spread (repeatable; default: OWL vs no OWL, row vs matrix scope)")
    parser.add_argument("--output", default=None, help="also write the table as JSON here")
    parser.add_argument("--overwrite", action="store_true",
                        help="let --output replace an existing file this toolkit did not write (default: refuse)")
    parser.add_argument("--rows_dir", default=None, help="save each finished (row, seed) here and reuse rows saved with the same settings")
    args = parser.parse_args(argv)
    explicit_seqlen = given_seqlen(args, DEFAULT_SEQLEN)
    output = Output("--output", args.output, "bench_quality", is_file=True)
    try:
        check_arguments(args)
        check_outputs([output], run_inputs(args.model, data_dir=args.data_dir), args.overwrite)  # before hours of pruning
    except ValueError as err:  # OutputError, or ModelLoadError for an alias whose package is missing
        fail(err)
    setup_logging(logging.WARNING)
    seeds = [args.seed] if args.seed is not None else list(dict.fromkeys(args.seeds))
    configs = configurations(list(dict.fromkeys([*FRONTIER_ROWS, *(args.only or [])])) if args.frontier else args.only)
    for pair in args.compare or []:
        if any(name not in configs for name in pair):
            fail(f"--compare {pair[0]!r} {pair[1]!r}: both must be rows of the table ({', '.join(configs)})")
    rows_dir = Path(args.rows_dir) if args.rows_dir else None
    if rows_dir:
        rows_dir.mkdir(parents=True, exist_ok=True)

    def settings(seed: int) -> dict:
        return {**{k: getattr(args, k) for k in ("model", "data_dir", "nsamples", "seqlen", "eval_windows")}, "seed": seed}

    bench = None
    runs: dict[str, list[dict]] = {}
    for name, config in configs.items():
        runs[name] = []
        for seed in seeds[:1] if config is None else seeds:  # the dense model does not depend on the seed
            run = _cached_row(rows_dir, name, seed, settings(seed))
            if run is None:
                try:
                    bench = bench or Bench(args, explicit_seqlen)
                except ValueError as err:  # ModelLoadError, DataError, --seqlen above the model's positions
                    fail(err)
                run = bench.measure_row(name, config, seed)
                if rows_dir:
                    write_json(_row_path(rows_dir, name, seed), {"settings": settings(seed), "row": run})
            runs[name].append(run)

    dense_ppl = summarize("dense", runs["dense"], None)["ppl"] if "dense" in runs else None
    rows = {name: summarize(name, name_runs, dense_ppl) for name, name_runs in runs.items()}
    width = max(34, *(len(name) + 2 for name in rows))
    print(f"{'configuration':<{width}}{'sparsity':>10}{'PPL':>10}{'± sd':>9}{'PPL/dense':>11}{'prune s':>9}{'eval s':>8}  per seed",
          flush=True)
    for row in rows.values():
        ratio = f"{row['ppl_over_dense']:.2f}" if dense_ppl else "-"
        sd = f"{row['ppl_sd']:.2f}" if row["ppl_sd"] is not None else "-"
        per_seed = " ".join(f"{ppl:.2f}" for ppl in row["ppl_per_seed"])
        print(f"{row['configuration']:<{width}}{row['sparsity']:>10.4f}{row['ppl']:>10.2f}{sd:>9}{ratio:>11}"
              f"{row['prune_s']:>9.1f}{row['eval_s']:>8.1f}  {per_seed}", flush=True)
    pairs = args.compare or (frontier_comparisons(list(rows)) if args.frontier else default_comparisons(list(rows)))
    comparisons = comparison_lines([compare(rows[a], rows[b]) for a, b in pairs])
    if comparisons:
        print("\nComparisons (Welch's t test over the per-seed perplexities; exceeds the seed spread when the p-value "
              "adjusted by Holm's method over all the comparisons shown is < 0.05):")
        for line in comparisons:
            print("  " + line)
    if args.output:
        write_output_json(args.output, {"settings": {**vars(args), "seeds": seeds}, "environment": environment_info(),
                                        "rows": list(rows.values()), "runs": [run for name_runs in runs.values() for run in name_runs],
                                        "comparisons": comparisons}, output.kind, args.overwrite)
    return 0


if __name__ == "__main__":
    with interrupts_end_in_one_line():
        sys.exit(main())
