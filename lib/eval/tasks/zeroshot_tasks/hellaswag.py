"""HellaSwag (Zellers et al., 2019), lm-eval `hellaswag`: the cleaned "{activity}: {context}", choices the 4 endings."""

import re

from lib.eval.tasks.zeroshot_registry import Question, ZeroShotTask, register, shared_context


def preprocess(text: str) -> str:
    """lm-eval's clean-up of WikiHow artifacts: " [title]" -> ". ", other [tags] dropped, double spaces single."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def parse(record: dict) -> Question:
    """Rowan/hellaswag row {"activity_label", "ctx_a", "ctx_b", "endings" (4), "label" ("0".."3")}."""
    context = record["ctx_a"] + " " + record["ctx_b"].capitalize()
    query = preprocess(record["activity_label"] + ": " + context)
    return shared_context(query, [preprocess(ending) for ending in record["endings"]], int(record["label"]))


TASK = register(ZeroShotTask(
    name="hellaswag", title="HellaSwag", hub=("Rowan/hellaswag", None, "validation"),
    fields=("activity_label", "ctx_a", "ctx_b", "endings", "label"), parse=parse, lm_eval_task="hellaswag",
    prompt="`{activity_label}: {ctx_a} {ctx_b.capitalize()}` (lm-eval's [title]/[tag] clean-up) → the 4 cleaned endings",
    id_field="ind",
))
