"""The pruning papers' zero-shot multiple-choice suite, scored the way lm-evaluation-harness 0.4 scores it.

A task is one `ZeroShotTask` spec (where its rows live, how a row becomes a `Question`) in a
registry (`lib.eval.tasks.zeroshot_registry`); the built-in specs live one per file in
`lib/eval/tasks/zeroshot_tasks/` and register themselves, in suite order, when this module is imported.
Every choice i is scored by the summed log-likelihood of `continuations[i]` given `contexts[i]`
(`lib.eval.generation.continuation_logprobs`), as lm-eval's `loglikelihood` requests do:

    acc      = [argmax_i loglik_i == gold]
    acc_norm = [argmax_i loglik_i / len(choices[i]) == gold]   (length in characters, as lm-eval)

Ties go to the lowest index (numpy argmax). Each metric is reported with `<metric>_stderr`, the
sample standard error (ddof=1) of the per-example values, which are kept by example index.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

from torch import nn

from lib.core.uncertainty import mean_stderr
from lib.data.registry import DataError
from lib.data.sources import load_hub_split, read_jsonl, resolve_data_dir
from lib.eval.generation import continuation_logprobs
from lib.eval.tasks import zeroshot_tasks  # noqa: F401  (registers the built-in specs, in suite order)
from lib.eval.tasks.zeroshot_registry import Question, ZeroShotTask, registered

logger = logging.getLogger(__name__)

METRICS = ("acc", "acc_norm")
SUITE = "zeroshot"


def registry() -> Mapping[str, ZeroShotTask]:
    """All registered tasks, in suite order (the built-in specs first)."""
    return registered()


def get_task(name: str) -> ZeroShotTask:
    tasks = registry()
    if name not in tasks:
        raise ValueError(f"unknown zero-shot task {name!r}; choose from {', '.join(tasks)}")
    return tasks[name]


# ---------------------------------------------------------------- data


def load_records(task: ZeroShotTask, data_dir=None, limit: int | None = None) -> list[dict]:
    """The first `limit` rows of a task's split: DATA_DIR/<layout> when a data directory is given
    (argument, else env WANDA_DATA_DIR), else the Hub split. Each row is checked for `task.fields`."""
    root = resolve_data_dir(data_dir)
    if root is None:
        hub_id, config, split = task.hub
        rows = load_hub_split(task.name, hub_id, config, split, task.layout).to_list()
        located = [(f"{hub_id} {split} row {i}", row) for i, row in enumerate(rows[:limit])]
    else:
        path = root / task.layout
        if not path.is_file():
            raise DataError(
                f"{task.name} data is missing: expected {path} (one JSON object per line, Hub field names "
                f"{', '.join(task.fields)}), or omit --data_dir to load {task.hub[0]} from the Hub"
            )
        located = []
        for lineno, row in read_jsonl(path):
            if limit is not None and len(located) >= limit:
                break
            located.append((f"{path}:{lineno}", row))
    if limit is not None and len(located) < limit:
        logger.warning("--limit %d exceeds the %d rows of %s; using %d", limit, len(located), task.name, len(located))
    for where, row in located:
        missing = [field for field in task.fields if field not in row]
        if missing:
            raise DataError(f"{where}: {task.name} record lacks field(s) {', '.join(missing)} (Hub schema: {', '.join(task.fields)})")
    return [row for _, row in located]


def parse_records(task: ZeroShotTask, records: Sequence[dict]) -> list[Question]:
    """Records -> Questions; a malformed record is one DataError naming the task and row index."""
    questions = []
    for index, record in enumerate(records):
        try:
            question = task.parse(record)
        except (KeyError, ValueError, TypeError, AttributeError, IndexError) as err:
            raise DataError(f"{task.name} row {index}: cannot parse ({err.__class__.__name__}: {err})") from err
        if not 0 <= question.gold < len(question.choices):
            raise DataError(f"{task.name} row {index}: gold index {question.gold} is not one of its {len(question.choices)} choices")
        questions.append(question)
    return questions


# ---------------------------------------------------------------- metrics (pure)


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))  # the first maximum, like numpy


def choice_metrics(logliks: Sequence[float], choices: Sequence[str], gold: int) -> dict[str, float]:
    """acc and acc_norm of one question from its K choice log-likelihoods (lm-eval's definitions)."""
    normalized = [ll / len(choice) for ll, choice in zip(logliks, choices)]
    return {"acc": float(_argmax(logliks) == gold), "acc_norm": float(_argmax(normalized) == gold)}


def summarize(per_example: Sequence[Mapping[str, float]], metrics: Sequence[str] = METRICS) -> dict[str, float]:
    """{metric, metric_stderr} over the per-example values (sample stderr, ddof=1; None for one example)."""
    summary = {}
    for metric in metrics:
        values = [ex[metric] for ex in per_example]
        summary[metric], summary[f"{metric}_stderr"] = sum(values) / len(values), mean_stderr(values)
    return summary


def suite_mean(task_metrics: Mapping[str, Mapping[str, float]], metric: str = "acc") -> dict[str, float]:
    """The papers' suite average: the unweighted mean over tasks, stderr = sqrt(sum se^2) / K."""
    values = [m[metric] for m in task_metrics.values()]
    errors = [m[f"{metric}_stderr"] for m in task_metrics.values()]
    k = len(values)
    stderr = None if None in errors else math.sqrt(sum(e * e for e in errors)) / k
    return {f"mean_{metric}": sum(values) / k, f"mean_{metric}_stderr": stderr}


# ---------------------------------------------------------------- evaluation


def score_questions(
    model: nn.Module, tokenizer, questions: Sequence[Question], batch_size: int = 8, progress: bool = True
) -> list[list[float]]:
    """Summed log-likelihood of every choice of every question: one list of K floats per question."""
    contexts = [c for q in questions for c in q.contexts]
    continuations = [c for q in questions for c in q.continuations]
    scored = continuation_logprobs(model, tokenizer, contexts, continuations, batch_size=batch_size, progress=progress)
    logliks, start = [], 0
    for question in questions:
        k = len(question.choices)
        logliks.append([s["logprob"] for s in scored[start : start + k]])
        start += k
    return logliks


def evaluate_task(
    model: nn.Module,
    tokenizer,
    task: ZeroShotTask,
    records: Sequence[dict],
    batch_size: int = 8,
    progress: bool = True,
) -> dict:
    """acc / acc_norm (+ stderr) of one task on `records` (rows with the Hub's field names).

    Returns:
        {"metrics": {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr"}, "counts": {"total"},
        "samples": [{"index", "id", "gold", "loglik" (K floats), "acc", "acc_norm"} per example]}.
    """
    if not records:
        raise ValueError(f"no {task.name} examples to evaluate; check --data_dir and --limit")
    questions = parse_records(task, records)
    logliks = score_questions(model, tokenizer, questions, batch_size, progress)
    samples = []
    for index, (record, question, lls) in enumerate(zip(records, questions, logliks)):
        example_id = record.get(task.id_field, index) if task.id_field else index
        samples.append({"index": index, "id": example_id, "gold": question.gold, "loglik": lls,
                        **choice_metrics(lls, question.choices, question.gold)})
    return {"metrics": summarize(samples), "counts": {"total": len(samples)}, "samples": samples}


def load_suite_records(names: Sequence[str] | None = None, data_dir=None, limit: int | None = None) -> dict[str, list[dict]]:
    """{task: its first `limit` rows} for every task in `names` (default: the whole registry), all read and
    checked before any is scored."""
    return {name: load_records(get_task(name), data_dir, limit) for name in (names or list(registry()))}


def evaluate_suite(
    model: nn.Module,
    tokenizer,
    names: Sequence[str] | None = None,
    data_dir=None,
    limit: int | None = None,
    batch_size: int = 8,
    progress: bool = True,
    records: Mapping[str, list[dict]] | None = None,
) -> dict:
    """Every task in `names` (default: the whole registry) and the suite means of acc and acc_norm.

    Returns:
        {"metrics": {"<task>_acc", "<task>_acc_stderr", "<task>_acc_norm", ..., "mean_acc",
        "mean_acc_stderr", "mean_acc_norm", "mean_acc_norm_stderr"} (flat floats),
        "counts": {"<task>": n examples}, "per_example": {"<task>_acc": {example id: 0/1}, ...} (for paired
        intervals), "samples": {"<task>": per-example list}}. `records`: what `load_suite_records` returned
        (then `names`, `data_dir` and `limit` are not used).
    """
    records = load_suite_records(names, data_dir, limit) if records is None else records
    tasks = [get_task(name) for name in records]
    per_task, counts, samples = {}, {}, {}
    for task in tasks:
        result = evaluate_task(model, tokenizer, task, records[task.name], batch_size, progress)
        per_task[task.name], counts[task.name], samples[task.name] = result["metrics"], result["counts"]["total"], result["samples"]
        logger.info("%s: acc=%.4f acc_norm=%.4f (n=%d)", task.name, result["metrics"]["acc"], result["metrics"]["acc_norm"], counts[task.name])
    metrics = {f"{name}_{key}": value for name, values in per_task.items() for key, value in values.items()}
    for metric in METRICS:
        metrics.update(suite_mean(per_task, metric))
    per_example = {f"{name}_{metric}": {str(s["id"]): s[metric] for s in task_samples}
                   for name, task_samples in samples.items() for metric in METRICS}
    return {"metrics": metrics, "counts": counts, "per_example": per_example, "samples": samples}
