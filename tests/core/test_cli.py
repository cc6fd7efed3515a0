"""lib/core/cli.py: one-line errors, seeding, and `lib` importable once installed (pyproject.toml)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from lib.core.cli import OneLineParser, run_or_fail, seed_everything


def test_run_or_fail_turns_a_listed_error_into_one_stderr_line(capsys):
    def bad(value):
        raise ValueError(f"--nsamples must be positive,\n got {value}")

    assert run_or_fail(bad, -1) == 2
    assert capsys.readouterr().err == "error: --nsamples must be positive, got -1\n"
    assert run_or_fail(lambda: None) == 0
    with pytest.raises(KeyError):  # an unexpected error keeps its traceback
        run_or_fail(lambda: {}["x"], errors=(ValueError,))


def test_parser_error_is_one_line(capsys):
    parser = OneLineParser(prog="prog")
    parser.add_argument("--n", type=int)
    with pytest.raises(SystemExit) as exit:
        parser.parse_args(["--n", "x"])
    assert exit.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == ["prog: error: argument --n: invalid int value: 'x'"]


def test_seed_everything_repeats_every_generator():
    draws = []
    for _ in range(2):
        seed_everything(7)
        draws.append((random.random(), np.random.rand(), torch.rand(1).item()))
    assert draws[0] == draws[1]
    seed_everything(8)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) != draws[0]


