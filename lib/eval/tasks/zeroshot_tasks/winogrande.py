"""WinoGrande (Sakaguchi et al., 2020), lm-eval `winogrande`: partial evaluation.

Choice i is the sentence up to the blank with option i filled in; both choices are scored on the
same continuation, the rest of the sentence after the blank.
"""

from lib.eval.tasks.zeroshot_registry import Question, ZeroShotTask, register, shared_continuation


def parse(record: dict) -> Question:
    """winogrande_xl row {"sentence" (one "_"), "option1", "option2", "answer" ("1" or "2")}."""
    sentence = record["sentence"]
    blank = sentence.index("_")
    contexts = [sentence[:blank] + record["option1"], sentence[:blank] + record["option2"]]
    gold = {"1": 0, "2": 1}[record["answer"]]
    return shared_continuation(contexts, sentence[blank + 1 :].strip(), gold)


TASK = register(ZeroShotTask(
    name="winogrande", title="WinoGrande", hub=("allenai/winogrande", "winogrande_xl", "validation"),
    fields=("sentence", "option1", "option2", "answer"), parse=parse, lm_eval_task="winogrande",
    prompt="`{sentence before _}{option}` → the shared rest of the sentence (scored after each option)",
))
