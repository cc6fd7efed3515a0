"""OpenBookQA (Mihaylov et al., 2018), lm-eval `openbookqa`: the bare question stem, choices the answer texts."""

from lib.eval.tasks.zeroshot_registry import Question, ZeroShotTask, register, shared_context


def parse(record: dict) -> Question:
    """allenai/openbookqa main row {"question_stem", "choices": {"text", "label"}, "answerKey"}."""
    choices = record["choices"]
    return shared_context(record["question_stem"], choices["text"], choices["label"].index(record["answerKey"].lstrip()))


TASK = register(ZeroShotTask(
    name="openbookqa", title="OBQA", hub=("allenai/openbookqa", "main", "validation"),
    fields=("question_stem", "choices", "answerKey"), parse=parse, lm_eval_task="openbookqa",
    prompt="`{question_stem}` → the answer texts", id_field="id",
))
