"""ARC (Clark et al., 2018), lm-eval `arc_easy` and `arc_challenge`: "Question: {question}\\nAnswer:", choices the
answer texts; one prompt, two sets (Easy and Challenge)."""

from lib.eval.tasks.task import LmEval, Question, Task, choice_metrics, register, shared_context


def question(example: dict) -> Question:
    """allenai/ai2_arc row {"question", "choices": {"text", "label"}, "answerKey"} (labels A-E or 1-5)."""
    choices = example["choices"]
    return shared_context(f"Question: {example['question']}\nAnswer:", choices["text"],
                          choices["label"].index(example["answerKey"]))


EASY = register(Task(
    name="arc_easy", display="ARC-e", output_type="multiple_choice", dataset="arc_easy", question=question,
    metrics=choice_metrics("ARC-e"), groups=("zeroshot",), lm_eval=LmEval("arc_easy", "arc/arc_easy.yaml"),
))
CHALLENGE = register(Task(
    name="arc_challenge", display="ARC-c", output_type="multiple_choice", dataset="arc_challenge", question=question,
    metrics=choice_metrics("ARC-c"), groups=("zeroshot",), lm_eval=LmEval("arc_challenge", "arc/arc_challenge.yaml"),
))
