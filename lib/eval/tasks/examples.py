"""The evaluators of the built-in example tasks: SQuAD v2, GSM8K and BoolQ.

Each `evaluate_<task>(model, tokenizer, examples, **options)` takes already-loaded examples (the
dicts of `lib.data.load_task_examples`) and returns a task report (`lib.eval.report`):
{"metrics", "counts", "per_example", "samples"}. Their DatasetSpecs (`lib.data.registry`) point
here, and declare the options `lib.eval.runner.evaluate_tasks` passes: `nll_examples` (answer_nll),
`max_new_tokens` (its default is the spec's), `fewshot_examples` (fewshot). Prompts come from
`lib.data.prompts`, the same text the model is calibrated and fine-tuned on. The token-weighted answer
NLL weighs each example by its answer tokens (`per_example["answer_tokens"]`). Nothing here
prints or writes files.
"""

from __future__ import annotations

from typing import Callable, Sequence

from torch import nn

from lib.data import registry
from lib.data.prompts import BOOLQ_CHOICES, boolq_prompt, gsm8k_prompt, gsm8k_target, squad_prompt, squad_target
from lib.eval.generation import continuation_logprobs, generate_greedy, next_token_logprobs
from lib.eval.metrics import gsm8k_gold, gsm8k_scores, is_no_answer, squad_scores, squad_summary
from lib.eval.report import by_id, example_ids, require_examples, with_stderr

SQUAD_STOP = ("\n",)
GSM8K_STOP = ("Question:",)
GSM8K_FEWSHOT_SEPARATOR = "\n\n"


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


def generate_with_answer_nll(
    task: str, model: nn.Module, tokenizer, examples: Sequence[dict], nll_examples: Sequence[dict] | None,
    prompt: Callable[[dict], str], target: Callable[[dict], str], stop: Sequence[str], max_new_tokens: int | None,
    batch_size: int, progress: bool,
) -> tuple[list[str], dict, dict, dict]:
    """What the generative tasks share: greedy generations and the gold answer's NLL.

    Generates after `prompt(ex)` for every example of `examples` (at most `max_new_tokens`, None =
    the spec's default; stop at a `stop` string or EOS), then scores `target(ex)` after `prompt(ex)`
    for every example of `nll_examples` (None = `examples`; one forward each, cheaper than generation).
    Returns:
        (generated texts, the `answer_nll` result, counts {"answer_total", "answer_tokens"},
        per_example {"answer_nll", "answer_tokens"}).
    """
    require_examples(task, examples)
    nll_examples = examples if nll_examples is None else nll_examples
    max_new_tokens = registry.get(task).max_new_tokens if max_new_tokens is None else max_new_tokens
    generated = generate_greedy(model, tokenizer, [prompt(ex) for ex in examples], max_new_tokens, stop_strings=stop,
                                batch_size=batch_size, progress=progress)
    nll = answer_nll(model, tokenizer, [prompt(ex) for ex in nll_examples], [target(ex) for ex in nll_examples],
                     batch_size, progress)
    ids = example_ids(nll_examples)
    per_example = {"answer_nll": by_id(ids, nll["per_example"]), "answer_tokens": by_id(ids, nll["tokens"])}
    return generated, nll, {"answer_total": len(nll_examples), "answer_tokens": nll["n_tokens"]}, per_example


def evaluate_squad(model: nn.Module, tokenizer, examples: Sequence[dict], batch_size: int = 8,
                   max_new_tokens: int | None = None, log_samples: bool = False, progress: bool = True,
                   nll_examples: Sequence[dict] | None = None) -> dict:
    """SQuAD v2 by greedy generation after `squad_prompt` (stop at a newline or EOS, <= 32 tokens).

    Args:
        examples: dicts with "context", "question", "answers" (list[str], [] when unanswerable), "id".
        nll_examples: the examples of the answer NLL; None = `examples`.
    Returns:
        {"metrics": {"exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1",
        "no_answer_rate", "answer_nll", "HasAns_answer_nll", "NoAns_answer_nll" (token-weighted; None
        for an empty subset), each followed by its "_stderr"}, "counts": {"total", "HasAns_total",
        "NoAns_total", "answer_total", "answer_tokens"}, "per_example", "samples": list or None};
        fractions in [0, 1].
    """
    generated, nll, nll_counts, per_example = generate_with_answer_nll(
        "squad", model, tokenizer, examples, nll_examples, lambda ex: squad_prompt(ex["context"], ex["question"]),
        lambda ex: squad_target(ex["answers"]), SQUAD_STOP, max_new_tokens, batch_size, progress)
    predictions = [text.strip() for text in generated]
    scores = [squad_scores(pred, ex["answers"]) for pred, ex in zip(predictions, examples)]
    has_answer = [bool(ex["answers"]) for ex in examples]
    metrics, counts = squad_summary(scores, has_answer)
    metrics["no_answer_rate"] = sum(map(is_no_answer, predictions)) / len(predictions)
    metrics["answer_nll"] = nll["nll"]
    counts.update(nll_counts)
    ids = example_ids(examples)
    for key in ("exact", "f1"):
        per_example[key] = by_id(ids, (s[key] for s in scores))
        per_example.update(_by_answerability(key, ids, [s[key] for s in scores], has_answer))
    per_example["no_answer_rate"] = by_id(ids, map(is_no_answer, predictions))
    nll_examples = examples if nll_examples is None else nll_examples
    per_example.update(_by_answerability("answer_nll", example_ids(nll_examples), nll["per_example"],
                                         [bool(ex["answers"]) for ex in nll_examples]))
    tokens = per_example["answer_tokens"]
    for prefix in ("HasAns_", "NoAns_"):  # token-weighted, like answer_nll
        subset = per_example[prefix + "answer_nll"]
        metrics[prefix + "answer_nll"] = (
            sum(v * tokens[i] for i, v in subset.items()) / sum(tokens[i] for i in subset) if subset else None)
    metrics = with_stderr(metrics, per_example)
    samples = None
    if log_samples:
        samples = [
            {"id": ex.get("id"), "question": ex["question"], "answers": ex["answers"], "prediction": pred,
             "exact": score["exact"], "f1": score["f1"], "answer_nll": example_nll}
            for ex, pred, score, example_nll in zip(examples, predictions, scores, nll["per_example"])
        ]
    return {"metrics": metrics, "counts": counts, "per_example": per_example, "samples": samples}


def _by_answerability(key: str, ids: Sequence[str], values: Sequence[float], has_answer: Sequence[bool]) -> dict:
    """{"HasAns_<key>": {id: value} of the answerable questions, "NoAns_<key>": of the others}.

    The answer NLL is split too: its two gold targets differ in kind (a span of the context vs the
    fixed NO_ANSWER string), and a model that learns to say "unanswerable" lowers the overall value
    without reading.
    """
    return {prefix + key: {i: float(v) for i, v, h in zip(ids, values, has_answer) if h == answerable}
            for prefix, answerable in (("HasAns_", True), ("NoAns_", False))}


def gsm8k_fewshot_prefix(fewshot_examples: Sequence[dict]) -> str:
    """K solved examples in the fine-tuning layout, each followed by a blank line."""
    return "".join(
        gsm8k_prompt(ex["question"]) + gsm8k_target(ex["answer"]) + GSM8K_FEWSHOT_SEPARATOR for ex in fewshot_examples
    )


def evaluate_gsm8k(model: nn.Module, tokenizer, examples: Sequence[dict], fewshot_examples: Sequence[dict] = (),
                   batch_size: int = 8, max_new_tokens: int | None = None, log_samples: bool = False,
                   progress: bool = True, nll_examples: Sequence[dict] | None = None) -> dict:
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
    prefix = gsm8k_fewshot_prefix(fewshot_examples)
    generated, nll, nll_counts, per_example = generate_with_answer_nll(
        "gsm8k", model, tokenizer, examples, nll_examples, lambda ex: prefix + gsm8k_prompt(ex["question"]),
        lambda ex: gsm8k_target(ex["answer"]), GSM8K_STOP, max_new_tokens, batch_size, progress)
    golds = [gsm8k_gold(ex["answer"]) for ex in examples]
    scores = [gsm8k_scores(text, gold) for text, gold in zip(generated, golds)]
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
        **nll_counts,
    }
    ids = example_ids(examples)
    per_example["strict_accuracy"] = by_id(ids, [s["strict"] for s in scores])
    per_example["flexible_accuracy"] = by_id(ids, [s["flexible"] for s in scores])
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
    require_examples("boolq", examples)
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
        "accuracy": by_id(ids, [p == y for p, y in zip(predictions, labels)]),
        "majority_rate": by_id(ids, [y == majority for y in labels]),
        "yes_rate": by_id(ids, predictions),
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


# the built-in evaluators by the name a DatasetSpec's `evaluate` gives (lib.data.builtin)
EVALUATORS = {evaluate.__name__: evaluate for evaluate in (evaluate_squad, evaluate_gsm8k, evaluate_boolq)}
