"""Prompt templates shared by calibration, fine-tuning and evaluation.

One module so that a model is calibrated, trained and scored on the same text
layout. Every function returns plain strings; tokenization happens elsewhere.
"""

from __future__ import annotations

# The answer a model is trained to give to an unanswerable SQuAD v2 question,
# and the prediction that evaluation counts as "no answer".
NO_ANSWER = "unanswerable"

GSM8K_REASONING_CUE = "Let's solve this step by step:"


def squad_prompt(context: str, question: str) -> str:
    """SQuAD prompt up to (and including) "Answer:"; used for calibration and generation."""
    return f"Context: {context}\nQuestion: {question}\nAnswer:"


def squad_target(answers: list[str]) -> str:
    """Training target that follows `squad_prompt`: the first gold answer, or NO_ANSWER."""
    return " " + (answers[0] if answers else NO_ANSWER)


def gsm8k_calibration_text(question: str, answer: str) -> str:
    """GSM8K calibration sample: question and worked solution (ends in '#### <number>')."""
    return f"Question: {question}\nAnswer: {answer}"


def gsm8k_prompt(question: str) -> str:
    """GSM8K prompt used for fine-tuning and generation; the solution follows on a new line."""
    return f"Question: {question}\n{GSM8K_REASONING_CUE}\n"


def gsm8k_target(answer: str) -> str:
    """Training target that follows `gsm8k_prompt`: the reference solution with '#### <n>'."""
    return answer


def boolq_prompt(passage: str, question: str) -> str:
    """BoolQ zero-shot prompt (lm-eval's); the model is scored on ' no' versus ' yes' after it (lib.eval.tasks.boolq)."""
    return f"{passage}\nQuestion: {question}?\nAnswer:"

