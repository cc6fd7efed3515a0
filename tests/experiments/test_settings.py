"""lib/experiments/settings.py: flag > environment > preset > default, derived defaults, values kept as written,
and every check before the first step (one line naming the variable)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lib.experiments.design import PRESETS
from lib.experiments.settings import FIELDS, FLAGS, SettingError, resolve, shown
from tests.helpers import REPO


def test_precedence_flag_environment_preset_default():
    s = resolve({"NSAMPLES": "16", "SEQLEN": "64", "FT_LR": "3e-4"}, {"SEQLEN": "96", "PRESET": "cpu-smoke"})
    assert (s.seqlen, s.nsamples, s.ft_lr, s.ft_max_steps, s.ft_epochs) == ("96", "16", "3e-4", "8", "3")
    # flag > environment > preset > default, one setting at a time
    assert resolve({"MODEL": "env"}, {"MODEL": "flag", "PRESET": "paper"}).model == "flag"
    assert resolve({"MODEL": "env", "PRESET": "paper"}, {}).model == "env"
    assert resolve({"PRESET": "paper"}, {}).model == "meta-llama/Llama-2-7b-hf"
    assert resolve({}, {}).model == "smollm2-135m"
    assert resolve({"PRESET": "cpu"}, {"PRESET": "paper"}).preset == "paper"


def test_an_empty_value_is_no_value():
    """FT_ARGS= with the paper preset keeps the preset's flag (as `${FT_ARGS:-...}` did)."""
    assert resolve({"FT_ARGS": "", "PRESET": "paper"}, {}).ft_args == "--gradient_checkpointing"
    assert resolve({"FT_ARGS": "--x", "PRESET": "paper"}, {}).ft_args == "--x"
    assert resolve({"DATA_DIR": ""}, {}).data_dir == ""


def test_derived_defaults_follow_their_source():
    s = resolve({"SEED": "3", "PYTHON": "/venv/python"}, {"SEQLEN": "128"})
    assert (s.seeds, s.ft_seeds, s.eval_seqlen, s.ft_launcher) == ("3", "3", "128", "/venv/python")
    s = resolve({"SEED": "3", "FT_SEEDS": "1"}, {"SEEDS": "0 1 2"})
    assert (s.seed, s.seeds, s.ft_seeds) == ("3", "0 1 2", "1")
    assert resolve({"PRESET": "cpu"}, {}).eval_seqlen == "512" and resolve({"PRESET": "paper"}, {}).eval_seqlen == "2048"


def test_values_stay_as_written():
    s = resolve({"FT_LR": "1e-4", "NSAMPLES": "007", "FT_EPOCHS": "1.50"}, {"SPARSITY_RATIOS": "0.5  0.3 0.2"})
    assert (s.ft_lr, s.nsamples, s.ft_epochs) == ("1e-4", "007", "1.50")
    assert s.words("sparsity_ratios") == ["0.5", "0.3", "0.2"]


@pytest.mark.parametrize("variable, value, message", [
    ("NSAMPLES", "abc", "NSAMPLES='abc' must be a whole number >= 1"),
    ("NSAMPLES", "0", "NSAMPLES='0' must be a whole number >= 1"),
    ("SEQLEN", "1", "SEQLEN='1' must be a whole number >= 2"),
    ("SEED", "-1", "SEED='-1' must be a whole number >= 0"),
    ("FT_MAX_STEPS", "-2", "FT_MAX_STEPS='-2' must be a whole number >= -1"),
    ("EVAL_BATCH_SIZE", "1.5", "EVAL_BATCH_SIZE='1.5' must be a whole number >= 1"),
    ("EVAL_WINDOWS", "0", "EVAL_WINDOWS='0' must be a whole number >= 1 (or empty)"),
    ("FT_MAX_TRAIN_SAMPLES", "x", "FT_MAX_TRAIN_SAMPLES='x' must be a whole number >= 1 (or empty)"),
    ("FT_LR", "nan", "FT_LR='nan' must be a finite number >= 0"),
    ("FT_LR", "1e999", "FT_LR='1e999' must be a finite number >= 0"),
    ("FT_LR", "-1e-4", "FT_LR='-1e-4' must be a finite number >= 0"),
    ("FT_EPOCHS", "0", "FT_EPOCHS='0' must be > 0 unless FT_MAX_STEPS > 0"),
    ("FT_BF16", "yes", "FT_BF16='yes' must be 0 or 1"),
    ("KEEP_CHECKPOINTS", "2", "KEEP_CHECKPOINTS='2' must be 0 or 1"),
    ("EVAL_DTYPE", "half", "EVAL_DTYPE='half' must be auto, float32, bfloat16 or float16"),
    ("EVAL_LIMITS", "squad=0", "EVAL_LIMITS: 'squad=0' must be a whole number >= 1 or TASK=N, e.g. \"squad=200 gsm8k=50\""),
    ("EVAL_MAX_NEW_TOKENS", "squad=-1", "EVAL_MAX_NEW_TOKENS: 'squad=-1' must be a whole number >= 1 or TASK=N, "
                                        "e.g. \"squad=200 gsm8k=50\""),
    ("SPARSITY_RATIOS", "0.5 0.5 0.5", "SPARSITY_RATIOS='0.5 0.5 0.5' must sum to 1"),
    ("SPARSITY_RATIOS", "0.5 0.5", "SPARSITY_RATIOS needs three numbers (dense, 2:4, top-k shares), got '0.5 0.5'"),
    ("SPARSITY_RATIOS", "1 -0.5 0.5", "SPARSITY_RATIOS='-0.5' must be a finite number >= 0"),
    ("EXPS", "exp1 exp9", "unknown experiment 'exp9' in EXPS; choose from: baseline exp1 exp2 exp3 exp4 exp5 exp6"),
    ("EXPS", " ", "EXPS is empty; choose from: baseline exp1 exp2 exp3 exp4 exp5 exp6"),
    ("SEEDS", " ", 'SEEDS is empty; give one or more integers, e.g. SEEDS="0 1 2"'),
    ("SEEDS", "0 -1", "seed '-1' in SEEDS / FT_SEEDS is not a non-negative integer"),
    ("FT_SEEDS", "2", "FT_SEEDS seed 2 is not in SEEDS (0); fine-tuning needs its pruned model"),
    ("PRESET", "gpu", "unknown preset 'gpu'; use cpu-smoke, cpu or paper"),
])
def test_every_setting_is_checked(variable, value, message):
    with pytest.raises(SettingError) as raised:
        resolve({variable: value}, {})
    assert str(raised.value) == message
    flag = next((flag for flag, env in FLAGS.items() if env == variable), None)
    if flag:  # the same check for the flag
        with pytest.raises(SettingError) as raised:
            resolve({}, {variable: value})
        assert str(raised.value) == message


def test_epochs_may_be_zero_with_steps():
    assert resolve({"FT_EPOCHS": "0", "FT_MAX_STEPS": "3"}, {}).ft_epochs == "0"


def run_help() -> str:
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "run_experiments.py"), "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_help_lists_every_variable_flag_preset_and_row():
    text = run_help()
    for env, f in FIELDS.items():
        assert f"\n  {env}={shown(f.default)}" in text, env
    for flag in FLAGS:
        assert flag in text
    for name, preset in PRESETS.items():
        assert f"\n  {name}: " in text and preset.about[:40] in " ".join(text.split())
        assert all(f"{k}={shown(v)}" in text for k, v in preset.values.items())
    assert "  exp5      wikitext2+squad          squad" in text
    assert "flag > environment > preset > default" in text
