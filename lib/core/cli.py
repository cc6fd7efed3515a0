"""What every command-line entry point shares: logging setup, seeding, one-line errors and interrupts.

    parser = OneLineParser(description=__doc__)
    args = parser.parse_args(argv)
    setup_logging()
    seed_everything(args.seed)
    return run_or_fail(run, args, errors=(ValueError, OutputError))   # 0, or 2 with "error: ..." on stderr

Ctrl-C, SIGTERM and SIGHUP during `run_or_fail` (or `interrupts_end_in_one_line`) unwind the run, so every
`finally` and context manager removes its temporaries and locks, and end it with one stderr line saying
what was kept and the status 128 + the signal number.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import math
import random
import signal
import sys
import threading
from typing import Any, Callable, Iterator, NoReturn

from lib.core.files import kept_summary, recording_outputs

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


class Interrupted(BaseException):
    """SIGTERM or SIGHUP, raised like KeyboardInterrupt so that the run unwinds through its cleanup."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum: int, frame: Any) -> NoReturn:
    raise Interrupted(signum)


@contextlib.contextmanager
def interrupts_end_in_one_line() -> Iterator[None]:
    """Run a CLI's work: SIGTERM and SIGHUP raise `Interrupted` (Ctrl-C raises KeyboardInterrupt), so cleanup
    runs; either ends the process (SystemExit 128 + signal number) with one line saying what was kept."""
    handled = (signal.SIGTERM, signal.SIGHUP) if threading.current_thread() is threading.main_thread() else ()
    previous = {signum: signal.signal(signum, _raise_interrupted) for signum in handled}
    try:
        with recording_outputs():
            try:
                yield
            except (KeyboardInterrupt, Interrupted) as err:
                signum = getattr(err, "signum", signal.SIGINT)
                print(f"error: interrupted by {signal.Signals(signum).name}: {kept_summary()}", file=sys.stderr)
                raise SystemExit(128 + signum) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_or_fail(function: Callable[..., Any], *args: Any, errors: tuple[type[BaseException], ...] = (ValueError,)) -> int:
    """Call `function(*args)`; 0 when it returns, 2 with a one-line stderr error when it raises one of `errors`.

    An interrupt exits with one line and 128 + the signal number (`interrupts_end_in_one_line`).
    """
    with interrupts_end_in_one_line():
        try:
            function(*args)
        except errors as err:
            print(f"error: {one_line(err)}", file=sys.stderr)
            return EXIT_USAGE
    return 0


class OneLineErrors:
    """Mixin for an argparse parser: errors are one line (`prog: error: ...`, exit 2), without the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)}\n")


class OneLineParser(OneLineErrors, argparse.ArgumentParser):
    """An ArgumentParser with one-line errors (`OneLineErrors`) that prints its description as written.

    Dataclass-backed CLIs use `lib.core.arguments.DataclassParser` instead (the same errors).
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)


def check_range(flag: str, value: float | int | None, minimum: float | None = None,
                maximum: float | None = None) -> None:
    """Raise a one-line ValueError naming `flag` unless `value` is a finite number in [minimum, maximum].

    None (an optional flag not given) passes; a bound of None is no bound.
    """
    if value is None:
        return
    if not math.isfinite(value):
        raise ValueError(f"{flag} must be a finite number, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{flag} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{flag} must be at most {maximum}, got {value}")


def check_finite_fields(instance: Any) -> None:
    """Raise a one-line ValueError naming the flag of the first float field of the dataclass `instance`
    (or float inside a tuple field) that is NaN or infinite; the flag is the field's metadata "flag",
    else --<field name>."""
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"{f.metadata.get('flag', '--' + f.name)} must be a finite number, got {item}")
