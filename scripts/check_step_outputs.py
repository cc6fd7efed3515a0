#!/usr/bin/env python
"""Check the JSON outputs of an experiment step (scripts/run_task_experiments.sh): exit 0 when all are sound.

    python scripts/check_step_outputs.py OUT/dense/eval.json OUT/pruned/wikitext2/results/results.json

Prints one line per damaged file ("FILE: it is not valid JSON (...)") and exits 1 when there is any;
the runner then runs the step again (lib.experiments.rows.output_problem says what is checked).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python scripts/check_step_outputs.py`: this checkout's `lib` first
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.core.cli import OneLineParser
from lib.experiments.rows import output_problem


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(description=__doc__)
    parser.add_argument("files", nargs="+", metavar="FILE", help="JSON outputs of one step")
    args = parser.parse_args(argv)
    damaged = [(path, problem) for path in args.files if (problem := output_problem(path))]
    for path, problem in damaged:
        print(f"{path}: it {problem}")
    return 1 if damaged else 0


if __name__ == "__main__":
    sys.exit(main())
