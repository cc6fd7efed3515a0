"""SQuAD v2 (Rajpurkar et al., 2018): greedy answers after `lib.data.prompts.squad_prompt`, the official v2.0 scoring.

Prompt "Context: {context}\\nQuestion: {question}\\nAnswer:", at most 32 new tokens, cut at a newline. Exact
match and token F1 follow the official script (lib.eval.metrics; a NO_ANSWER or empty prediction abstains),
overall and split into answerable (HasAns_) and unanswerable (NoAns_) questions. The gold answer's NLL
(target: the first gold answer, or NO_ANSWER) is split the same way: its two kinds of target differ, and a
model that learns to say "unanswerable" lowers the overall value without reading.
"""

from __future__ import annotations

from collections.abc import Sequence

from lib.data.prompts import squad_prompt, squad_target
from lib.eval.metrics import is_no_answer, squad_scores, squad_summary
from lib.eval.report import AnswerNLL, by_id, example_ids
from lib.eval.tasks.task import LmEval, Metric, Task, register

SQUAD_STOP = ("\n",)


def by_answerability(key: str, ids: Sequence[str], values: Sequence[float], has_answer: Sequence[bool]) -> dict:
    """{"HasAns_<key>": {id: value} of the answerable questions, "NoAns_<key>": of the others}."""
    return {prefix + key: {i: float(v) for i, v, h in zip(ids, values, has_answer) if h == answerable}
            for prefix, answerable in (("HasAns_", True), ("NoAns_", False))}


def score(examples: Sequence[dict], generations: Sequence[str], nll: AnswerNLL) -> dict:
    """EM / F1 (overall, HasAns_, NoAns_), the no-answer rate and the answer NLL (overall and split).

    examples: {"id", "context", "question", "answers" (list[str], [] when unanswerable)}.
    Returns metrics {"exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "no_answer_rate",
    "answer_nll", "HasAns_answer_nll", "NoAns_answer_nll" (token-weighted; None for an empty subset)}, counts
    {"total", "HasAns_total", "NoAns_total", "answer_total", "answer_tokens"}, per_example, samples.
    """
    predictions = [text.strip() for text in generations]
    scores = [squad_scores(pred, ex["answers"]) for pred, ex in zip(predictions, examples)]
    has_answer = [bool(ex["answers"]) for ex in examples]
    metrics, counts = squad_summary(scores, has_answer)
    metrics["no_answer_rate"] = sum(map(is_no_answer, predictions)) / len(predictions)
    metrics["answer_nll"] = nll.nll
    counts.update(nll.counts())
    ids = example_ids(examples)
    per_example = nll.values()
    for key in ("exact", "f1"):
        per_example[key] = by_id(ids, (s[key] for s in scores))
        per_example.update(by_answerability(key, ids, [s[key] for s in scores], has_answer))
    per_example["no_answer_rate"] = by_id(ids, map(is_no_answer, predictions))
    per_example.update(by_answerability("answer_nll", nll.ids, nll.per_example,
                                        [bool(ex["answers"]) for ex in nll.examples]))
    tokens = per_example["answer_tokens"]
    for prefix in ("HasAns_", "NoAns_"):  # token-weighted, like answer_nll
        subset = per_example[prefix + "answer_nll"]
        metrics[prefix + "answer_nll"] = (
            sum(v * tokens[i] for i, v in subset.items()) / sum(tokens[i] for i in subset) if subset else None)
    samples = [{"id": ex.get("id"), "question": ex["question"], "answers": ex["answers"], "prediction": pred,
                "exact": s["exact"], "f1": s["f1"], "answer_nll": example_nll}
               for ex, pred, s, example_nll in zip(examples, predictions, scores, nll.per_example)]
    return {"metrics": metrics, "counts": counts, "per_example": per_example, "samples": samples}


TASK = register(Task(
    name="squad", display="SQuAD", output_type="generate", dataset="squad",
    prompt=lambda ex: squad_prompt(ex["context"], ex["question"]), target=lambda ex: squad_target(ex["answers"]),
    stop=SQUAD_STOP, max_new_tokens=32, answer_nll=True, score=score, lm_eval=LmEval("squadv2"),
    metrics=(
        Metric("exact", "SQuAD EM"), Metric("f1", "SQuAD F1"), Metric("answer_nll", "SQuAD NLL", False, "nll"),
        Metric("HasAns_exact", "SQuAD EM answerable", role="detail"),
        Metric("HasAns_f1", "SQuAD F1 answerable", role="behaviour"),
        Metric("NoAns_exact", "SQuAD EM unanswerable", role="behaviour"),
        Metric("NoAns_f1", "SQuAD F1 unanswerable", role="detail"),
        Metric("no_answer_rate", "SQuAD no-answer rate", role="behaviour"),
        Metric("HasAns_answer_nll", "SQuAD NLL answerable", False, "nll", "behaviour"),
        Metric("NoAns_answer_nll", "SQuAD NLL unanswerable", False, "nll", "behaviour"),
    ),
))
