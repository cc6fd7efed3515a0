"""lib/experiments/design.py: the experiment matrix that scripts/run_task_experiments.sh and lib/experiments/summary.py both read."""

from __future__ import annotations

import subprocess
import sys

from lib.experiments.design import CALIBRATION_ORDER, EXPERIMENTS
from tests.helpers import REPO


def test_bash_reads_the_same_rows_as_python():
    shown = subprocess.run(
        ["bash", "-c", 'eval "$("$0" scripts/experiment_matrix.py --bash)"; '
                       'for e in "${EXPERIMENTS[@]}"; do echo "$e ${CALIBRATION[$e]} ${FINETUNE[$e]}"; done',
         sys.executable], cwd=REPO, capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    assert shown == [f"{e.name} {e.calibration} {e.finetune}" for e in EXPERIMENTS]


def test_calibration_order_follows_first_use():
    assert CALIBRATION_ORDER == ("wikitext2", "squad", "gsm8k", "wikitext2+squad", "wikitext2+gsm8k")
    assert set(CALIBRATION_ORDER) == {e.calibration for e in EXPERIMENTS}
