"""RTE (GLUE), lm-eval `rte`: "{sentence1}\\nQuestion: {sentence2} True or False?\\nAnswer:", choices True / False."""

from lib.eval.tasks.zeroshot_registry import Question, ZeroShotTask, register, shared_context


def parse(record: dict) -> Question:
    """GLUE row {"sentence1", "sentence2", "label" (0 = entailment -> "True", 1 = not_entailment -> "False")}."""
    context = f"{record['sentence1']}\nQuestion: {record['sentence2']} True or False?\nAnswer:"
    return shared_context(context, ["True", "False"], int(record["label"]))


TASK = register(ZeroShotTask(
    name="rte", title="RTE", hub=("nyu-mll/glue", "rte", "validation"), fields=("sentence1", "sentence2", "label"),
    parse=parse, lm_eval_task="rte", prompt="`{sentence1}\\nQuestion: {sentence2} True or False?\\nAnswer:` → True / False",
    id_field="idx",
))
