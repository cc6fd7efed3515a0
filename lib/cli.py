"""What every command-line entry point shares: logging setup, seeding, one-line errors.

    parser = OneLineParser(description=__doc__)
    args = parser.parse_args(argv)
    setup_logging()
    seed_everything(args.seed)
    return run_or_fail(run, args, errors=(ValueError, OutputError))   # 0, or 2 with "error: ..." on stderr
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
from typing import Any, Callable, NoReturn

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_DATE_FORMAT = "%H:%M:%S"
EXIT_USAGE = 2  # bad input, like argparse


def setup_logging(level: int = logging.INFO, stream=None) -> None:
    """Configure the root logger once per process (time, level, logger name); a later call changes nothing."""
    logging.basicConfig(level=level, format=LOG_FORMAT, datefmt=LOG_DATE_FORMAT,
                        handlers=[logging.StreamHandler(stream)] if stream is not None else None)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (CPU and every CUDA device)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def one_line(message: Any) -> str:
    """`message` with its whitespace (newlines included) collapsed to single spaces."""
    return " ".join(str(message).split())


def fail(message: Any) -> NoReturn:
    """Exit with status 2 and `error: <message>` on one stderr line."""
    print(f"error: {one_line(message)}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def run_or_fail(function: Callable[..., Any], *args: Any, errors: tuple[type[BaseException], ...] = (ValueError,)) -> int:
    """Call `function(*args)`; 0 when it returns, 2 with a one-line stderr error when it raises one of `errors`."""
    try:
        function(*args)
    except errors as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    return 0


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (`prog: error: ...`), without the usage block."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)}\n")
