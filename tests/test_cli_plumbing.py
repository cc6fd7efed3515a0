"""lib/core/cli.py: one-line errors, seeding, and `lib` importable once installed (pyproject.toml)."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO
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


@pytest.mark.parametrize("script", ["scripts/eval_tasks.py", "dense_ft/finetune_lm.py", "main_block_three_tier.py"])
def test_entry_points_run_from_the_repo_root_uninstalled(script):
    result = subprocess.run([sys.executable, script, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-500:]
    assert "usage:" in result.stdout


def test_pruning_flags_come_from_prune_config():
    import dataclasses

    import main_block_three_tier as cli
    from lib.pruning.driver import PruneConfig

    parser = cli.build_parser()
    args = parser.parse_args([])
    defaults = PruneConfig()
    for f in dataclasses.fields(PruneConfig):
        if f.name != "ratios":  # None on the command line = not given (the fork's three flags may stand in)
            assert getattr(args, f.name) == getattr(defaults, f.name), f.name
    assert cli.resolve_ratios(args) == defaults.ratios
    given = parser.parse_args(["--sparsity_ratios", "0.5", "0.3", "0.2", "--owl", "--profile_nsamples", "2",
                               "--calib_dataset", "squad"])
    assert given.ratios == [0.5, 0.3, 0.2] and given.owl and given.profile_nsamples == 2
    assert given.calibration_dataset == "squad"
    fork = parser.parse_args(["--top_dense_ratio", "0.4", "--mid_2_4_ratio", "0.4", "--bottom_topk_ratio", "0.2"])
    assert cli.resolve_ratios(fork) == (0.4, 0.4, 0.2)
    assert "(default: 0.35 0.45 0.2)" in " ".join(parser.format_help().split())
