"""lib/experiments/design.py: the rows, presets, comparisons and expectations, checked when it is imported."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lib.experiments import design
from lib.experiments.design import (CALIBRATION_ORDER, EXPERIMENTS, Comparison, Experiment, Expectation,
                                    calibration_order, design_problems, pruned)
from lib.experiments.settings import FIELDS
from tests.helpers import REPO


def test_calibration_order_is_each_calibration_at_its_first_use():
    rows = [Experiment("a", "c4", "squad", "A"), Experiment("b", "gsm8k", "gsm8k", "B"),
            Experiment("c", "c4", "gsm8k", "C"), Experiment("d", "squad", "squad", "D"), Experiment("e", "gsm8k", "squad", "E")]
    assert calibration_order(rows) == ("c4", "gsm8k", "squad")
    assert calibration_order(rows[::-1]) == ("gsm8k", "squad", "c4")
    assert calibration_order([]) == ()
    assert CALIBRATION_ORDER == ("wikitext2", "squad", "gsm8k", "wikitext2+squad", "wikitext2+gsm8k")


def test_comparisons_and_expectations_name_rows_of_the_matrix():
    assert design_problems() == []
    assert pruned("wikitext2+squad") == "pruned/wikitext2-squad"
    names = {c.a for c in design.COMPARISONS} | {c.b for c in design.COMPARISONS}
    assert names == {"exp1", "exp2", "exp3", "exp4", "exp5", "exp6", "pruned/squad", "pruned/gsm8k", "pruned/wikitext2"}
    assert len(design.EXPECTATIONS) == 14 and {e.finetuned_on for e in design.EXPECTATIONS} == {
        None, "squad", "gsm8k", "wikitext2"}


@pytest.mark.parametrize("attribute, bad, problem", [
    ("COMPARISONS", Comparison("exp7", "exp1", "?"), "comparison exp7 - exp1 names a row that is not in dense, "
     "pruned/wikitext2, pruned/squad, pruned/gsm8k, pruned/wikitext2-squad, pruned/wikitext2-gsm8k, baseline, exp1,"),
    ("COMPARISONS", Comparison("pruned/c4", "exp1", "?"), "comparison pruned/c4 - exp1 names a row"),
    ("EXPECTATIONS", Expectation("x", "squad", "f1", -1, ("exp1", "pruned/boolq")), "expectation 'x' names a row"),
    ("EXPECTATIONS", Expectation("y", "squad", "f1", -1, finetuned_on="boolq"),
     "expectation 'y': finetuned_on must be one of wikitext2, squad, gsm8k and exclude rows"),
    ("EXPECTATIONS", Expectation("z", "squad", "f1", 0, ("exp1", "exp2")), "expectation 'z': sign must be -1 or +1"),
])
def test_a_name_outside_the_matrix_is_found(monkeypatch, attribute, bad, problem):
    monkeypatch.setattr(design, attribute, (*getattr(design, attribute), bad))
    found, = design_problems()
    assert found.startswith(problem)


def test_importing_a_design_with_a_wrong_name_fails():
    """The check runs at import: a comparison naming a missing row stops `import lib.experiments.design`."""
    source = (REPO / "lib" / "experiments" / "design.py").read_text().replace(
        'Comparison("exp2", "exp1",', 'Comparison("exp2", "exp9",', 1)
    result = subprocess.run([sys.executable, "-c", source], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        "ValueError: lib/experiments/design.py: comparison exp2 - exp9 names a row that is not in dense, ")


def test_presets_set_only_known_settings_with_the_bash_runner_values():
    assert set(design.PRESETS) == {"cpu-smoke", "cpu", "paper"}
    assert all(name in FIELDS for preset in design.PRESETS.values() for name in preset.values)
    # the values are asserted command by command against the bash runner's dry runs (test_runner_compat.py);
    # here what a dry run cannot show: the variables exported to every step
    assert design.PRESETS["cpu-smoke"].environment == design.PRESETS["cpu"].environment == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert design.PRESETS["paper"].environment == {}
    assert [e.name for e in EXPERIMENTS] == ["baseline", "exp1", "exp2", "exp3", "exp4", "exp5", "exp6"]
