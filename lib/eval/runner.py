"""Task evaluation: `evaluate_tasks` runs registered tasks and groups (lib.eval.tasks) and collects one result.

Each task goes to the runner of its output type (`run_task`): perplexity (lib.eval.perplexity),
multiple_choice (lib.eval.multiple_choice) or generate (lib.eval.generate); a group runs its members and
combines their reports (lib.eval.report.group_report). Every report is {"metrics", "counts", "per_example",
"samples"} with a `m_stderr` beside every metric `m`, and `tasks_info` describes each task's metrics
(lib.eval.tasks.task.report_info), so a reader of the result needs no registry. The data of every task is
read and validated first (`load_task_data`, no model needed), and every perplexity text tokenized and
counted in windows, so a bad file fails before any task is evaluated. Nothing here prints or writes files.
"""

from __future__ import annotations

import logging
from typing import Mapping, Sequence

from torch import nn

from lib.core.results import Timer
from lib.data import registry
from lib.data.sources import load_task_examples, resolve_data_dir
from lib.eval.batching import DEFAULT_BATCH_TOKENS
from lib.eval.generate import evaluate_generate
from lib.eval.lm_eval_backend import evaluate_lm_eval, lm_eval_tasks
from lib.eval.multiple_choice import evaluate_multiple_choice
from lib.eval.perplexity import evaluate_perplexity, perplexity_tokens
from lib.eval.report import group_report
from lib.eval.tasks.task import Task, choices, get, group, group_names, is_uncertainty, members, names, report_info

logger = logging.getLogger(__name__)

BACKENDS = ("ours", "lm-eval")


def perplexity_tasks() -> tuple[str, ...]:
    """The perplexity tasks (lib.eval.tasks.text and any registered later)."""
    return names("perplexity")


def example_tasks() -> tuple[str, ...]:
    """The --tasks names that score examples (--limit applies): the multiple-choice and generating tasks, then
    the groups."""
    return tuple(name for name in names() if name not in perplexity_tasks()) + group_names()


def nll_tasks() -> tuple[str, ...]:
    """The tasks with a gold-answer NLL (--nll_limit applies)."""
    return tuple(name for name in names() if get(name).answer_nll)


def task_names() -> tuple[str, ...]:
    """Every --tasks name: the tasks, then the groups."""
    return choices()


def check_tasks(tasks: Sequence[str]) -> None:
    """Raise ValueError naming an unknown or repeated task and listing the known ones."""
    unknown = [task for task in tasks if task not in task_names()]
    if unknown:
        raise ValueError(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(task_names())}")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"--tasks lists a task twice: {' '.join(tasks)}")


def task_limit(limit: int | Mapping[str, int] | None, task: str, flag: str = "--limit") -> int | None:
    """The value of a per-task setting for `task`: one int for all tasks, a {task: int} mapping, or None."""
    value = limit.get(task) if isinstance(limit, Mapping) else limit
    if value is not None and value < 1:
        raise ValueError(f"{flag} for {task} must be at least 1, got {value}")
    return value


def check_nll_limit(nll_limit: int | Mapping[str, int] | None) -> None:
    """Raise ValueError when a per-task --nll_limit names a task without an answer NLL."""
    if isinstance(nll_limit, Mapping) and set(nll_limit) - set(nll_tasks()):
        raise ValueError(f"--nll_limit applies to {' and '.join(nll_tasks())} only, got {', '.join(nll_limit)}")


def by_lm_eval(task: str, backend: str) -> bool:
    """Whether `task` runs through lm-evaluation-harness: with --backend lm-eval, every task that is neither a
    perplexity task (always the Wanda protocol) nor a group (always our scorer; scripts/compare_lm_eval.py
    checks it against lm-eval)."""
    return backend == "lm-eval" and task in names() and get(task).output_type != "perplexity"


def check_task_options(tasks: Sequence[str], backend: str = "ours", num_fewshot: int = 0,
                       nll_limit: int | Mapping[str, int] | None = None) -> None:
    """One-line ValueErrors for task names and options that cannot run together (no data read)."""
    check_tasks(tasks)
    if backend not in BACKENDS:
        raise ValueError(f"--backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if num_fewshot < 0:
        raise ValueError(f"--num_fewshot must be >= 0, got {num_fewshot}")
    check_nll_limit(nll_limit)
    no_lm_eval = [task for task in tasks if by_lm_eval(task, backend) and task not in lm_eval_tasks()]
    if no_lm_eval:
        raise ValueError(f"--backend lm-eval runs {', '.join(lm_eval_tasks())} only, not {', '.join(no_lm_eval)}; "
                         "use --backend ours")


def load_task_data(
    tasks: Sequence[str],
    data_dir=None,
    limit: int | Mapping[str, int] | None = None,
    num_fewshot: int = 0,
    nll_limit: int | Mapping[str, int] | None = None,
    backend: str = "ours",
) -> dict[str, dict]:
    """Read and validate the data of every task in `tasks` before any is evaluated (no model needed).

    A missing, malformed, non-UTF-8 or empty file of any task is a DataError naming it. Returns
    {task: data}: a perplexity task {"text": label of its test text} (tokenized by `evaluate_tasks`);
    another task {"examples"} (a generating task also "nll_examples", "fewshot_examples"); a group
    {"members": {task: its data}} (each member the group's --limit); a task lm-eval runs {} (lm-eval
    reads its own data).
    """
    check_task_options(tasks, backend, num_fewshot, nll_limit)
    data_dir = resolve_data_dir(data_dir)
    data: dict[str, dict] = {}
    for name in tasks:
        if name in group_names():
            data[name] = {"members": {task.name: task_data(task, data_dir, task_limit(limit, name))
                                      for task in members(name)}}
        elif by_lm_eval(name, backend):
            data[name] = {}
        else:
            data[name] = task_data(get(name), data_dir, task_limit(limit, name), num_fewshot,
                                   task_limit(nll_limit, name, "--nll_limit"))
    return data


def task_data(task: Task, data_dir, limit: int | None = None, num_fewshot: int = 0,
              nll_limit: int | None = None) -> dict:
    """What `run_task` needs of one task's data: the first `limit` eval examples, the first `nll_limit` for the
    answer NLL (default: the same ones) and the first `num_fewshot` train examples (tasks that take them); a
    value above what the split holds is capped with one warning."""
    if task.output_type == "perplexity":
        return {"text": registry.get(task.dataset).corpus("evaluation", data_dir).label}
    examples = load_task_examples(task.dataset, "eval", data_dir=data_dir, limit=limit, flag="--limit")
    if task.output_type != "generate":
        return {"examples": examples}
    nll_examples = examples
    if task.answer_nll and nll_limit is not None:
        nll_examples = load_task_examples(task.dataset, "eval", data_dir=data_dir, limit=nll_limit, flag="--nll_limit")
    fewshot = []
    if task.fewshot is not None and num_fewshot:
        fewshot = load_task_examples(task.dataset, "train", data_dir=data_dir, limit=num_fewshot, flag="--num_fewshot")
    return {"examples": examples, "nll_examples": nll_examples, "fewshot_examples": fewshot}


def run_task(model: nn.Module, tokenizer, task: Task, data: dict, seqlen: int = 2048, batch_size: int = 8,
             max_new_tokens: int | None = None, log_samples: bool = False, progress: bool = True,
             batch_tokens: int = DEFAULT_BATCH_TOKENS) -> dict:
    """One task's report from its `task_data` (a perplexity task: with "tokens" from `perplexity_tokens`),
    by the runner of its output type."""
    if task.output_type == "perplexity":
        return evaluate_perplexity(model, tokenizer, task.dataset, seqlen, progress=progress, tokens=data["tokens"])
    if task.output_type == "multiple_choice":
        return evaluate_multiple_choice(model, tokenizer, task, data["examples"], batch_tokens, progress)
    return evaluate_generate(model, tokenizer, task, data["examples"], data["nll_examples"], data["fewshot_examples"],
                             max_new_tokens, batch_size, log_samples, progress, batch_tokens)


def evaluate_tasks(
    model: nn.Module,
    tokenizer,
    tasks: Sequence[str],
    data_dir=None,
    limit: int | Mapping[str, int] | None = None,
    batch_size: int = 8,
    seqlen: int = 2048,
    eval_windows: int | None = None,
    num_fewshot: int = 0,
    max_new_tokens: int | Mapping[str, int] | None = None,
    log_samples: bool = False,
    backend: str = "ours",
    progress: bool = True,
    nll_limit: int | Mapping[str, int] | None = None,
    data: dict[str, dict] | None = None,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
) -> dict:
    """Run `tasks` in order and collect one result.

    Args:
        tasks: names from task_names(). Perplexity tasks use `seqlen` (already capped by the caller) and the
            first `eval_windows` windows; the others use the first `limit` eval examples.
        limit: an int for every example task, or {task: int}; None evaluates everything.
        num_fewshot: tasks that take few-shot examples (GSM8K): the first K train examples are prefixed to
            every prompt.
        max_new_tokens: overrides the generation length of the generating tasks (their default: squad 32,
            gsm8k 256): an int or {task: int}.
        nll_limit: tasks with an answer NLL (squad/gsm8k): the NLL on the first `nll_limit` examples
            instead of the first `limit` (one forward pass per example, so it affords more): an int or {task: int}.
        backend: "ours", or "lm-eval" to run the tasks with an lm-eval twin through lm-evaluation-harness
            (perplexity tasks always use the Wanda protocol, groups our scorer).
        batch_size: prompts per generation batch (and lm-eval's batch size); batch_tokens: padded tokens per
            log-likelihood forward (multiple choice, answer NLL).
        data: what `load_task_data` returned for these arguments (None: loaded here). Either way all
            data is read, and every perplexity text tokenized and counted in windows, before any task runs.
    Returns:
        {"metrics": {task: dict}, "counts": {task: dict}, "seconds": {task: float},
        "per_example": {task: {metric: {id: value}}}, "tasks_info": {task: lib.eval.tasks.task.report_info},
        "samples": {task: list} (only with log_samples)}.
    """
    if data is None:
        data = load_task_data(tasks, data_dir, limit, num_fewshot, nll_limit, backend)
    else:
        check_task_options(tasks, backend, num_fewshot, nll_limit)
    data = dict(data)  # the perplexity tasks' tokens go into a copy
    for name in [name for name in tasks if name in perplexity_tasks()]:
        text = f"the {name} evaluation text {data[name]['text']}"
        data[name] = {**data[name], "tokens": perplexity_tokens(tokenizer, get(name).dataset, seqlen, data_dir,
                                                                eval_windows, text)}
    timer = Timer()
    report: dict = {"metrics": {}, "counts": {}, "seconds": {}, "per_example": {}, "tasks_info": {}, "samples": {}}
    for name in tasks:
        logger.info("evaluating %s", name)
        with timer(name):
            if name in group_names():
                result = group_report(group(name).metrics, {
                    member: run_task(model, tokenizer, get(member), member_data, batch_size=batch_size, progress=progress,
                                     batch_tokens=batch_tokens)
                    for member, member_data in data[name]["members"].items()})
            elif by_lm_eval(name, backend):
                result = evaluate_lm_eval(model, tokenizer, name, task_limit(limit, name), batch_size, num_fewshot)
            else:
                result = run_task(model, tokenizer, get(name), data[name], seqlen, batch_size,
                                  task_limit(max_new_tokens, name, "--max_new_tokens"), log_samples, progress, batch_tokens)
        report["metrics"][name] = result["metrics"]
        report["counts"][name] = result["counts"]
        report["seconds"][name] = timer.seconds[name]
        report["tasks_info"][name] = report_info(name, result["metrics"])
        if result.get("per_example") is not None:
            report["per_example"][name] = result["per_example"]
        if log_samples and result.get("samples") is not None:
            report["samples"][name] = result["samples"]
        logger.info("%s: %s (%.1f s)", name, _format_metrics(result["metrics"]), timer.seconds[name])
    if not log_samples:
        del report["samples"]
    return report


def _format_metrics(metrics: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
                     if not is_uncertainty(k))
