"""Task evaluation: perplexity of the text datasets, the example tasks and the zero-shot suite.

`evaluate_tasks` runs several tasks, each returning a task report
(`lib.eval.report`: {"metrics", "counts", "per_example", "samples"}, a `m_stderr` beside every
metric `m`). A perplexity task is any registered text dataset (`lib.data.registry`); an example
task is any registered example dataset with an `evaluate` (SQuAD v2, GSM8K and BoolQ:
`lib.eval.tasks.examples`), which gets the options its spec declares; SUITE ("zeroshot") is
`lib.eval.tasks.zeroshot`'s multiple-choice suite. The data of every task is read and validated first
(`load_task_data`, no model needed), and every perplexity text tokenized and counted in windows,
so a bad file fails before any task is evaluated. Nothing here prints or writes files.

Perplexity's per-example values are the windows' mean NLLs (`per_example["nll"]`, keyed by
window index); `ppl_stderr` is ppl * nll_stderr (delta method) and `ppl_ci95_low` /
`ppl_ci95_high` are exp(nll -+ 1.96 se).
"""

from __future__ import annotations

import logging
from typing import Mapping, Sequence

import torch
from torch import nn

from lib.core.results import Timer
from lib.core.uncertainty import mean_stderr, ppl_interval
from lib.data import registry
from lib.data.calibration import get_eval_tokens
from lib.data.sources import load_task_examples, resolve_data_dir
from lib.eval.lm_eval_backend import LM_EVAL_TASKS, evaluate_lm_eval
from lib.eval.perplexity import perplexity, window_count
from lib.eval.report import by_id
from lib.eval.tasks.examples import EVALUATORS
from lib.eval.tasks.zeroshot import SUITE, evaluate_suite, load_suite_records

logger = logging.getLogger(__name__)


def perplexity_tasks() -> tuple[str, ...]:
    """The registered text datasets (lib.data.registry): each one is a perplexity task."""
    return registry.names("text")


def example_tasks() -> tuple[str, ...]:
    """The registered example datasets with an `evaluate`, then SUITE (lib.eval.tasks.zeroshot's tasks)."""
    return registry.evaluation_tasks() + (SUITE,)


def nll_tasks() -> tuple[str, ...]:
    """The example tasks with a gold-answer NLL (--nll_limit applies)."""
    return registry.evaluation_tasks(answer_nll=True)


def task_names() -> tuple[str, ...]:
    """Every --tasks name: the perplexity tasks, then the example tasks."""
    return perplexity_tasks() + example_tasks()


def perplexity_tokens(tokenizer, name: str, seqlen: int, data_dir=None, max_windows: int | None = None,
                      text: str | None = None) -> tuple[torch.Tensor, int]:
    """(the tokenized `name` test text [1, T], the number of `seqlen` windows evaluated); a text without
    one window is a ValueError naming `text` (default: the dataset)."""
    input_ids = get_eval_tokens(name, tokenizer, data_dir=data_dir, seqlen=seqlen)  # (1, T)
    return input_ids, window_count(input_ids.shape[1], seqlen, max_windows, text or f"the {name} evaluation text")


def evaluate_perplexity(
    model: nn.Module, tokenizer, name: str, seqlen: int, data_dir=None, max_windows: int | None = None,
    progress: bool = True, tokens: tuple[torch.Tensor, int] | None = None,
) -> dict:
    """Wanda-protocol token perplexity (`lib.eval.perplexity.perplexity`) on the `name` test text.

    `tokens`: what `perplexity_tokens` returned, when already computed.
    Returns:
        {"metrics": {"ppl", "ppl_stderr", "ppl_ci95_low", "ppl_ci95_high", "nll", "nll_stderr"},
        "counts", "per_example": {"nll": {window index: mean NLL of the window}}, "samples": None}.
    """
    input_ids, n_windows = tokens or perplexity_tokens(tokenizer, name, seqlen, data_dir, max_windows)
    return perplexity_report(perplexity(model, input_ids, seqlen, max_windows=n_windows, progress=progress))


def perplexity_report(result: dict) -> dict:
    """The task report of a `lib.eval.perplexity.perplexity` result: metrics with stderr, interval, per-window NLLs."""
    window_nll = result["window_nll"]
    per_example = {"nll": by_id([str(i) for i in range(len(window_nll))], window_nll)}
    nll_stderr = mean_stderr(window_nll)
    interval = ppl_interval(window_nll)
    metrics = {
        "ppl": result["ppl"],
        "ppl_stderr": None if nll_stderr is None else result["ppl"] * nll_stderr,
        "ppl_ci95_low": None if interval is None else interval[0],
        "ppl_ci95_high": None if interval is None else interval[1],
        "nll": result["nll"],
        "nll_stderr": nll_stderr,
    }
    counts = {"n_windows": result["n_windows"], "n_tokens": result["n_tokens"], "seqlen": result["seqlen"]}
    return {"metrics": metrics, "counts": counts, "per_example": per_example, "samples": None}


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


def check_task_options(tasks: Sequence[str], backend: str = "ours", num_fewshot: int = 0,
                       nll_limit: int | Mapping[str, int] | None = None) -> None:
    """One-line ValueErrors for task names and options that cannot run together (no data read)."""
    check_tasks(tasks)
    if backend not in ("ours", "lm-eval"):
        raise ValueError(f"--backend {backend!r} is not one of ours, lm-eval")
    if num_fewshot < 0:
        raise ValueError(f"--num_fewshot must be >= 0, got {num_fewshot}")
    check_nll_limit(nll_limit)
    no_lm_eval = [task for task in tasks if task in registry.evaluation_tasks() and task not in LM_EVAL_TASKS]
    if backend == "lm-eval" and no_lm_eval:
        raise ValueError(f"--backend lm-eval runs {', '.join(LM_EVAL_TASKS)} only, not {', '.join(no_lm_eval)}; "
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
    an example task {"examples", "nll_examples", "fewshot_examples"}; SUITE {"records": {zero-shot
    task: rows}}; a task lm-eval runs {} (lm-eval reads its own data).
    """
    check_task_options(tasks, backend, num_fewshot, nll_limit)
    data_dir = resolve_data_dir(data_dir)
    data: dict[str, dict] = {}
    for task in tasks:
        if task in perplexity_tasks():
            data[task] = {"text": registry.get(task).corpus("evaluation", data_dir).label}
        elif task == SUITE:
            data[task] = {"records": load_suite_records(data_dir=data_dir, limit=task_limit(limit, task))}
        elif backend == "lm-eval":
            data[task] = {}
        else:
            data[task] = _example_data(task, data_dir, task_limit(limit, task), num_fewshot,
                                       task_limit(nll_limit, task, "--nll_limit"))
    return data


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
) -> dict:
    """Run `tasks` in order and collect one result.

    Args:
        tasks: names from task_names(). Perplexity tasks use `seqlen` (already capped by the caller) and the
            first `eval_windows` windows; the others use the first `limit` eval examples.
        limit: an int for every example task, or {task: int}; None evaluates everything.
        num_fewshot: tasks whose spec takes few-shot examples (GSM8K): the first K train examples are
            prefixed to every prompt.
        max_new_tokens: overrides the generation length of the generating tasks (their spec's default:
            squad 32, gsm8k 256): an int or {task: int}.
        nll_limit: tasks with an answer NLL (squad/gsm8k): the NLL on the first `nll_limit` examples
            instead of the first `limit` (one forward pass per example, so it affords more): an int or {task: int}.
        backend: "ours", or "lm-eval" to run squad/gsm8k/boolq through lm-evaluation-harness
            (perplexity tasks always use the Wanda protocol, the zero-shot suite our scorer).
        data: what `load_task_data` returned for these arguments (None: loaded here). Either way all
            data is read, and every perplexity text tokenized and counted in windows, before any task runs.
    Returns:
        {"metrics": {task: dict}, "counts": {task: dict}, "seconds": {task: float},
        "per_example": {task: {metric: {id: value}}}, "samples": {task: list} (only with log_samples)}.
    """
    if data is None:
        data = load_task_data(tasks, data_dir, limit, num_fewshot, nll_limit, backend)
    else:
        check_task_options(tasks, backend, num_fewshot, nll_limit)
    tokens = {task: perplexity_tokens(tokenizer, task, seqlen, data_dir, eval_windows,
                                      f"the {task} evaluation text {data[task]['text']}")
              for task in tasks if task in perplexity_tasks()}
    timer = Timer()
    report: dict = {"metrics": {}, "counts": {}, "seconds": {}, "per_example": {}, "samples": {}}
    for task in tasks:
        logger.info("evaluating %s", task)
        with timer(task):
            if task in perplexity_tasks():
                result = evaluate_perplexity(model, tokenizer, task, seqlen, progress=progress, tokens=tokens[task])
            elif task == SUITE:  # always our scorer; scripts/compare_lm_eval.py checks it against lm-eval
                result = evaluate_suite(model, tokenizer, batch_size=batch_size, progress=progress,
                                        records=data[task]["records"])
            elif backend == "lm-eval":
                result = evaluate_lm_eval(model, tokenizer, task, task_limit(limit, task), batch_size, num_fewshot)
            else:
                result = evaluate_examples(model, tokenizer, task, data[task],
                                           task_limit(max_new_tokens, task, "--max_new_tokens"), batch_size=batch_size,
                                           log_samples=log_samples, progress=progress)
        report["metrics"][task] = result["metrics"]
        report["counts"][task] = result["counts"]
        report["seconds"][task] = timer.seconds[task]
        if result.get("per_example") is not None:
            report["per_example"][task] = result["per_example"]
        if log_samples and result.get("samples") is not None:
            report["samples"][task] = result["samples"]
        logger.info("%s: %s (%.1f s)", task, _format_metrics(result["metrics"]), timer.seconds[task])
    if not log_samples:
        del report["samples"]
    return report


def evaluate_examples(model: nn.Module, tokenizer, task: str, data: dict, max_new_tokens: int | None = None,
                      **options) -> dict:
    """The registered `evaluate` of example task `task` on `data` (from `load_task_data`).

    Besides `options` (batch_size, log_samples, progress) it gets what its spec declares:
    `nll_examples` (answer_nll), `max_new_tokens` (this one, else the spec's default) and
    `fewshot_examples` (fewshot). A spec's `evaluate` given by name is a built-in evaluator (EVALUATORS).
    """
    spec = registry.get(task, "examples")
    if spec.answer_nll:
        options["nll_examples"] = data["nll_examples"]
    if spec.max_new_tokens is not None:
        options["max_new_tokens"] = spec.max_new_tokens if max_new_tokens is None else max_new_tokens
    if spec.fewshot:
        options["fewshot_examples"] = data["fewshot_examples"]
    evaluate = EVALUATORS[spec.evaluate] if isinstance(spec.evaluate, str) else spec.evaluate
    return evaluate(model, tokenizer, data["examples"], **options)


def _example_data(task: str, data_dir, limit: int | None, num_fewshot: int, nll_limit: int | None) -> dict:
    """The first `limit` eval examples, the first `nll_limit` for the answer NLL (default: the same ones) and
    the first `num_fewshot` train examples (tasks whose spec takes them); a value above what the split
    holds is capped with one warning."""
    spec = registry.get(task, "examples")
    examples = load_task_examples(task, "eval", data_dir=data_dir, limit=limit, flag="--limit")
    nll_examples = examples
    if spec.answer_nll and nll_limit is not None:
        nll_examples = load_task_examples(task, "eval", data_dir=data_dir, limit=nll_limit, flag="--nll_limit")
    fewshot = []
    if spec.fewshot and num_fewshot:
        fewshot = load_task_examples(task, "train", data_dir=data_dir, limit=num_fewshot, flag="--num_fewshot")
    return {"examples": examples, "nll_examples": nll_examples, "fewshot_examples": fewshot}


def _format_metrics(metrics: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
                     if not k.endswith(("_stderr", "_ci95_low", "_ci95_high")))

