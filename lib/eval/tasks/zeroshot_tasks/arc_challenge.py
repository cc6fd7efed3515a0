"""ARC-Challenge, lm-eval `arc_challenge`: the ARC-Easy prompt on the Challenge set."""

from lib.eval.tasks.zeroshot_registry import ZeroShotTask, register
from lib.eval.tasks.zeroshot_tasks.arc_easy import parse

TASK = register(ZeroShotTask(
    name="arc_challenge", title="ARC-c", hub=("allenai/ai2_arc", "ARC-Challenge", "validation"),
    fields=("question", "choices", "answerKey"), parse=parse, lm_eval_task="arc_challenge",
    prompt="`Question: {question}\\nAnswer:` → the answer texts", id_field="id",
))
