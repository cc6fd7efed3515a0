"""BoolQ (Clark et al., 2019), lm-eval `boolq`: `lib.data.prompts.boolq_prompt`, choices no / yes.

Prompt "{passage}\\nQuestion: {question}?\\nAnswer:" (the text calibration uses), scored on " no" vs " yes";
`--tasks boolq` and the zeroshot group run this one task. Besides acc / acc_norm it reports what a model
does instead of reading: yes_rate (the share of "yes" answers, by acc's choice) and majority_rate (the
share of the more frequent label: the accuracy of always giving it).
"""

from __future__ import annotations

from collections.abc import Sequence

from lib.data.prompts import boolq_prompt
from lib.eval.tasks.task import LmEval, Metric, Question, Task, choice_metrics, register, shared_context


def question(example: dict) -> Question:
    """{"passage", "question" (lower case, no "?"), "answer" (bool)} -> choices no / yes, gold 1 for yes."""
    return shared_context(boolq_prompt(example["passage"], example["question"]), ["no", "yes"], int(example["answer"]))


def answer_rates(samples: Sequence[dict]) -> dict[str, list[float]]:
    """Per example: yes_rate [acc's choice is yes], majority_rate [the gold is the more frequent label]."""
    golds = [s["gold"] for s in samples]
    majority = int(sum(golds) / len(golds) >= 0.5)
    return {"yes_rate": [float(s["choice"] == 1) for s in samples], "majority_rate": [float(g == majority) for g in golds]}


TASK = register(Task(
    name="boolq", display="BoolQ", output_type="multiple_choice", dataset="boolq", question=question,
    extra=answer_rates, groups=("zeroshot",),
    metrics=choice_metrics("BoolQ") + (Metric("yes_rate", "BoolQ yes rate", role="behaviour"),
                                       Metric("majority_rate", "BoolQ majority rate", role="detail")),
    # lm-eval reads BoolQ from super_glue (gold in `label`, 1 = yes); the local file has google/boolq's bool `answer`
    lm_eval=LmEval("boolq", "super_glue/boolq/default.yaml", ("acc",), 'doc_to_target: "{{ 1 if answer else 0 }}"\n'),
))
