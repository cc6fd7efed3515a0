"""Task evaluation: WikiText2/C4 perplexity, SQuAD v2, GSM8K and BoolQ, each returning a dict.

Every `evaluate_<task>` takes already-loaded examples (the dicts of
`lib.data.load_task_examples`) and returns {"metrics", "counts", "per_example", "samples"};
`evaluate_tasks` loads the data and runs several tasks. Prompts come from
`lib.prompts`, the same text the model is calibrated and fine-tuned on. Nothing
here prints or writes files.

Uncertainty (lm-eval's layout): beside every metric `m` stands `m_stderr`, the sample
standard error (ddof = 1) of the mean of its per-example values (`lib.uncertainty`), and
`per_example[m]` keeps those values as {example id: value} (SQuAD's own ids; GSM8K and
BoolQ: the example's index in the eval split; perplexity: the window index), so two reports
over the same examples can be paired. Perplexity's per-example values are the windows' mean
NLLs (`per_example["nll"]`); `ppl_stderr` is ppl * nll_stderr (delta method) and
`ppl_ci95_low` / `ppl_ci95_high` are exp(nll -+ 1.96 se). The token-weighted answer NLL
weighs each example by its answer tokens (`per_example["answer_tokens"]`).
"""

from __future__ import annotations

import logging
from typing import Iterable, Mapping, Sequence

from torch import nn

from lib import dataset_specs
from lib.data import get_eval_tokens, load_task_examples
from lib.lm_eval_backend import evaluate_lm_eval
from lib.generation import continuation_logprobs, generate_greedy, next_token_logprobs
from lib.metrics import gsm8k_gold, gsm8k_scores, is_no_answer, squad_scores, squad_summary
from lib.perplexity import perplexity
from lib.prompts import BOOLQ_CHOICES, boolq_prompt, gsm8k_prompt, gsm8k_target, squad_prompt, squad_target
from lib.results import Timer
from lib.uncertainty import mean_stderr, ppl_interval
from lib.zeroshot import SUITE, evaluate_suite

logger = logging.getLogger(__name__)

EXAMPLE_TASKS = ("squad", "gsm8k", "boolq", SUITE)  # with an evaluator here; SUITE = "zeroshot": lib.zeroshot's tasks


def perplexity_tasks() -> tuple[str, ...]:
    """The registered text datasets (lib.dataset_specs): each one is a perplexity task."""
    return dataset_specs.names("text")


def task_names() -> tuple[str, ...]:
    """Every --tasks name: the perplexity tasks, then EXAMPLE_TASKS."""
    return perplexity_tasks() + EXAMPLE_TASKS
SQUAD_MAX_NEW_TOKENS = 32
SQUAD_STOP = ("\n",)
GSM8K_MAX_NEW_TOKENS = 256
GSM8K_STOP = ("Question:",)
GSM8K_FEWSHOT_SEPARATOR = "\n\n"
NLL_TASKS = ("squad", "gsm8k")  # tasks with a gold-answer NLL (--nll_limit)
# how a metric's per-example values pair up: the key holding its values, the key of their weights,
# and whether the metric is exp(mean) of them (perplexity from window NLLs)
PAIRING = {"ppl": ("nll", None, True), "answer_nll": ("answer_nll", "answer_tokens", False)}


def pairing(metric: str) -> tuple[str, str | None, bool]:
    """(per-example key, weights key or None, exp of the mean?) of `metric` (see PAIRING)."""
    return PAIRING.get(metric, (metric, None, False))


def with_stderr(metrics: dict, per_example: dict[str, dict[str, float]]) -> dict:
    """`metrics` with `m_stderr` right after every metric m that has per-example values."""
    out = {}
    for key, value in metrics.items():
        out[key] = value
        values_key, weights_key, _ = pairing(key)
        if key != "ppl" and values_key in per_example:
            values = per_example[values_key]
            weights = [per_example[weights_key][i] for i in values] if weights_key else None
            out[key + "_stderr"] = mean_stderr(list(values.values()), weights)
    return out


def _by_id(ids: Sequence[str], values: Iterable) -> dict[str, float]:
    return {i: float(v) for i, v in zip(ids, values)}


def example_ids(examples: Sequence[dict]) -> list[str]:
    """The pairing key of each example: its "id" when it has one, else its index in the eval split."""
    return [str(ex["id"]) if ex.get("id") is not None else str(i) for i, ex in enumerate(examples)]


def answer_nll(
    model: nn.Module, tokenizer, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 8, progress: bool = True
) -> dict:
    """Mean negative log-likelihood per token of the gold `answers` given their `prompts`.

    Token-weighted over the whole set: sum of -log p over all answer tokens / their count.
    Returns:
        {"nll": float, "n_tokens": int, "per_example": [nll per token of each answer],
        "tokens": [answer tokens of each example]}
    """
    scored = continuation_logprobs(model, tokenizer, prompts, answers, batch_size=batch_size, progress=progress)
    n_tokens = sum(s["n_tokens"] for s in scored)
    return {
        "nll": -sum(s["logprob"] for s in scored) / n_tokens,
        "n_tokens": n_tokens,
        "per_example": [-s["logprob"] / s["n_tokens"] for s in scored],
        "tokens": [s["n_tokens"] for s in scored],
    }


def _answer_nll_result(model, tokenizer, examples, prompts, targets, batch_size, progress) -> tuple[dict, dict]:
    """answer_nll over `examples` -> (the full answer_nll result, per-example {answer_nll, answer_tokens})."""
    nll = answer_nll(model, tokenizer, prompts, targets, batch_size, progress)
    ids = example_ids(examples)
    return nll, {"answer_nll": _by_id(ids, nll["per_example"]), "answer_tokens": _by_id(ids, nll["tokens"])}


def evaluate_squad(
    model: nn.Module,
    tokenizer,
    examples: Sequence[dict],
    batch_size: int = 8,
    max_new_tokens: int = SQUAD_MAX_NEW_TOKENS,
    log_samples: bool = False,
    progress: bool = True,
    nll_examples: Sequence[dict] | None = None,
) -> dict:
    """SQuAD v2 by greedy generation after `squad_prompt` (stop at a newline or EOS, <= 32 tokens).

    Args:
        examples: dicts with "context", "question", "answers" (list[str], [] when unanswerable), "id".
        nll_examples: the examples of the answer NLL (one forward each, cheaper than generation);
            None = `examples`.
    Returns:
        {"metrics": {"exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1",
        "no_answer_rate", "answer_nll", each followed by its "_stderr"}, "counts": {"total",
        "HasAns_total", "NoAns_total", "answer_total", "answer_tokens"}, "per_example", "samples": list
        or None}; fractions in [0, 1].
    """
    _require_examples("squad", examples)
    nll_examples = examples if nll_examples is None else nll_examples
    prompts = [squad_prompt(ex["context"], ex["question"]) for ex in examples]
    generated = generate_greedy(
        model, tokenizer, prompts, max_new_tokens, stop_strings=SQUAD_STOP, batch_size=batch_size, progress=progress
    )
    predictions = [text.strip() for text in generated]
    scores = [squad_scores(pred, ex["answers"]) for pred, ex in zip(predictions, examples)]
    has_answer = [bool(ex["answers"]) for ex in examples]
    metrics, counts = squad_summary(scores, has_answer)
    metrics["no_answer_rate"] = sum(map(is_no_answer, predictions)) / len(predictions)
    nll, per_example = _answer_nll_result(
        model, tokenizer, nll_examples, [squad_prompt(ex["context"], ex["question"]) for ex in nll_examples],
        [squad_target(ex["answers"]) for ex in nll_examples], batch_size, progress)
    metrics["answer_nll"] = nll["nll"]
    counts["answer_total"] = len(nll_examples)
    counts["answer_tokens"] = nll["n_tokens"]
    ids = example_ids(examples)
    for prefix, keep in (("", [True] * len(ids)), ("HasAns_", has_answer), ("NoAns_", [not h for h in has_answer])):
        for key in ("exact", "f1"):
            per_example[prefix + key] = {i: s[key] for i, s, k in zip(ids, scores, keep) if k}
    per_example["no_answer_rate"] = _by_id(ids, map(is_no_answer, predictions))
    metrics = with_stderr(metrics, per_example)
    samples = None
    if log_samples:
        samples = [
            {"id": ex.get("id"), "question": ex["question"], "answers": ex["answers"], "prediction": pred,
             "exact": score["exact"], "f1": score["f1"], "answer_nll": example_nll}
            for ex, pred, score, example_nll in zip(examples, predictions, scores, nll["per_example"])
        ]
    return {"metrics": metrics, "counts": counts, "per_example": per_example, "samples": samples}


def gsm8k_fewshot_prefix(fewshot_examples: Sequence[dict]) -> str:
    """K solved examples in the fine-tuning layout, each followed by a blank line."""
    return "".join(
        gsm8k_prompt(ex["question"]) + gsm8k_target(ex["answer"]) + GSM8K_FEWSHOT_SEPARATOR for ex in fewshot_examples
    )


def evaluate_gsm8k(
    model: nn.Module,
    tokenizer,
    examples: Sequence[dict],
    fewshot_examples: Sequence[dict] = (),
    batch_size: int = 8,
    max_new_tokens: int = GSM8K_MAX_NEW_TOKENS,
    log_samples: bool = False,
    progress: bool = True,
    nll_examples: Sequence[dict] | None = None,
) -> dict:
    """GSM8K by greedy generation after `gsm8k_prompt` (<= 256 tokens, stop at "Question:" or EOS).

    Args:
        examples: dicts with "question" and "answer" (the reference solution ending "#### <n>").
        fewshot_examples: solved examples (train split) placed before every prompt.
        nll_examples: the examples of the answer NLL; None = `examples`.
    Returns:
        {"metrics": {"strict_accuracy", "flexible_accuracy", "answer_nll", each followed by its
        "_stderr"}, "counts": {"total", "num_fewshot", "strict_found" (outputs with a "####"
        number), "answer_total", "answer_tokens"}, "per_example", "samples"}.
    """
    _require_examples("gsm8k", examples)
    nll_examples = examples if nll_examples is None else nll_examples
    prefix = gsm8k_fewshot_prefix(fewshot_examples)
    prompts = [prefix + gsm8k_prompt(ex["question"]) for ex in examples]
    golds = [gsm8k_gold(ex["answer"]) for ex in examples]
    generated = generate_greedy(
        model, tokenizer, prompts, max_new_tokens, stop_strings=GSM8K_STOP, batch_size=batch_size, progress=progress
    )
    scores = [gsm8k_scores(text, gold) for text, gold in zip(generated, golds)]
    nll, per_example = _answer_nll_result(
        model, tokenizer, nll_examples, [prefix + gsm8k_prompt(ex["question"]) for ex in nll_examples],
        [gsm8k_target(ex["answer"]) for ex in nll_examples], batch_size, progress)
    total = len(examples)
    metrics = {
        "strict_accuracy": sum(s["strict"] for s in scores) / total,
        "flexible_accuracy": sum(s["flexible"] for s in scores) / total,
        "answer_nll": nll["nll"],
    }
    counts = {
        "total": total,
        "num_fewshot": len(fewshot_examples),
        "strict_found": sum(s["extracted_strict"] is not None for s in scores),
        "answer_total": len(nll_examples),
        "answer_tokens": nll["n_tokens"],
    }
    ids = example_ids(examples)
    per_example["strict_accuracy"] = _by_id(ids, [s["strict"] for s in scores])
    per_example["flexible_accuracy"] = _by_id(ids, [s["flexible"] for s in scores])
    metrics = with_stderr(metrics, per_example)
    samples = None
    if log_samples:
        samples = [
            {"question": ex["question"], "gold": gold, "prediction": text, **score, "answer_nll": example_nll}
            for ex, gold, text, score, example_nll in zip(examples, golds, generated, scores, nll["per_example"])
        ]
    return {"metrics": metrics, "counts": counts, "per_example": per_example, "samples": samples}


def evaluate_boolq(
    model: nn.Module, tokenizer, examples: Sequence[dict], batch_size: int = 8, log_samples: bool = False, progress: bool = True
) -> dict:
    """BoolQ zero-shot: predict yes iff log p(" yes") > log p(" no") after `boolq_prompt`.

    Args:
        examples: dicts with "passage", "question" and "answer" (bool).
    Returns:
        {"metrics": {"accuracy", "majority_rate" (share of the more frequent label: the accuracy
        of always guessing it), "yes_rate" (share of yes predictions)}, "counts": {"total",
        "true_total"}, "samples"}.
    """
    _require_examples("boolq", examples)
    prompts = [boolq_prompt(ex["passage"], ex["question"]) for ex in examples]
    n = len(examples)
    choice_ids = [tokenizer(choice, add_special_tokens=False).input_ids for choice in BOOLQ_CHOICES]
    if all(len(ids) == 1 for ids in choice_ids):  # one forward per example scores both answers
        scored = next_token_logprobs(model, tokenizer, prompts, [ids[0] for ids in choice_ids], batch_size, progress)
        logprob_no, logprob_yes = scored[:, 0].tolist(), scored[:, 1].tolist()
    else:
        choice_no, choice_yes = BOOLQ_CHOICES
        scored = continuation_logprobs(
            model, tokenizer, prompts * 2, [choice_no] * n + [choice_yes] * n, batch_size=batch_size, progress=progress
        )
        logprob_no = [s["logprob"] for s in scored[:n]]
        logprob_yes = [s["logprob"] for s in scored[n:]]
    predictions = [yes > no for yes, no in zip(logprob_yes, logprob_no)]
    labels = [bool(ex["answer"]) for ex in examples]
    true_rate = sum(labels) / n
    majority = true_rate >= 0.5
    ids = example_ids(examples)
    per_example = {
        "accuracy": _by_id(ids, [p == y for p, y in zip(predictions, labels)]),
        "majority_rate": _by_id(ids, [y == majority for y in labels]),
        "yes_rate": _by_id(ids, predictions),
    }
    metrics = with_stderr({key: sum(values.values()) / n for key, values in per_example.items()}, per_example)
    counts = {"total": n, "true_total": sum(labels)}
    samples = None
    if log_samples:
        samples = [
            {"question": ex["question"], "answer": label, "prediction": pred, "logprob_yes": yes, "logprob_no": no}
            for ex, label, pred, yes, no in zip(examples, labels, predictions, logprob_yes, logprob_no)
        ]
    return {"metrics": metrics, "counts": counts, "per_example": per_example, "samples": samples}


def evaluate_perplexity(
    model: nn.Module, tokenizer, name: str, seqlen: int, data_dir=None, max_windows: int | None = None, progress: bool = True
) -> dict:
    """Wanda-protocol token perplexity (`lib.perplexity.perplexity`) on the `name` test text.

    Returns:
        {"metrics": {"ppl", "ppl_stderr", "ppl_ci95_low", "ppl_ci95_high", "nll", "nll_stderr"},
        "counts", "per_example": {"nll": {window index: mean NLL of the window}}, "samples": None}.
    """
    input_ids = get_eval_tokens(name, tokenizer, data_dir=data_dir, seqlen=seqlen)  # (1, T)
    result = perplexity(model, input_ids, seqlen, max_windows=max_windows, progress=progress)
    return perplexity_report(result)


def perplexity_report(result: dict) -> dict:
    """The task report of a `lib.perplexity.perplexity` result: metrics with stderr, interval, per-window NLLs."""
    window_nll = result["window_nll"]
    per_example = {"nll": _by_id([str(i) for i in range(len(window_nll))], window_nll)}
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
    if isinstance(nll_limit, Mapping) and set(nll_limit) - set(NLL_TASKS):
        raise ValueError(f"--nll_limit applies to {' and '.join(NLL_TASKS)} only, got {', '.join(nll_limit)}")


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
) -> dict:
    """Run `tasks` in order and collect one result.

    Args:
        tasks: names from task_names(). Perplexity tasks use `seqlen` (already capped by the caller) and the
            first `eval_windows` windows; the others use the first `limit` eval examples.
        limit: an int for every example task, or {task: int}; None evaluates everything.
        num_fewshot: GSM8K only: the first K train examples are prefixed to every prompt.
        max_new_tokens: overrides the generation length (squad 32, gsm8k 256): an int or {task: int}.
        nll_limit: squad/gsm8k: the answer NLL on the first `nll_limit` examples instead of the
            first `limit` (it is one forward pass per example, so it affords more): an int or {task: int}.
        backend: "ours", or "lm-eval" to run squad/gsm8k/boolq through lm-evaluation-harness
            (perplexity tasks always use the Wanda protocol).
    Returns:
        {"metrics": {task: dict}, "counts": {task: dict}, "seconds": {task: float},
        "per_example": {task: {metric: {id: value}}}, "samples": {task: list} (only with log_samples)}.
    """
    check_tasks(tasks)
    if backend not in ("ours", "lm-eval"):
        raise ValueError(f"--backend {backend!r} is not one of ours, lm-eval")
    if num_fewshot < 0:
        raise ValueError(f"--num_fewshot must be >= 0, got {num_fewshot}")
    check_nll_limit(nll_limit)
    timer = Timer()
    report: dict = {"metrics": {}, "counts": {}, "seconds": {}, "per_example": {}, "samples": {}}
    for task in tasks:
        logger.info("evaluating %s", task)
        with timer(task):
            if task in perplexity_tasks():
                result = evaluate_perplexity(model, tokenizer, task, seqlen, data_dir, eval_windows, progress)
            elif task == SUITE:  # always our scorer; scripts/compare_lm_eval.py checks it against lm-eval
                result = evaluate_suite(model, tokenizer, data_dir=data_dir, limit=task_limit(limit, task),
                                        batch_size=batch_size, progress=progress)
            elif backend == "lm-eval":
                result = evaluate_lm_eval(model, tokenizer, task, task_limit(limit, task), batch_size, num_fewshot)
            else:
                task_nll_limit = task_limit(nll_limit, task, "--nll_limit") if task in NLL_TASKS else None
                examples, nll_examples = _load_eval_examples(task, data_dir, task_limit(limit, task), task_nll_limit)
                common = {"batch_size": batch_size, "log_samples": log_samples, "progress": progress}
                if task in NLL_TASKS:
                    common["nll_examples"] = nll_examples
                if task in ("squad", "gsm8k") and task_limit(max_new_tokens, task, "--max_new_tokens") is not None:
                    common["max_new_tokens"] = task_limit(max_new_tokens, task, "--max_new_tokens")
                if task == "squad":
                    result = evaluate_squad(model, tokenizer, examples, **common)
                elif task == "gsm8k":
                    fewshot = load_task_examples("gsm8k", "train", data_dir=data_dir, limit=num_fewshot) if num_fewshot else []
                    result = evaluate_gsm8k(model, tokenizer, examples, fewshot, **common)
                else:
                    result = evaluate_boolq(model, tokenizer, examples, **common)
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


def _load_eval_examples(task: str, data_dir, limit: int | None, nll_limit: int | None) -> tuple[list, list]:
    """(the first `limit` eval examples, the first `nll_limit` of them for the answer NLL; default the same)."""
    if nll_limit is None:
        examples = load_task_examples(task, "eval", data_dir=data_dir, limit=limit)
        return examples, examples
    both = load_task_examples(task, "eval", data_dir=data_dir, limit=None if limit is None else max(limit, nll_limit))
    return both[:limit], both[:nll_limit]


def _format_metrics(metrics: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
                     if not k.endswith(("_stderr", "_ci95_low", "_ci95_high")))


def _require_examples(task: str, examples: Sequence[dict]) -> None:
    if not examples:
        raise ValueError(f"no {task} examples to evaluate; check --data_dir and --limit")
