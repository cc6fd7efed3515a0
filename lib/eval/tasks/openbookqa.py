"""OpenBookQA (Mihaylov et al., 2018), lm-eval `openbookqa`: the bare question stem, choices the answer texts."""

from lib.eval.tasks.task import LmEval, Question, Task, choice_metrics, register, shared_context


def question(example: dict) -> Question:
    """allenai/openbookqa main row {"question_stem", "choices": {"text", "label"}, "answerKey"}."""
    choices = example["choices"]
    return shared_context(example["question_stem"], choices["text"], choices["label"].index(example["answerKey"].lstrip()))


TASK = register(Task(
    name="openbookqa", display="OBQA", output_type="multiple_choice", dataset="openbookqa", question=question,
    metrics=choice_metrics("OBQA"), groups=("zeroshot",), lm_eval=LmEval("openbookqa", "openbookqa/openbookqa.yaml"),
))
