#!/usr/bin/env python
"""Quality against cost: PPL vs stored bytes and vs MACs per token from a bench_quality JSON.

Reads the rows `scripts/bench_quality.py --output FILE` wrote (each with the cost fields of
`lib.tiered.cost.checkpoint_cost`), draws frontier.png (two panels, every configuration labelled,
± sd bars, the Pareto frontier of each panel marked) and prints the table in Markdown.

With several seeds per row (bench_quality's "ppl_per_seed"), a point is off the frontier only where
a point of no greater cost has a lower PPL that Welch's t test establishes, Holm-adjusted over
every such pair of the panel (`lib.tiered.cost.established_front`); the established dominations
are printed under the table. Rows of one seed each fall back to comparing the values.

    python scripts/plot_frontier.py out/bench_quality.json --output frontier.png

An existing --output file is replaced only with --overwrite (a figure carries no marker of this toolkit).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.core.errors import OutputError
from lib.core.files import write_faults
from lib.core.outputs import Output, claim_outputs
from lib.tiered.cost import established_front, pareto_front

COST_KEYS = ("stored_bytes", "weight_bytes_per_token", "macs_per_token")
AXES = [("stored_bytes", "stored checkpoint (MB, model.tiered.safetensors)", 1e6),
        ("macs_per_token", "weight MACs per token, ideal hybrid kernel (millions)", 1e6)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="bench_quality.py --output JSON")
    parser.add_argument("--output", default="frontier.png", help="figure path (default frontier.png)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file (default: refuse)")
    args = parser.parse_args(argv)
    try:
        data = json.loads(Path(args.input).read_text())
        rows = [r for r in data.get("rows", []) if all(k in r for k in COST_KEYS)]
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as err:
        return error(f"cannot read {args.input} as a bench_quality.py --output JSON: {err}")
    if not rows:
        return error(f"{args.input} has no rows with cost fields ({', '.join(COST_KEYS)}); rerun bench_quality.py")
    try:
        with claim_outputs([Output("--output", args.output, "frontier figure", is_file=True)], {"input": args.input},
                           args.overwrite):
            return draw(args, data, rows)
    except OutputError as err:
        return error(err)


def error(message: object) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def draw(args: argparse.Namespace, data: dict, rows: list[dict]) -> int:
    """The figure at args.output and the table on stdout."""
    samples = [r.get("ppl_per_seed") or [r["ppl"]] for r in rows]
    by_test = any(len(s) > 1 for s in samples)
    fronts, verdicts = {}, {}
    for key, _, _ in AXES:
        costs = [r[key] for r in rows]
        if by_test:
            fronts[key], verdicts[key] = established_front(costs, samples)
        else:
            fronts[key], verdicts[key] = pareto_front(costs, [r["ppl"] for r in rows]), []
    from lib.experiments.plots import plot_frontier

    settings = data.get("settings", {})
    title = f"{settings.get('model', '')}: PPL ({settings.get('eval_windows')} x {settings.get('seqlen')}) against cost"
    with write_faults("--output", Path(args.output)):  # a full disk: one line, the old file kept
        plot_frontier(rows, AXES, fronts, args.output, title, established=by_test)
    print("| configuration | sparsity | PPL | stored MB | weight MB read / token | MMACs / token | frontier (bytes / MACs) |")
    print("|---|---|---|---|---|---|---|")
    for i, r in enumerate(rows):
        marks = " / ".join("yes" if fronts[key][i] else "no" for key, _, _ in AXES)
        ppl = f"{r['ppl']:.2f}" + (f" ± {r['ppl_sd']:.2f}" if r.get("ppl_sd") is not None else "")
        print(f"| {r['configuration']} | {r['sparsity']:.2%} | {ppl} | {r['stored_bytes'] / 1e6:.1f} | "
              f"{r['weight_bytes_per_token'] / 1e6:.1f} | {r['macs_per_token'] / 1e6:.1f} | {marks} |")
    for key, _, _ in AXES if by_test else []:
        established = [v for v in verdicts[key] if v["established"]]
        print(f"\n{key}: {len(established)} of {len(verdicts[key])} dominance pairs established "
              "(Welch's t over seeds, Holm-adjusted over the panel's pairs, p < 0.05):")
        for v in established:
            print(f"- {rows[v['better']]['configuration']} beats {rows[v['worse']]['configuration']}: "
                  f"{v['difference']:+.2f} PPL, p = {v['p']:.2g}, Holm {v['p_holm']:.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
