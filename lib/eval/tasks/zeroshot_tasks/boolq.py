"""BoolQ (Clark et al., 2019), lm-eval `boolq`: the same prompt as `lib.data.prompts.boolq_prompt`, choices no / yes.

The toolkit's own `--tasks boolq` (accuracy, majority and yes rates) scores the same text; this spec
adds BoolQ to the suite with lm-eval's metric names and stderr.
"""

from lib.data.prompts import boolq_prompt
from lib.eval.tasks.zeroshot_registry import Question, ZeroShotTask, register, shared_context


def parse(record: dict) -> Question:
    """google/boolq row {"passage", "question" (lower case, no "?"), "answer" (bool)}; gold = 1 for yes."""
    if not isinstance(record["answer"], bool):
        raise TypeError(f"'answer' must be true or false, got {record['answer']!r}")
    return shared_context(boolq_prompt(record["passage"], record["question"]), ["no", "yes"], int(record["answer"]))


TASK = register(ZeroShotTask(
    name="boolq", title="BoolQ", hub=("google/boolq", None, "validation"), fields=("passage", "question", "answer"),
    parse=parse, lm_eval_task="boolq", prompt="`{passage}\\nQuestion: {question}?\\nAnswer:` → no / yes",
    local_file="dev.jsonl",
))
