"""The generating runner: greedy answers after a task's prompt, scored by the task's `score` hook.

For every example the model generates after `fewshot(train examples) + prompt(example)` (at most
`max_new_tokens`, cut at a `stop` string or EOS; lib.eval.generation.generate_greedy). A task with
`answer_nll` also gets the gold answer's negative log-likelihood, `target(example)` scored after the
same prompt on the NLL examples (one forward each, in token-sized batches: cheaper than generation, so
--nll_limit may take more of them): token-weighted over the set, each example weighed by its answer
tokens. The task's `score` turns generations and NLLs into metrics; the runner adds their standard
errors. Prompts come from `lib.data.prompts`, the text the model is calibrated and fine-tuned on.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from lib.eval.batching import DEFAULT_BATCH_TOKENS
from lib.eval.generation import generate_greedy
from lib.eval.loglikelihood import continuation_logprobs
from lib.eval.report import AnswerNLL, require_examples, with_stderr
from lib.eval.tasks.task import Task


def answer_nll(
    model: nn.Module, tokenizer, prompts: Sequence[str], answers: Sequence[str], batch_tokens: int = DEFAULT_BATCH_TOKENS,
    progress: bool = True,
) -> dict:
    """Mean negative log-likelihood per token of the gold `answers` given their `prompts`.

    Token-weighted over the whole set: sum of -log p over all answer tokens / their count.
    Returns:
        {"nll": float, "n_tokens": int, "per_example": [nll per token of each answer],
        "tokens": [answer tokens of each example]}
    """
    scored = continuation_logprobs(model, tokenizer, prompts, answers, batch_tokens, progress)
    n_tokens = sum(s["n_tokens"] for s in scored)
    return {
        "nll": -sum(s["logprob"] for s in scored) / n_tokens,
        "n_tokens": n_tokens,
        "per_example": [-s["logprob"] / s["n_tokens"] for s in scored],
        "tokens": [s["n_tokens"] for s in scored],
    }


def evaluate_generate(model: nn.Module, tokenizer, task: Task, examples: Sequence[dict],
                      nll_examples: Sequence[dict] | None = None, fewshot_examples: Sequence[dict] = (),
                      max_new_tokens: int | None = None, batch_size: int = 8, log_samples: bool = False,
                      progress: bool = True, batch_tokens: int = DEFAULT_BATCH_TOKENS) -> dict:
    """Generate for `examples`, score the gold answers of `nll_examples` (None: `examples`), let the task score.

    fewshot_examples: solved train examples put before every prompt (tasks with a `fewshot` hook).
    max_new_tokens: None = the task's default. batch_size: prompts per generation batch; batch_tokens: padded
    tokens per answer-NLL forward.
    Returns:
        the task report {"metrics" (each followed by its "_stderr"), "counts" (+ "num_fewshot" for a
        few-shot task), "per_example", "samples" (None without log_samples)}.
    """
    require_examples(task.name, examples)
    prefix = task.fewshot(fewshot_examples) if task.fewshot is not None else ""
    generated = generate_greedy(model, tokenizer, [prefix + task.prompt(ex) for ex in examples],
                                task.max_new_tokens if max_new_tokens is None else max_new_tokens,
                                stop_strings=task.stop, batch_size=batch_size, progress=progress)
    nll = None
    if task.answer_nll:
        nll_examples = examples if nll_examples is None else nll_examples
        nll = AnswerNLL(nll_examples, **answer_nll(model, tokenizer, [prefix + task.prompt(ex) for ex in nll_examples],
                                                   [task.target(ex) for ex in nll_examples], batch_tokens, progress))
    scored = task.score(examples, generated, nll)
    counts = scored["counts"] | ({"num_fewshot": len(fewshot_examples)} if task.fewshot is not None else {})
    return {"metrics": with_stderr(scored["metrics"], scored["per_example"]), "counts": counts,
            "per_example": scored["per_example"], "samples": scored["samples"] if log_samples else None}
