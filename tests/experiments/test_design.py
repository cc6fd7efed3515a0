"""lib/experiments/design.py: the experiment matrix that scripts/run_task_experiments.sh and lib/experiments/summary.py both read."""

from __future__ import annotations

import subprocess
import sys

from lib.experiments.design import CALIBRATION_ORDER, EXPERIMENTS, Experiment, calibration_order
from tests.helpers import REPO


def test_bash_reads_the_same_rows_as_python():
    shown = subprocess.run(
        ["bash", "-c", 'eval "$("$0" scripts/experiment_matrix.py --bash)"; '
                       'for e in "${EXPERIMENTS[@]}"; do echo "$e ${CALIBRATION[$e]} ${FINETUNE[$e]}"; done',
         sys.executable], cwd=REPO, capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    assert shown == [f"{e.name} {e.calibration} {e.finetune}" for e in EXPERIMENTS]


def test_calibration_order_follows_first_use():
    rows = [Experiment("a", "c4", "squad", "A"), Experiment("b", "gsm8k", "gsm8k", "B"),
            Experiment("c", "c4", "gsm8k", "C"), Experiment("d", "squad", "squad", "D"), Experiment("e", "gsm8k", "squad", "E")]
    assert calibration_order(rows) == ("c4", "gsm8k", "squad")  # each once, where it is first used
    assert calibration_order(rows[::-1]) == ("gsm8k", "squad", "c4")
    assert calibration_order([]) == ()
    first_use = [next(i for i, e in enumerate(EXPERIMENTS) if e.calibration == c) for c in CALIBRATION_ORDER]
    assert first_use == sorted(first_use) and set(CALIBRATION_ORDER) == {e.calibration for e in EXPERIMENTS}
