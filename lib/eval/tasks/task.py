"""The evaluation task: what a task scores, on which data, how its report reads; one registry of tasks and groups.

A `Task` declares its output type, and the runner of that type (lib.eval.runner dispatches) does the rest:

    output_type       what is measured                                   the task gives
    perplexity        token perplexity of a text (Wanda's protocol)      dataset (a "text" dataset)
    multiple_choice   summed log-likelihood of each choice (lm-eval)     question(example) -> Question
    generate          greedy generation, scored by the task              prompt, target, stop, max_new_tokens, score

Every task reads the records of one dataset of the data registry (`dataset="boolq"`: lib.data.registry, its
local file and Hub copy), and declares every key of its report's metrics as a `Metric` (display name,
higher_is_better, format, role): the report carries that (`tasks_info`), so whoever reads a report needs
no registry. A group (`zeroshot`) evaluates its member tasks (those naming it in `groups`, in registration
order) and reports `<task>_<metric>` for each plus `mean_<metric>` over them.

Adding a task: its data (a `DatasetSpec` in lib/data/builtin.py, or `lib.data.registry.register` from
outside lib), then one module beside this one that calls `register(Task(...))` and one import line in
lib/eval/tasks/builtin.py (boolq.py is a multiple-choice task, squad.py a generating one). Nothing here
imports torch: the runners are lib/eval/perplexity.py, multiple_choice.py and generate.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from lib.core.registry import register_unique
from lib.data import registry as data_registry

OUTPUT_TYPES = ("perplexity", "multiple_choice", "generate")
FORMATS = ("pct", "nll", "ppl", "count")  # pct: a fraction shown x 100; count: a plain number
ROLES = ("score", "behaviour", "detail")  # the summary's main table, its behaviour table, shown nowhere by default
TARGET_DELIMITER = " "  # lm-eval's default target_delimiter between context and choice


@dataclass(frozen=True)
class Metric:
    """One key of a task report's metrics and how to show it (a `<key>_stderr` always stands beside it)."""

    key: str
    display: str
    higher_is_better: bool = True
    format: str = "pct"
    role: str = "score"

    def __post_init__(self) -> None:
        if self.format not in FORMATS or self.role not in ROLES:
            raise ValueError(f"metric {self.key!r}: format must be one of {', '.join(FORMATS)} and role one of "
                             f"{', '.join(ROLES)}, got {self.format!r} / {self.role!r}")

    def info(self) -> dict:
        """{"display", "higher_is_better", "format", "role"}: the metric's entry in a report's tasks_info."""
        return {"display": self.display, "higher_is_better": self.higher_is_better, "format": self.format,
                "role": self.role}


def perplexity_metrics(display: str) -> tuple[Metric, ...]:
    """What every perplexity task reports: ppl (the score) and the mean token NLL behind it."""
    return (Metric("ppl", f"{display} PPL", False, "ppl"), Metric("nll", f"{display} NLL", False, "nll", "detail"))


def choice_metrics(display: str, score: str = "acc") -> tuple[Metric, ...]:
    """What every multiple-choice task reports: acc and acc_norm (lm-eval's), `score` the one in the main table."""
    return tuple(Metric(key, f"{display} {key}", role="score" if key == score else "detail")
                 for key in ("acc", "acc_norm"))


@dataclass(frozen=True)
class Question:
    """One multiple-choice item: choice i is scored as log p(continuations[i] | contexts[i]).

    contexts, continuations: K strings each (K >= 2). choices: K strings whose character lengths
    normalize acc_norm (lm-eval's doc_to_choice). gold: index of the correct choice.
    """

    contexts: tuple[str, ...]
    continuations: tuple[str, ...]
    choices: tuple[str, ...]
    gold: int


def shared_context(context: str, choices: Sequence[str], gold: int) -> Question:
    """The usual layout: one context (lm-eval's doc_to_text), each choice appended after a space."""
    return Question((context,) * len(choices), tuple(TARGET_DELIMITER + c for c in choices), tuple(choices), gold)


def shared_continuation(contexts: Sequence[str], continuation: str, gold: int) -> Question:
    """lm-eval's partial evaluation (WinoGrande): the context differs per choice, the continuation is shared.

    lm-eval's doc_to_choice is then the list of contexts, so acc_norm divides by their lengths.
    """
    k = len(contexts)
    return Question(tuple(contexts), (TARGET_DELIMITER + continuation,) * k, tuple(contexts), gold)


@dataclass(frozen=True)
class LmEval:
    """The lm-evaluation-harness task a task corresponds to.

    task: lm-eval's task name (`--backend lm-eval`). yaml: its task file under lm_eval/tasks, which
    scripts/compare_lm_eval.py re-points at the local file (None: not compared). metrics: what lm-eval
    reports for it. overrides: YAML lines compare_lm_eval.py adds (a field that lm-eval reads elsewhere).
    """

    task: str
    yaml: str | None = None
    metrics: tuple[str, ...] = ("acc", "acc_norm")
    overrides: str = ""


@dataclass(frozen=True)
class Task:
    """One evaluation task (see the module docstring for the output types).

    name: the --tasks spelling. display: its name in tables. dataset: a lib.data.registry dataset (a text
    dataset for perplexity; else its "eval" split holds the examples). metrics: every metric key the
    report has. lm_eval: its lm-evaluation-harness twin. groups: the groups it belongs to.
    multiple_choice: question(example) -> Question; extra(samples) -> {key: [value per example]} for
        metrics beyond acc / acc_norm (a sample: {"gold", "choice" (acc's argmax), "loglik", ...}).
    generate: prompt(example) -> str, generated after greedily (at most max_new_tokens, cut at a `stop`
        string); score(examples, generations, nll) -> {"metrics", "counts", "per_example", "samples"}
        (per_example {key: {example id: value}}; the runner adds the `_stderr`s); answer_nll: target(example)
        is scored after the prompt too, and `nll` is a lib.eval.report.AnswerNLL (else None);
        fewshot(train examples) -> the text put before every prompt (None: the task takes no few-shot).
    """

    name: str
    display: str
    output_type: str
    dataset: str
    metrics: tuple[Metric, ...]
    lm_eval: LmEval | None = None
    groups: tuple[str, ...] = ()
    question: Callable[[dict], Question] | None = None
    extra: Callable[[Sequence[dict]], dict[str, list[float]]] | None = None
    prompt: Callable[[dict], str] | None = None
    target: Callable[[dict], str] | None = None
    stop: tuple[str, ...] = ()
    max_new_tokens: int | None = None
    score: Callable[..., dict] | None = None
    answer_nll: bool = False
    fewshot: Callable[[Sequence[dict]], str] | None = None

    def __post_init__(self) -> None:
        needs = {"perplexity": (), "multiple_choice": ("question",),
                 "generate": ("prompt", "score", "max_new_tokens") + (("target",) if self.answer_nll else ())}
        if self.output_type not in needs:
            raise ValueError(f"task {self.name!r}: output_type {self.output_type!r} is not one of {', '.join(needs)}")
        missing = [hook for hook in needs[self.output_type] if getattr(self, hook) is None]
        if missing:
            raise ValueError(f"{self.output_type} task {self.name!r} needs {', '.join(missing)}")

    def metric(self, key: str) -> Metric | None:
        return next((metric for metric in self.metrics if metric.key == key), None)


@dataclass(frozen=True)
class Group:
    """Tasks evaluated together: each member's `metrics` as `<task>_<metric>`, and `mean_<metric>` over the
    members (unweighted, stderr sqrt(sum se^2) / K); `score` is the mean in the summary's main table."""

    name: str
    display: str
    metrics: tuple[str, ...] = ("acc", "acc_norm")
    score: str = "acc"


TASKS: dict[str, Task] = {}
GROUPS: dict[str, Group] = {}


def register(task: Task) -> Task:
    """Add a task (a new name; its dataset and groups registered, a perplexity task's dataset a text one)."""
    data_registry.get(task.dataset, "text" if task.output_type == "perplexity" else None)
    unknown = [group for group in task.groups if group not in GROUPS]
    if unknown or task.name in GROUPS:
        raise ValueError(f"task {task.name!r}: groups {unknown} are not registered, or a group has its name")
    return register_unique(TASKS, task.name, task, "task")


def register_group(group: Group) -> Group:
    """Add a group (a new name, not a task's); its members are the tasks registered with it in `groups`."""
    if group.name in TASKS:
        raise ValueError(f"group {group.name!r} has a task's name")
    return register_unique(GROUPS, group.name, group, "task group")


def names(output_type: str | None = None) -> tuple[str, ...]:
    """The registered tasks in registration order, optionally of one output type."""
    return tuple(name for name, task in TASKS.items() if output_type is None or task.output_type == output_type)


def group_names() -> tuple[str, ...]:
    return tuple(GROUPS)


def group(name: str) -> Group:
    """The group `name`; a one-line ValueError listing the groups when there is none."""
    if name not in GROUPS:
        raise ValueError(f"unknown task group {name!r}; choose from {', '.join(GROUPS)}")
    return GROUPS[name]


def choices() -> tuple[str, ...]:
    """Every --tasks name: the tasks, then the groups."""
    return names() + group_names()


def get(name: str) -> Task:
    """The task `name`; a one-line ValueError listing the tasks when there is none."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    return TASKS[name]


def members(group: str) -> tuple[Task, ...]:
    """The tasks of `group`, in registration order."""
    return tuple(task for task in TASKS.values() if group in task.groups)


def is_uncertainty(key: str) -> bool:
    """A standard error or interval bound (`ppl_stderr`, `ppl_ci95_low`, lm-eval's `acc_stderr,none`)."""
    return "_stderr" in key or "_ci95_" in key


def report_info(name: str, metric_keys: Iterable[str]) -> dict:
    """The `tasks_info` entry of task or group `name` whose report has `metric_keys`:
    {"display", "output_type", "metrics": {key: Metric.info()}} for every key that is not an uncertainty.

    A key the task does not declare (lm-eval's `acc,none`, a hook's extra) is a "detail" shown as a
    plain number under its own name.
    """
    keys = [key for key in metric_keys if not is_uncertainty(key)]
    if name in GROUPS:
        return {"display": GROUPS[name].display, "output_type": "group",
                "metrics": {key: _group_metric(GROUPS[name], key).info() for key in keys}}
    task = get(name)
    declared = {key: task.metric(key) for key in keys}
    return {"display": task.display, "output_type": task.output_type,
            "metrics": {key: (metric or Metric(key, f"{task.display} {key}", format="count", role="detail")).info()
                        for key, metric in declared.items()}}


def _group_metric(group: Group, key: str) -> Metric:
    """The Metric of a group report key: `mean_<m>` (the score when m is group.score) or `<task>_<m>` (detail)."""
    for metric_key in group.metrics:
        if key == f"mean_{metric_key}":
            return Metric(key, f"{group.display} mean {metric_key}", role="score" if metric_key == group.score else "detail")
        for task in members(group.name):
            if key == f"{task.name}_{metric_key}":
                metric = task.metric(metric_key) or Metric(metric_key, f"{task.display} {metric_key}")
                return Metric(key, metric.display, metric.higher_is_better, metric.format, "detail")
    return Metric(key, f"{group.display} {key}", format="count", role="detail")
