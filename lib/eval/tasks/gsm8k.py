"""GSM8K (Cobbe et al., 2021): a worked solution generated after `lib.data.prompts.gsm8k_prompt`, its number checked.

Prompt "Question: {question}\\nLet's solve this step by step:\\n" (the fine-tuning layout), at most 256 new
tokens, cut at "Question:"; --num_fewshot K puts K solved train examples before it. Strict accuracy reads
the number after "####", flexible the last number anywhere (lib.eval.metrics). The answer NLL scores the
reference solution after the prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

from lib.data.prompts import gsm8k_prompt, gsm8k_target
from lib.eval.metrics import gsm8k_gold, gsm8k_scores
from lib.eval.report import AnswerNLL, by_id, example_ids
from lib.eval.tasks.task import LmEval, Metric, Task, register

GSM8K_STOP = ("Question:",)
GSM8K_FEWSHOT_SEPARATOR = "\n\n"


def fewshot_prefix(fewshot_examples: Sequence[dict]) -> str:
    """K solved examples in the fine-tuning layout, each followed by a blank line."""
    return "".join(
        gsm8k_prompt(ex["question"]) + gsm8k_target(ex["answer"]) + GSM8K_FEWSHOT_SEPARATOR for ex in fewshot_examples
    )


def score(examples: Sequence[dict], generations: Sequence[str], nll: AnswerNLL) -> dict:
    """Strict and flexible accuracy and the answer NLL.

    examples: {"question", "answer" (the reference solution ending "#### <n>")}.
    Returns metrics {"strict_accuracy", "flexible_accuracy", "answer_nll"}, counts {"total", "strict_found"
    (outputs with a "####" number), "answer_total", "answer_tokens"}, per_example, samples.
    """
    golds = [gsm8k_gold(ex["answer"]) for ex in examples]
    scores = [gsm8k_scores(text, gold) for text, gold in zip(generations, golds)]
    total = len(examples)
    metrics = {
        "strict_accuracy": sum(s["strict"] for s in scores) / total,
        "flexible_accuracy": sum(s["flexible"] for s in scores) / total,
        "answer_nll": nll.nll,
    }
    counts = {"total": total, "strict_found": sum(s["extracted_strict"] is not None for s in scores), **nll.counts()}
    ids = example_ids(examples)
    per_example = nll.values()
    per_example["strict_accuracy"] = by_id(ids, [s["strict"] for s in scores])
    per_example["flexible_accuracy"] = by_id(ids, [s["flexible"] for s in scores])
    samples = [{"question": ex["question"], "gold": gold, "prediction": text, **s, "answer_nll": example_nll}
               for ex, gold, text, s, example_nll in zip(examples, golds, generations, scores, nll.per_example)]
    return {"metrics": metrics, "counts": counts, "per_example": per_example, "samples": samples}


TASK = register(Task(
    name="gsm8k", display="GSM8K", output_type="generate", dataset="gsm8k",
    prompt=lambda ex: gsm8k_prompt(ex["question"]), target=lambda ex: gsm8k_target(ex["answer"]),
    stop=GSM8K_STOP, max_new_tokens=256, answer_nll=True, fewshot=fewshot_prefix, score=score,
    lm_eval=LmEval("gsm8k"),
    metrics=(Metric("strict_accuracy", "GSM8K acc (strict)"), Metric("flexible_accuracy", "GSM8K acc (flex)"),
             Metric("answer_nll", "GSM8K NLL", False, "nll")),
))
