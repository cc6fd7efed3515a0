"""ARC-Easy (Clark et al., 2018), lm-eval `arc_easy`: "Question: {question}\\nAnswer:", choices the answer texts."""

from lib.eval.tasks.zeroshot_registry import Question, ZeroShotTask, register, shared_context


def parse(record: dict) -> Question:
    """allenai/ai2_arc row {"question", "choices": {"text", "label"}, "answerKey"} (labels A-E or 1-5)."""
    choices = record["choices"]
    return shared_context(f"Question: {record['question']}\nAnswer:", choices["text"], choices["label"].index(record["answerKey"]))


TASK = register(ZeroShotTask(
    name="arc_easy", title="ARC-e", hub=("allenai/ai2_arc", "ARC-Easy", "validation"),
    fields=("question", "choices", "answerKey"), parse=parse, lm_eval_task="arc_easy",
    prompt="`Question: {question}\\nAnswer:` → the answer texts", id_field="id",
))
