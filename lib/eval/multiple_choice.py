"""The multiple-choice runner: a task's examples scored the way lm-evaluation-harness 0.4 scores them.

A task turns each example into a `Question` (lib.eval.tasks.task); every choice i is scored by the
summed log-likelihood of `continuations[i]` given `contexts[i]` (`lib.eval.loglikelihood.continuation_logprobs`,
one forward per shared context, batches of `batch_tokens` padded tokens), as lm-eval's `loglikelihood`
requests do:

    acc      = [argmax_i loglik_i == gold]
    acc_norm = [argmax_i loglik_i / len(choices[i]) == gold]   (length in characters, as lm-eval)

Ties go to the lowest index (numpy argmax). A task's `extra` hook adds per-example metrics from the
scored samples (BoolQ's yes_rate: acc's choice is "yes"). Each metric is reported with `<metric>_stderr`,
the sample standard error (ddof=1) of its per-example values, which are kept by example id (lib.eval.report).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from torch import nn

from lib.core.uncertainty import mean_stderr
from lib.data.registry import DataError
from lib.eval.batching import DEFAULT_BATCH_TOKENS
from lib.eval.loglikelihood import continuation_logprobs
from lib.eval.report import by_id, example_ids, require_examples
from lib.eval.tasks.task import Question, Task

logger = logging.getLogger(__name__)

METRICS = ("acc", "acc_norm")


def questions(task: Task, examples: Sequence[dict]) -> list[Question]:
    """Examples -> Questions; a malformed example is one DataError naming the task and row index."""
    parsed = []
    for index, example in enumerate(examples):
        try:
            question = task.question(example)
        except (KeyError, ValueError, TypeError, AttributeError, IndexError) as err:
            raise DataError(f"{task.name} row {index}: cannot parse ({err.__class__.__name__}: {err})") from err
        if not 0 <= question.gold < len(question.choices):
            raise DataError(f"{task.name} row {index}: gold index {question.gold} is not one of its "
                            f"{len(question.choices)} choices")
        parsed.append(question)
    return parsed


def argmax(values: Sequence[float]) -> int:
    """The index of the first maximum, like numpy."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def choice_metrics(logliks: Sequence[float], choices: Sequence[str], gold: int) -> dict[str, float]:
    """acc and acc_norm of one question from its K choice log-likelihoods (lm-eval's definitions)."""
    normalized = [ll / len(choice) for ll, choice in zip(logliks, choices)]
    return {"acc": float(argmax(logliks) == gold), "acc_norm": float(argmax(normalized) == gold)}


def score_questions(
    model: nn.Module, tokenizer, questions: Sequence[Question], batch_tokens: int = DEFAULT_BATCH_TOKENS,
    progress: bool = True,
) -> list[list[float]]:
    """Summed log-likelihood of every choice of every question: one list of K floats per question."""
    contexts = [c for q in questions for c in q.contexts]
    continuations = [c for q in questions for c in q.continuations]
    scored = continuation_logprobs(model, tokenizer, contexts, continuations, batch_tokens, progress)
    logliks, start = [], 0
    for question in questions:
        k = len(question.choices)
        logliks.append([s["logprob"] for s in scored[start : start + k]])
        start += k
    return logliks


def evaluate_multiple_choice(model: nn.Module, tokenizer, task: Task, examples: Sequence[dict],
                             batch_tokens: int = DEFAULT_BATCH_TOKENS, progress: bool = True) -> dict:
    """acc / acc_norm (+ the task's extra metrics, + stderr) of a multiple-choice task on `examples`.

    Returns:
        {"metrics": {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr", ...}, "counts": {"total"},
        "per_example": {metric: {example id: value}}, "samples": [{"index", "id", "gold", "loglik" (K floats),
        "choice" (acc's argmax), "acc", "acc_norm"} per example]}.
    """
    require_examples(task.name, examples)
    parsed = questions(task, examples)
    logliks = score_questions(model, tokenizer, parsed, batch_tokens, progress)
    ids = example_ids(examples)
    samples = [{"index": index, "id": ids[index], "gold": question.gold, "loglik": lls, "choice": argmax(lls),
                **choice_metrics(lls, question.choices, question.gold)}
               for index, (question, lls) in enumerate(zip(parsed, logliks))]
    values = {key: [s[key] for s in samples] for key in METRICS}
    values.update(task.extra(samples) if task.extra is not None else {})
    metrics = {}
    for key, column in values.items():  # over the list: example ids need not be unique (HellaSwag's "ind" is not)
        metrics[key], metrics[f"{key}_stderr"] = sum(column) / len(column), mean_stderr(column)
    logger.info("%s: acc=%.4f acc_norm=%.4f (n=%d)", task.name, metrics["acc"], metrics["acc_norm"], len(samples))
    return {"metrics": metrics, "counts": {"total": len(samples)},
            "per_example": {key: by_id(ids, column) for key, column in values.items()}, "samples": samples}
