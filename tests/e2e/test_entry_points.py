"""Every entry point runs from the repository root uninstalled, and the pruning CLI's flags are PruneConfig's."""

import json
import subprocess
import sys

import pytest

import main_block_three_tier as cli
from lib.pruning.driver import PruneConfig
from tests.helpers import REPO


@pytest.mark.parametrize("script", ["scripts/eval_tasks.py", "dense_ft/finetune_lm.py", "main_block_three_tier.py"])
def test_entry_points_run_from_the_repo_root_uninstalled(script):
    result = subprocess.run([sys.executable, script, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-500:]
    assert "usage:" in result.stdout


FLAGS = json.loads((REPO / "tests" / "fixtures" / "pruning_cli_flags.json").read_text())["flags"]


def sample_value(flag: dict) -> tuple[list[str], object]:
    """(command-line words after the flag, the value they parse to) for a row of the captured flag table."""
    if flag["nargs"] == 0:
        return [], flag["const"]
    if flag["nargs"] == 3:
        return ["0.5", "0.3", "0.2"], [0.5, 0.3, 0.2]
    if flag["choices"]:
        return [flag["choices"][-1]], flag["choices"][-1]
    return {"int": (["3"], 3), "float": (["0.25"], 0.25)}.get(flag["type"], (["some_value"], "some_value"))


@pytest.mark.parametrize("flag", FLAGS, ids=[f["option_strings"][0] for f in FLAGS])
def test_every_flag_of_the_argparse_cli_is_accepted_alike(flag):
    """Each option string main_block_three_tier.py took before it used HfArgumentParser (tests/fixtures/
    pruning_cli_flags.json, captured from that parser) has the same dest, default, choices and nargs, and a value
    given with each spelling parses to the same value."""
    parser = cli.build_parser()
    defaults = vars(parser.parse_args([]))
    assert defaults[flag["dest"]] == flag["default"]  # the captured defaults hold no tuple
    words, value = sample_value(flag)
    for option in flag["option_strings"]:
        action = parser._option_string_actions[option]
        assert (action.dest, action.nargs) == (flag["dest"], flag["nargs"]), option
        assert (list(action.choices) if action.choices is not None else None) == flag["choices"], option
        parsed = vars(parser.parse_args([option, *words]))[flag["dest"]]
        assert (list(parsed) if isinstance(parsed, tuple) else parsed) == value, option  # JSON has no tuple


def test_pruning_flags_come_from_prune_config():
    parser = cli.build_parser()
    args, config = cli.parse_arguments(parser, vars(parser.parse_args([])))
    assert config == PruneConfig() and args == cli.RunArguments()
    words = ["--sparsity_ratios", "0.5", "0.3", "0.2", "--owl", "--profile_nsamples", "2", "--calib_dataset", "squad",
             "--intra_block_metric", "wanda", "--no_verify_checksums", "--no_eval"]
    args, config = cli.parse_arguments(parser, vars(parser.parse_args(words)))
    assert (config.ratios, config.owl, config.profile_nsamples, config.intra_block_score) == ((0.5, 0.3, 0.2), True, 2, "method")
    assert (args.calibration_dataset, args.verify_checksums, args.no_eval) == ("squad", False, True)
    fork = vars(parser.parse_args(["--top_dense_ratio", "0.4", "--mid_2_4_ratio", "0.4", "--bottom_topk_ratio", "0.2"]))
    assert cli.parse_arguments(parser, fork)[1].ratios == (0.4, 0.4, 0.2)
    both = vars(parser.parse_args(["--sparsity_ratios", "0.5", "0.3", "0.2", "--top_dense_ratio", "0.4",
                                   "--mid_2_4_ratio", "0.4", "--bottom_topk_ratio", "0.2"]))
    with pytest.raises(ValueError, match="give either --sparsity_ratios R1 R2 R3 or all three"):
        cli.parse_arguments(parser, both)
    shown = " ".join(parser.format_help().split())
    for text in ("--sparsity_ratios DENSE MID_2_4 TOPK", "(default: 0.35 0.45 0.2)", "(default: wanda)",
                 "--prune_method {wanda,magnitude,ria,sparsegpt}", "pruning (lib.pruning.driver.PruneConfig):",
                 "--no_verify_checksums", "--calibration_dataset CALIBRATION_DATASET"):
        assert text in shown, text


@pytest.mark.parametrize("argv, message", [
    (["--sparsity_type", "1:2"], "argument --sparsity_type/--sparsity-type: invalid choice: '1:2' (choose from "),
    (["--owl", "yes"], "unrecognized arguments: yes"),  # a switch, as before
    (["--nsamples", "many"], "argument --nsamples: invalid int value: 'many'"),
])
def test_parse_errors_are_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and err.split(": error: ", 1)[1].startswith(message), err


@pytest.mark.parametrize("argv, message", [
    (["--owl", "--sparsity_type", "2:4"], "error: --owl applies to --sparsity_type three_tier only"),
    (["--seed", "-1"], "error: --seed must be at least 0, got -1"),
    (["--eval_windows", "0"], "error: --eval_windows must be at least 1, got 0"),
    (["--calib_dataset", "wikitext2:x"], "error: --calibration_dataset wikitext2:x: share 'x' of 'wikitext2' in "
                                         "'wikitext2:x' is not a number"),
    (["--sparsity_type", "2:4", "--block_size", "6"],
     "error: --block_size 6 is not a positive multiple of 4 (2:4 groups must stay inside blocks)"),
])
def test_value_errors_name_the_flag_in_one_line(capsys, no_model_load, argv, message):
    assert cli.main([*argv, "--save", "/nonexistent/never_written"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
