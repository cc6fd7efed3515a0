"""WinoGrande (Sakaguchi et al., 2020), lm-eval `winogrande`: partial evaluation.

Choice i is the sentence up to the blank with option i filled in; both choices are scored on the
same continuation, the rest of the sentence after the blank.
"""

from lib.eval.tasks.task import LmEval, Question, Task, choice_metrics, register, shared_continuation


def question(example: dict) -> Question:
    """winogrande_xl row {"sentence" (one "_"), "option1", "option2", "answer" ("1" or "2")}."""
    sentence = example["sentence"]
    blank = sentence.index("_")
    contexts = [sentence[:blank] + example["option1"], sentence[:blank] + example["option2"]]
    gold = {"1": 0, "2": 1}[example["answer"]]
    return shared_continuation(contexts, sentence[blank + 1 :].strip(), gold)


TASK = register(Task(
    name="winogrande", display="WinoGrande", output_type="multiple_choice", dataset="winogrande", question=question,
    metrics=choice_metrics("WinoGrande"), groups=("zeroshot",),
    lm_eval=LmEval("winogrande", "winogrande/default.yaml", ("acc",)),
))
