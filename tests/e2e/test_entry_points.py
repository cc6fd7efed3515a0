"""Every entry point runs from the repository root uninstalled, and the pruning CLI's flags are PruneConfig's."""

import subprocess
import sys

import pytest

from tests.helpers import REPO


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
