"""Each multiple-choice task reproduces lm-evaluation-harness 0.4's text; sample_data rows parse."""

from __future__ import annotations

from lib.data import load_task_examples
from lib.eval.multiple_choice import questions
from lib.eval.tasks.task import get
from tests.helpers import SAMPLE_DATA


def parse(name: str, record: dict):
    return get(name).question(record)


def sample_questions(name: str):
    """The task's sample_data rows parsed; at least 5 of them."""
    task = get(name)
    parsed = questions(task, load_task_examples(task.dataset, "eval", SAMPLE_DATA))
    assert len(parsed) >= 5
    return parsed


def test_boolq_prompt_and_choices():
    q = parse("boolq", {"passage": "Foxes are quick.", "question": "is the fox quick", "answer": True})
    assert q.contexts == ("Foxes are quick.\nQuestion: is the fox quick?\nAnswer:",) * 2
    assert q.continuations == (" no", " yes") and q.gold == 1
    assert parse("boolq", {"passage": "p", "question": "q", "answer": False}).gold == 0
    questions = sample_questions("boolq")
    assert {q.gold for q in questions} == {0, 1}


def test_rte_prompt_and_choices():
    q = parse("rte", {"sentence1": "A dog barked.", "sentence2": "An animal made a sound.", "label": 0, "idx": 7})
    assert q.contexts == ("A dog barked.\nQuestion: An animal made a sound. True or False?\nAnswer:",) * 2
    assert q.continuations == (" True", " False") and q.gold == 0  # label 0 = entailment = True
    assert parse("rte", {"sentence1": "s", "sentence2": "t", "label": 1}).gold == 1
    assert {q.gold for q in sample_questions("rte")} == {0, 1}


def test_hellaswag_preprocessing():
    record = {
        "activity_label": "Home and Garden", "ctx_a": "[header] How to repot a plant [title] Pick a pot. [step] Wider is better.",
        "ctx_b": "the pot", "endings": ["[title] Water it.  [step] Then wait.", " plain ending ", "c", "d"], "label": "1",
    }
    q = parse("hellaswag", record)
    # " [title]" -> ". ", other [tags] dropped, double spaces made single, ctx_b capitalized, text stripped
    assert q.contexts[0] == "Home and Garden: How to repot a plant. Pick a pot. Wider is better. The pot"
    # lm-eval's order of steps: strip first, so a leading "[title]" leaves a space; one pass of "  " -> " "
    assert q.choices == (" Water it.  Then wait.", "plain ending", "c", "d")
    assert q.continuations[1] == " plain ending" and q.gold == 1
    assert parse("hellaswag", {**record, "ctx_b": "BMX riders"}).contexts[0].endswith("Wider is better. Bmx riders")  # str.capitalize
    assert [q.gold for q in sample_questions("hellaswag")] == [0, 1, 0, 2, 3]


def test_winogrande_partial_evaluation():
    q = parse("winogrande", {"sentence": "The cup fell off the shelf because the _ was tilted.", "option1": "cup",
                             "option2": "shelf", "answer": "2"})
    assert q.contexts == ("The cup fell off the shelf because the cup", "The cup fell off the shelf because the shelf")
    assert q.continuations == (" was tilted.", " was tilted.")  # shared continuation after each filled-in context
    assert q.choices == q.contexts and q.gold == 1
    assert [q.gold for q in sample_questions("winogrande")] == [0, 1, 1, 0, 0, 0]


def test_arc_easy_prompt_and_numeric_labels():
    record = {"id": "x", "question": "Which is a liquid?", "choices": {"text": ["ice", "water", "steam"], "label": ["1", "2", "3"]},
              "answerKey": "2"}
    q = parse("arc_easy", record)
    assert q.contexts == ("Question: Which is a liquid?\nAnswer:",) * 3
    assert q.continuations == (" ice", " water", " steam") and q.gold == 1
    assert [q.gold for q in sample_questions("arc_easy")] == [0, 1, 2, 3, 1]


def test_arc_challenge_uses_the_arc_prompt_on_its_own_rows():
    from lib.data import registry

    assert registry.get(get("arc_challenge").dataset).hub == ("allenai/ai2_arc", "ARC-Challenge")
    assert registry.get("arc_challenge").files == {"eval": ("validation.jsonl", "validation")}
    q = sample_questions("arc_challenge")[2]
    assert q.contexts[0] == "Question: Why does the Moon appear to change shape during a month?\nAnswer:"
    assert q.gold == 1 and len(q.choices) == 4


def test_openbookqa_bare_stem_and_padded_answer_key():
    q = parse("openbookqa", {"id": "1", "question_stem": "A magnet will stick to", "choices": {"text": ["wood", "iron"], "label": ["A", "B"]},
                             "answerKey": " B"})
    assert q.contexts == ("A magnet will stick to",) * 2 and q.continuations == (" wood", " iron") and q.gold == 1
    assert [q.gold for q in sample_questions("openbookqa")] == [1, 0, 2, 3, 0]


def test_piqa_prompt_and_choices():
    q = parse("piqa", {"goal": "To open a jar,", "sol1": "twist the lid.", "sol2": "sing to it.", "label": 0})
    assert q.contexts == ("Question: To open a jar,\nAnswer:",) * 2
    assert q.continuations == (" twist the lid.", " sing to it.") and q.gold == 0
    assert {q.gold for q in sample_questions("piqa")} == {0, 1}
