"""The experiment matrix, defined once: which data set each row calibrates (prunes) with and fine-tunes on.

Read by scripts/run_task_experiments.sh (through scripts/experiment_matrix.py, which prints the
rows as bash arrays) and by lib.experiments.summary (row order, labels, calibration order of the
results table). A calibration is a `--calibration_dataset` value ("wikitext2+squad" mixes two
sources); the fine-tune data is a task of dense_ft/ ("squad", "gsm8k") or a text corpus
("wikitext2": dense_ft/finetune_lm.py). Adding a row is one line here.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Experiment:
    name: str          # directory under OUT and the EXPS name
    calibration: str   # --calibration_dataset of the pruning step
    finetune: str      # fine-tuning data: squad, gsm8k or wikitext2 (causal LM)
    label: str         # the row's name in results.md


EXPERIMENTS = (
    Experiment("baseline", "wikitext2", "wikitext2", "Baseline"),
    Experiment("exp1", "wikitext2", "squad", "Exp 1"),
    Experiment("exp2", "squad", "squad", "Exp 2"),
    Experiment("exp3", "wikitext2", "gsm8k", "Exp 3"),
    Experiment("exp4", "gsm8k", "gsm8k", "Exp 4"),
    Experiment("exp5", "wikitext2+squad", "squad", "Exp 5"),
    Experiment("exp6", "wikitext2+gsm8k", "gsm8k", "Exp 6"),
)


def calibration_order(experiments: Sequence[Experiment]) -> tuple[str, ...]:
    """Each calibration of `experiments` once, in the order the rows first use it (the pruned rows of results.md)."""
    return tuple(dict.fromkeys(experiment.calibration for experiment in experiments))


BY_NAME = {experiment.name: experiment for experiment in EXPERIMENTS}
CALIBRATION_ORDER = calibration_order(EXPERIMENTS)


def bash_declarations() -> str:
    """The matrix as bash: EXPERIMENTS=(...) and the associative arrays CALIBRATION and FINETUNE."""
    def assoc(name: str, field: str) -> str:
        pairs = " ".join(f"[{e.name}]={shlex.quote(getattr(e, field))}" for e in EXPERIMENTS)
        return f"declare -A {name}=({pairs})"

    return "\n".join([f"EXPERIMENTS=({' '.join(e.name for e in EXPERIMENTS)})", assoc("CALIBRATION", "calibration"),
                      assoc("FINETUNE", "finetune")])


def table() -> str:
    """The matrix as the aligned text table the bash script's --help shows."""
    lines = [f"  {'row':<10}{'prune (calibrate) with':<25}fine-tune on"]
    lines += [f"  {e.name:<10}{e.calibration:<25}{e.finetune}" for e in EXPERIMENTS]
    return "\n".join(lines)
