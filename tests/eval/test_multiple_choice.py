"""The multiple-choice framework: metrics, groups and their mean, the task registry, data loading and scoring (tiny
models)."""

from __future__ import annotations

import json
import math

import pytest

from lib.data import DataError, load_task_examples, registry
from lib.data.builtin import hub_rows
from lib.eval.loglikelihood import continuation_logprobs
from lib.eval.multiple_choice import choice_metrics, evaluate_multiple_choice, questions
from lib.eval.report import group_report, suite_mean
from lib.eval.runner import evaluate_tasks
from lib.eval.tasks import task as tasks
from lib.eval.tasks.task import Group, Question, Task, shared_context, shared_continuation
from tests.helpers import make_llama


def _toy_question(record: dict) -> Question:
    return shared_context(f"Question: {record['q']}\nAnswer:", record["options"], int(record["gold"]))


TOY_DATA = registry.DatasetSpec("toy", "Toy", "examples", "toy/validation.jsonl", ("someone/toy", "main"),
                                files={"eval": ("validation.jsonl", "validation")},
                                parse_record=hub_rows("toy", ("q", "options", "gold"), "uid"))
TOY = Task("toy", "Toy", "multiple_choice", "toy", tasks.choice_metrics("Toy"), groups=("toys",), question=_toy_question)
TOY_ROWS = [
    {"uid": "a", "q": "what does a pruned network keep", "options": ["its weights", "the rest"], "gold": 0},
    {"uid": "b", "q": "how many clips", "options": ["48", "half as many", "0"], "gold": 2},
    {"uid": "c", "q": "is the fox quick", "options": ["yes", "no"], "gold": 0},
]


@pytest.fixture
def toy_registry(monkeypatch, tmp_path):
    """The dataset "toy" and a registry holding only the task TOY in the group "toys", with its rows under
    tmp_path/toy/validation.jsonl."""
    monkeypatch.setitem(registry.DATASETS, "toy", TOY_DATA)
    monkeypatch.setattr(tasks, "TASKS", {})
    monkeypatch.setattr(tasks, "GROUPS", {})
    tasks.register_group(Group("toys", "Toys"))
    tasks.register(TOY)
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in TOY_ROWS))
    return tmp_path


# ---------------------------------------------------------------- metrics


def test_acc_and_acc_norm_differ_when_length_decides():
    # loglik -4 over 2 characters vs -5 over 8: acc picks the first, acc_norm (-2 vs -0.625) the second
    assert choice_metrics([-4.0, -5.0], ["ab", "abcdefgh"], gold=1) == {"acc": 0.0, "acc_norm": 1.0}
    assert choice_metrics([-4.0, -5.0], ["ab", "abcdefgh"], gold=0) == {"acc": 1.0, "acc_norm": 0.0}


def test_acc_norm_divides_by_characters_not_bytes():
    # per character: -1.0 vs -0.967 -> choice 1; per UTF-8 byte it would be -0.5 vs -0.967 -> choice 0
    assert choice_metrics([-2.0, -2.9], ["éé", "abc"], gold=1)["acc_norm"] == 1.0


def test_ties_go_to_the_first_choice_like_numpy_argmax():
    assert choice_metrics([-1.0, -1.0, -3.0], ["a", "b", "c"], gold=0) == {"acc": 1.0, "acc_norm": 1.0}
    assert choice_metrics([-1.0, -1.0, -3.0], ["a", "b", "c"], gold=1) == {"acc": 0.0, "acc_norm": 0.0}


def test_suite_mean_is_unweighted_over_tasks():
    per_task = {"a": {"acc": 0.5, "acc_stderr": 0.1}, "b": {"acc": 0.7, "acc_stderr": 0.2}}
    result = suite_mean(per_task)
    assert result["mean_acc"] == pytest.approx(0.6)
    assert result["mean_acc_stderr"] == pytest.approx(math.sqrt(0.01 + 0.04) / 2)


def test_group_report_keeps_the_group_metrics_of_each_member():
    member = {"metrics": {"acc": 1.0, "acc_stderr": None, "acc_norm": 0.0, "acc_norm_stderr": None, "yes_rate": 1.0},
              "counts": {"total": 1}, "per_example": {"acc": {"0": 1.0}, "acc_norm": {"0": 0.0}, "yes_rate": {"0": 1.0}},
              "samples": ["s"]}
    report = group_report(("acc",), {"x": member})
    assert report == {"metrics": {"x_acc": 1.0, "x_acc_stderr": None, "mean_acc": 1.0, "mean_acc_stderr": None},
                      "counts": {"x": 1}, "per_example": {"x_acc": {"0": 1.0}}, "samples": {"x": ["s"]}}


def test_question_layouts():
    q = shared_context("Question: x\nAnswer:", ["yes", "no"], 1)
    assert q.contexts == ("Question: x\nAnswer:",) * 2 and q.continuations == (" yes", " no") and q.choices == ("yes", "no")
    q = shared_continuation(["The cup is full because the cup", "The cup is full because the jug"], "was filled.", 0)
    assert q.continuations == (" was filled.",) * 2
    assert q.choices == q.contexts  # lm-eval's doc_to_choice for partial evaluation is the contexts


# ---------------------------------------------------------------- registry and data


def test_registry_rejects_duplicates_and_names_the_choices(toy_registry):
    with pytest.raises(ValueError, match="registered twice"):
        tasks.register(TOY)
    with pytest.raises(ValueError, match="unknown task 'nope'; choose from toy"):
        tasks.get("nope")
    with pytest.raises(ValueError, match="groups \\['other'\\] are not registered"):
        tasks.register(Task("toy2", "Toy", "multiple_choice", "toy", (), groups=("other",), question=_toy_question))
    with pytest.raises(ValueError, match="dataset 'nowhere' is not one of"):
        tasks.register(Task("toy3", "Toy", "multiple_choice", "nowhere", (), question=_toy_question))
    with pytest.raises(ValueError, match="multiple_choice task 'toy4' needs question"):
        Task("toy4", "Toy", "multiple_choice", "toy", ())
    assert tasks.choices() == ("toy", "toys") and tasks.members("toys") == (TOY,)


def test_local_records_missing_file_and_missing_field(toy_registry, tmp_path):
    assert load_task_examples("toy", "eval", toy_registry, limit=2) == [{**row, "id": row["uid"]} for row in TOY_ROWS[:2]]
    with pytest.raises(DataError, match=r"validation.jsonl for toy is missing .* omit --data_dir to load someone/toy"):
        load_task_examples("toy", "eval", tmp_path / "toy")
    (toy_registry / "toy" / "validation.jsonl").write_text(json.dumps({"q": "x", "gold": 0}) + "\n")
    with pytest.raises(DataError, match=r"validation.jsonl:1: toy record lacks field\(s\) options"):
        load_task_examples("toy", "eval", toy_registry)
    with pytest.raises(DataError, match="toy row 0: gold index 5 is not one of its 2 choices"):
        questions(TOY, [{"q": "x", "options": ["a", "b"], "gold": 5}])


def test_hub_records_use_the_dataset_id(toy_registry, monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, split=None, data_files=None, **kwargs):
        calls.append((path, name, split))
        return datasets.Dataset.from_list(TOY_ROWS)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert load_task_examples("toy", "eval", None, limit=1) == [{**TOY_ROWS[0], "id": "a"}]
    assert calls == [("someone/toy", "main", "validation")]


# ---------------------------------------------------------------- scoring


def test_evaluate_multiple_choice_scores_each_choice_after_its_context(tokenizer):
    model = make_llama()
    examples = [{**row, "id": row["uid"]} for row in TOY_ROWS]
    result = evaluate_multiple_choice(model, tokenizer, TOY, examples, batch_tokens=16, progress=False)
    for row, sample in zip(TOY_ROWS, result["samples"]):
        question = TOY.question(row)
        expected = continuation_logprobs(model, tokenizer, list(question.contexts), list(question.continuations), progress=False)
        assert sample["loglik"] == pytest.approx([s["logprob"] for s in expected], abs=1e-5)
        assert sample["id"] == row["uid"] and sample["gold"] == row["gold"]
        assert sample == {**sample, **choice_metrics(sample["loglik"], question.choices, question.gold)}
    assert result["metrics"]["acc"] == pytest.approx(sum(s["acc"] for s in result["samples"]) / 3)
    assert set(result["metrics"]) == {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr"}
    assert result["counts"] == {"total": 3}
    assert result["per_example"]["acc"] == {s["id"]: s["acc"] for s in result["samples"]}


def test_stderr_is_the_sample_standard_error_over_examples_even_with_repeated_ids(tokenizer):
    """Metrics and stderr come from every example, also when two share an id (HellaSwag's "ind" repeats)."""
    examples = [{**TOY_ROWS[0], "id": "same"}, {**TOY_ROWS[2], "id": "same"}, {**TOY_ROWS[1], "id": "other"}]
    result = evaluate_multiple_choice(make_llama(), tokenizer, TOY, examples, progress=False)
    accs = [s["acc"] for s in result["samples"]]
    mean = sum(accs) / 3
    assert result["metrics"]["acc"] == pytest.approx(mean)
    assert result["metrics"]["acc_stderr"] == pytest.approx(math.sqrt(sum((a - mean) ** 2 for a in accs) / 2 / 3))
    assert len(result["per_example"]["acc"]) == 2  # by id: the repeated one once
    one = evaluate_multiple_choice(make_llama(), tokenizer, TOY, examples[:1], progress=False)
    assert one["metrics"]["acc_stderr"] is None  # no spread from one example


def test_group_through_evaluate_tasks_reports_each_task_and_the_mean(toy_registry, tokenizer):
    report = evaluate_tasks(make_llama(), tokenizer, ["toys"], data_dir=toy_registry, limit={"toys": 2},
                            log_samples=True, progress=False)
    metrics = report["metrics"]["toys"]
    assert report["counts"]["toys"] == {"toy": 2}
    assert metrics["mean_acc"] == metrics["toy_acc"] and metrics["mean_acc_norm"] == metrics["toy_acc_norm"]
    assert [s["id"] for s in report["samples"]["toys"]["toy"]] == ["a", "b"]
    assert report["tasks_info"]["toys"] == {"display": "Toys", "output_type": "group", "metrics": {
        "toy_acc": {"display": "Toy acc", "higher_is_better": True, "format": "pct", "role": "detail"},
        "toy_acc_norm": {"display": "Toy acc_norm", "higher_is_better": True, "format": "pct", "role": "detail"},
        "mean_acc": {"display": "Toys mean acc", "higher_is_better": True, "format": "pct", "role": "score"},
        "mean_acc_norm": {"display": "Toys mean acc_norm", "higher_is_better": True, "format": "pct", "role": "detail"},
    }}


@pytest.mark.real_data
@pytest.mark.parametrize("name, rows", [("boolq", 3270), ("rte", 277), ("hellaswag", 10042), ("winogrande", 1267),
                                        ("arc_easy", 570), ("arc_challenge", 299), ("openbookqa", 500), ("piqa", 1838)])
def test_every_shared_data_row_parses(name, rows):
    from tests.helpers import SHARED_DATA

    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not here")
    task = tasks.get(name)
    parsed = questions(task, load_task_examples(task.dataset, "eval", SHARED_DATA))
    assert len(parsed) == rows
    assert all(len(set(q.contexts)) == (2 if name == "winogrande" else 1) for q in parsed)
