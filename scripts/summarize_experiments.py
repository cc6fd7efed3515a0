#!/usr/bin/env python
"""Summarize the experiment matrix: every eval.json under OUT -> OUT/results.md and OUT/results.png.

    python scripts/summarize_experiments.py --out out/task_experiments

Rows: the dense model, each pruned model before fine-tuning, Baseline and Exp 1-6 (see
lib/experiments/layout.py for the layout of OUT and lib/experiments/summary.py for the columns),
mean ± sd over calibration seeds; every difference with its 95% paired-bootstrap interval, and
the verdicts on the expectations generated from those intervals.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python scripts/summarize_experiments.py`: make `lib` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.core.cli import OneLineParser, fail, setup_logging
from lib.experiments.plots import plot_results
from lib.experiments.rows import ReportError, load_rows, step_times
from lib.experiments.summary import results_markdown

logger = logging.getLogger("summarize_experiments")


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    parser = OneLineParser(description=__doc__)
    parser.add_argument("--out", required=True, help="the OUT directory of scripts/run_task_experiments.sh")
    parser.add_argument("--expect", nargs="*", default=[], metavar="ROW",
                        help="rows that must appear (dense, pruned/<tag>, exp1, ...); one without eval.json shows as no data")
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        rows = load_rows(out, args.expect)
    except ReportError as err:
        fail(err)
    if all(row.missing for row in rows):
        fail(f"no eval.json under {out}; run scripts/run_task_experiments.sh with OUT={out} first")
    plot_results(rows, out / "results.png")  # the figure first: results.md's time marks a finished summary
    (out / "results.md").write_text(results_markdown(rows, step_times(out), out))
    logger.info("%d rows -> %s, %s", len(rows), out / "results.md", out / "results.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
