"""PIQA (Bisk et al., 2020), lm-eval `piqa`: "Question: {goal}\\nAnswer:", choices the two solutions."""

from lib.eval.tasks.zeroshot_registry import Question, ZeroShotTask, register, shared_context


def parse(record: dict) -> Question:
    """PIQA row {"goal", "sol1", "sol2", "label" (0 or 1)}."""
    return shared_context(f"Question: {record['goal']}\nAnswer:", [record["sol1"], record["sol2"]], int(record["label"]))


TASK = register(ZeroShotTask(
    name="piqa", title="PIQA", hub=("baber/piqa", None, "validation"), fields=("goal", "sol1", "sol2", "label"),
    parse=parse, lm_eval_task="piqa", prompt="`Question: {goal}\\nAnswer:` → sol1 / sol2",
))
