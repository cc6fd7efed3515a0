"""PIQA (Bisk et al., 2020), lm-eval `piqa`: "Question: {goal}\\nAnswer:", choices the two solutions."""

from lib.eval.tasks.task import LmEval, Question, Task, choice_metrics, register, shared_context


def question(example: dict) -> Question:
    """PIQA row {"goal", "sol1", "sol2", "label" (0 or 1)}."""
    return shared_context(f"Question: {example['goal']}\nAnswer:", [example["sol1"], example["sol2"]], int(example["label"]))


TASK = register(Task(
    name="piqa", display="PIQA", output_type="multiple_choice", dataset="piqa", question=question,
    metrics=choice_metrics("PIQA"), groups=("zeroshot",), lm_eval=LmEval("piqa", "piqa/piqa.yaml"),
))
