"""Rows of the experiment matrix from the JSON files a run leaves under OUT (lib.experiments.layout).

Every eval.json is a report of scripts/eval_tasks.py: {"tasks", "metrics": {task: {...}}, "counts", "settings",
"per_example": {task: {metric: {id: value}}}, "tasks_info": {task: {display, output_type, metrics: {key: {display,
higher_is_better, format, role}}}}}. A row also reads the reports beside its eval.json: the pruning report of a
pruned row, the fine-tuning report and sparsity of a fine-tuned one. Runs of the same row with different seeds
form a `Group` (lib.experiments.summary shows their mean +- sd).
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lib.data.registry import display_name
from lib.experiments.design import BY_NAME, CALIBRATION_ORDER, EXPERIMENTS
from lib.experiments.layout import (DENSE_ROW, DONE_SUFFIX, EVAL_FILE, FINETUNE_PREFIX, FINETUNE_RESULTS_FILE,
                                    MODEL_CONFIG_FILE, MODEL_DIR, PRUNE_PREFIX, PRUNE_RESULTS_FILE, PRUNED_DIR, Layout,
                                    split_seed)
from lib.experiments.markers import read_marker

logger = logging.getLogger(__name__)

# the keys a step's JSON output must hold to count as done (lib.experiments.runner) and to be read here
REQUIRED_KEYS = {
    EVAL_FILE: ("tasks", "metrics", "counts", "settings"),
    PRUNE_RESULTS_FILE: ("args", "sparsity"),
    FINETUNE_RESULTS_FILE: ("task", "model_name_or_path", "data_args"),
    MODEL_CONFIG_FILE: ("model_type",),
}
KIND_ORDER = ("dense", "pruned", "finetuned", "other")


class ReportError(ValueError):
    """An evaluation report the summary cannot read (one line naming the file and what to do)."""


@dataclass
class Row:
    """One evaluated model. `metrics` is {(task, key): value}; `reference` names the pruned row it came from;
    `tasks_info` is its report's description of each task and metric."""

    name: str
    kind: str
    label: str
    calibration: str | None = None
    finetuning: str | None = None
    sparsity: float | None = None
    reference: str | None = None
    metrics: dict[tuple[str, str], float] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    missing: bool = False  # an expected row whose eval.json is not there
    per_example: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # {task: {metric: {id: value}}}
    seed: int = 0
    base: str = ""  # the name without its seed suffix: what the runs of one Group share
    tasks_info: dict[str, dict[str, Any]] = field(default_factory=dict)


class _FirstRun:
    """A `Group` attribute read from its first run (the seeds of one row share it)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, group: "Group", owner: type | None = None):
        return getattr(group.runs[0], self.name)


@dataclass
class Group:
    """The runs of one row over calibration seeds (one run when there is one seed)."""

    runs: list[Row]
    # what every seed of one row shares, read from the first run
    kind = _FirstRun()
    label = _FirstRun()
    calibration = _FirstRun()
    finetuning = _FirstRun()

    @property
    def name(self) -> str:
        return self.runs[0].base

    @property
    def reference(self) -> str | None:
        ref = self.runs[0].reference
        return None if ref is None else split_seed(ref)[0]

    @property
    def seeds(self) -> list[int]:
        return [run.seed for run in self.runs]

    @property
    def missing(self) -> bool:
        return all(run.missing for run in self.runs)

    @property
    def sparsity(self) -> float | None:
        values = [run.sparsity for run in self.runs if run.sparsity is not None]
        return sum(values) / len(values) if values else None

    def values(self, task: str, key: str) -> list[float]:
        """The metric of every run that has it (one per seed)."""
        return [run.metrics[(task, key)] for run in self.runs if (task, key) in run.metrics]

    def mean(self, task: str, key: str) -> float | None:
        values = self.values(task, key)
        return sum(values) / len(values) if values else None


def data_label(name: str | None) -> str:
    """'wikitext2+squad' -> 'WikiText2 + SQuAD'; 'wikitext2:0.7,gsm8k:0.3' -> 'WikiText2 0.7 + GSM8K 0.3'."""
    if not name:
        return "—"
    parts = [part.partition(":") for part in re.split(r"[+,]", name)]
    return " + ".join(display_name(source) + (f" {share}" if share else "") for source, _, share in parts)


def output_problem(path: str | Path) -> str | None:
    """Why the JSON output `path` of a step cannot count as done, or None when it is sound.

    It must parse as a JSON object holding the keys REQUIRED_KEYS lists for its file name; an
    eval.json also a metrics object for every task it lists. One line, for the experiment runner
    (which reruns the step) and the summary (which shows the row as "no data").
    """
    path = Path(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "is missing"
    except (OSError, UnicodeDecodeError) as err:
        return f"is unreadable ({err.__class__.__name__})"
    except json.JSONDecodeError as err:
        return f"is not valid JSON ({err.msg}: line {err.lineno} column {err.colno})"
    if not isinstance(report, dict):
        return f"holds a JSON {type(report).__name__}, not an object"
    missing = [key for key in REQUIRED_KEYS.get(path.name, ()) if key not in report]
    if missing:
        return f"lacks {', '.join(missing)}"
    if path.name == EVAL_FILE:
        tasks, metrics = report["tasks"], report["metrics"]
        if not isinstance(tasks, list) or not isinstance(metrics, dict):
            return "has 'tasks' that is not a list or 'metrics' that is not an object"
        absent = [task for task in tasks if not isinstance(metrics.get(task), dict)]
        if absent:
            return f"has no metrics for {', '.join(map(str, absent))}"
    return None


def _read(path: Path) -> dict | None:
    if not path.is_file():
        return None
    problem = output_problem(path)
    if problem:
        logger.warning("ignoring %s: it %s", path, problem)
        return None
    return json.loads(path.read_text())


def _pruned_info(layout: Layout, row: str) -> tuple[str | None, float | None]:
    """(calibration data set, measured sparsity) of the pruned row, from its pruning report."""
    report = _read(Path(layout.prune_results(row)))
    if report is None:
        return None, None
    return report["args"]["calibration_dataset"], report["sparsity"]["sparsity"]


def _matrix_key(name: str) -> tuple:
    """Rows of lib.experiments.design in its order, then any other fine-tuned row by name."""
    names = [experiment.name for experiment in EXPERIMENTS]
    return (0, names.index(name), "") if name in BY_NAME else (1, 0, name)


def _finetuned_label(name: str) -> str:
    return BY_NAME[name].label if name in BY_NAME else name


def report_tasks_info(path: Path, report: dict) -> dict | None:
    """The report's `tasks_info` (None for a report written before reports described their metrics)."""
    info = report.get("tasks_info")
    return info if isinstance(info, dict) else None


def load_row(out: Path, eval_path: Path) -> Row:
    """The row of one eval.json under `out`, with what its location and the reports beside it say."""
    row = describe_row(out, eval_path.parent)
    report = json.loads(eval_path.read_text())
    for task, metrics in report.get("metrics", {}).items():
        for key, value in metrics.items():
            if isinstance(value, (int, float)):
                row.metrics[(task, key)] = float(value)
    row.counts = report.get("counts", {})
    row.settings = report.get("settings", {})
    row.per_example = report.get("per_example", {})
    row.tasks_info = report_tasks_info(eval_path, report)
    return row


def describe_row(out: Path, row_dir: Path) -> Row:
    """A row without metrics: what the location `row_dir` under `out` and the reports there say."""
    layout = Layout(str(out))
    parts = row_dir.relative_to(out).parts
    name = "/".join(parts) or "."
    base, seed = split_seed(name)
    row = Row(name=name, kind="other", label=base, seed=seed, base=base)
    if name == DENSE_ROW:
        row.kind, row.label = "dense", "Dense (no pruning, no FT)"
    elif len(parts) == 2 and parts[0] == PRUNED_DIR:
        row.kind = "pruned"
        row.calibration, row.sparsity = _pruned_info(layout, name)
        row.label = f"Pruned {data_label(row.calibration or split_seed(parts[1])[0])}, before FT"
    elif len(parts) == 1:
        finetune = _read(Path(layout.finetune_results(name)))
        if finetune is not None:
            row.kind = "finetuned"
            row.label = _finetuned_label(base)
            task = finetune["task"]
            row.finetuning = finetune["data_args"].get("dataset_name", "wikitext2") if task == "lm" else task
            row.reference = f"{PRUNED_DIR}/{Path(finetune['model_name_or_path']).parent.name}"  # .../pruned/<tag>/model
            row.calibration = _pruned_info(layout, row.reference)[0]
            sparsity = _read(Path(layout.sparsity(name)))
            row.sparsity = sparsity["end"]["sparsity"] if sparsity else None
        elif base in BY_NAME:
            row.kind, row.label = "finetuned", _finetuned_label(base)
    return row


def load_rows(out: str | Path, expected: list[str] = ()) -> list[Row]:
    """Every eval.json under `out` as a row: dense, pruned (in calibration order), fine-tuned (baseline, exp1, ...).

    `expected` names rows ("dense", "pruned/wikitext2", "exp1") that must appear: one without an
    eval.json is a row with `missing` set and no metrics. Raises ReportError when a report has no tasks_info.
    """
    out = Path(out)
    rows = [load_row(out, path) for path in sorted(out.rglob(EVAL_FILE))
            if MODEL_DIR not in path.relative_to(out).parts and _read(path) is not None]  # a damaged one: no data
    undescribed = [out / row.name / EVAL_FILE for row in rows if row.tasks_info is None]
    if undescribed:
        others = f" (and {len(undescribed) - 1} other reports)" if len(undescribed) > 1 else ""
        raise ReportError(f"{undescribed[0]}{others} has no tasks_info: it was written before evaluation reports "
                          "described their metrics; re-run its evaluation (delete it and rerun "
                          "scripts/run_task_experiments.sh with the same OUT, which redoes a missing eval.json)")
    found = {row.name for row in rows}
    for name in expected:
        if name not in found:
            rows.append(describe_row(out, out / name))
            rows[-1].missing = True

    def key(row: Row) -> tuple:
        calibration = row.calibration or ""
        calibration_rank = CALIBRATION_ORDER.index(calibration) if calibration in CALIBRATION_ORDER else len(CALIBRATION_ORDER)
        second = _matrix_key(row.base) if row.kind == "finetuned" else (calibration_rank, 0, row.base)
        return (KIND_ORDER.index(row.kind), second, row.seed)

    return sorted(rows, key=key)


def group_rows(rows: list[Row]) -> list[Group]:
    """Runs that differ only in their seed, as one Group each (in the order of `rows`)."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.base, []).append(row)
    return [Group(runs) for runs in groups.values()]


def step_times(out: str | Path) -> list[tuple[str, int]]:
    """(step, seconds) from the completion markers, in the order the steps finished."""
    markers = sorted(Path(Layout(str(out)).markers).glob("*" + DONE_SUFFIX), key=lambda p: p.stat().st_mtime)
    return [(path.name.removesuffix(DONE_SUFFIX), marker.seconds) for path in markers
            if (marker := read_marker(path)).seconds is not None]


PRUNE_FLAGS = ("--nsamples", "--seqlen", "--sparsity_ratios", "--sparsity_type", "--prune_method")
FINETUNE_FLAGS = ("--num_train_epochs", "--max_steps", "--learning_rate", "--per_device_train_batch_size",
                  "--gradient_accumulation_steps", "--max_length", "--block_size", "--bf16")
RECORDED = ((PRUNE_PREFIX, PRUNE_FLAGS, "Pruning"), (FINETUNE_PREFIX, FINETUNE_FLAGS, "Fine-tuning"))


def recorded_flags(out: str | Path, prefix: str, flags: tuple[str, ...]) -> str | None:
    """The given flags (with their values) of the first finished step named `prefix`*, from its marker."""
    markers = sorted(Path(Layout(str(out)).markers).glob(f"{prefix}*{DONE_SUFFIX}"))
    if not markers:
        return None
    words = shlex.split(read_marker(markers[0]).signature)
    picked = []
    for i, word in enumerate(words):
        if word in flags:
            values = list(itertools.takewhile(lambda w: not w.startswith("--"), words[i + 1:]))  # none for a bare switch
            values = values[:3] if word == "--sparsity_ratios" else values[:1]
            picked.append(" ".join([word, *values]))
    return " ".join(picked)
