"""RTE (GLUE), lm-eval `rte`: "{sentence1}\\nQuestion: {sentence2} True or False?\\nAnswer:", choices True / False."""

from lib.eval.tasks.task import LmEval, Question, Task, choice_metrics, register, shared_context


def question(example: dict) -> Question:
    """GLUE row {"sentence1", "sentence2", "label" (0 = entailment -> "True", 1 = not_entailment -> "False")}."""
    context = f"{example['sentence1']}\nQuestion: {example['sentence2']} True or False?\nAnswer:"
    return shared_context(context, ["True", "False"], int(example["label"]))


TASK = register(Task(
    name="rte", display="RTE", output_type="multiple_choice", dataset="rte", question=question,
    metrics=choice_metrics("RTE"), groups=("zeroshot",), lm_eval=LmEval("rte", "glue/rte/default.yaml", ("acc",)),
))
