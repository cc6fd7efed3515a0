#!/usr/bin/env python
"""Print the experiment matrix of lib/experiments/design.py: as bash arrays (--bash, read by run_task_experiments.sh) or as a table.

    python scripts/experiment_matrix.py           # the table
    eval "$(python scripts/experiment_matrix.py --bash)"
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python scripts/experiment_matrix.py`: this checkout's `lib` first
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.core.cli import OneLineParser
from lib.experiments.design import bash_declarations, table


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(description=__doc__)
    parser.add_argument("--bash", action="store_true", help="bash declarations instead of the table")
    args = parser.parse_args(argv)
    print(bash_declarations() if args.bash else table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
