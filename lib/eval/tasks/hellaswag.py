"""HellaSwag (Zellers et al., 2019), lm-eval `hellaswag`: the cleaned "{activity}: {context}", choices the 4 endings."""

import re

from lib.eval.tasks.task import LmEval, Question, Task, choice_metrics, register, shared_context


def preprocess(text: str) -> str:
    """lm-eval's clean-up of WikiHow artifacts: " [title]" -> ". ", other [tags] dropped, double spaces single."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def question(example: dict) -> Question:
    """Rowan/hellaswag row {"activity_label", "ctx_a", "ctx_b", "endings" (4), "label" ("0".."3")}."""
    context = example["ctx_a"] + " " + example["ctx_b"].capitalize()
    query = preprocess(example["activity_label"] + ": " + context)
    return shared_context(query, [preprocess(ending) for ending in example["endings"]], int(example["label"]))


TASK = register(Task(
    name="hellaswag", display="HellaSwag", output_type="multiple_choice", dataset="hellaswag", question=question,
    metrics=choice_metrics("HellaSwag"), groups=("zeroshot",), lm_eval=LmEval("hellaswag", "hellaswag/hellaswag.yaml"),
))
