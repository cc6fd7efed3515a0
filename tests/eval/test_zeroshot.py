"""The zero-shot multiple-choice framework: metrics, suite mean, registry, data loading and scoring (tiny models)."""

from __future__ import annotations

import json
import math

import pytest

from lib.data import DataError
from lib.eval.generation import continuation_logprobs
from lib.eval.runner import evaluate_tasks
from lib.eval.tasks import zeroshot_registry
from lib.eval.tasks.zeroshot import (choice_metrics, evaluate_task, get_task, load_records, parse_records, suite_mean,
                                     summarize)
from lib.eval.tasks.zeroshot_registry import Question, ZeroShotTask, register, shared_context, shared_continuation
from tests.helpers import make_llama


def _toy_parse(record: dict) -> Question:
    return shared_context(f"Question: {record['q']}\nAnswer:", record["options"], int(record["gold"]))


TOY = ZeroShotTask(
    name="toy", title="Toy", hub=("someone/toy", "main", "validation"), fields=("q", "options", "gold"),
    parse=_toy_parse, lm_eval_task="toy", prompt="Question: {q}\\nAnswer:", id_field="uid",
)
TOY_ROWS = [
    {"uid": "a", "q": "what does a pruned network keep", "options": ["its weights", "the rest"], "gold": 0},
    {"uid": "b", "q": "how many clips", "options": ["48", "half as many", "0"], "gold": 2},
    {"uid": "c", "q": "is the fox quick", "options": ["yes", "no"], "gold": 0},
]


@pytest.fixture
def toy_registry(monkeypatch, tmp_path):
    """A registry holding only TOY, with its rows under tmp_path/toy/validation.jsonl."""
    monkeypatch.setattr(zeroshot_registry, "_REGISTRY", {})
    register(TOY)
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


def test_stderr_is_the_sample_standard_error():
    summary = summarize([{"acc": a, "acc_norm": a} for a in (1.0, 0.0, 1.0, 1.0)])
    assert summary["acc"] == 0.75
    assert summary["acc_stderr"] == pytest.approx(math.sqrt(0.25 / 4))  # ddof=1 variance 0.25
    assert summarize([{"acc": 1.0, "acc_norm": 1.0}])["acc_stderr"] is None


def test_suite_mean_is_unweighted_over_tasks():
    per_task = {"a": {"acc": 0.5, "acc_stderr": 0.1}, "b": {"acc": 0.7, "acc_stderr": 0.2}}
    result = suite_mean(per_task)
    assert result["mean_acc"] == pytest.approx(0.6)
    assert result["mean_acc_stderr"] == pytest.approx(math.sqrt(0.01 + 0.04) / 2)


def test_question_layouts():
    q = shared_context("Question: x\nAnswer:", ["yes", "no"], 1)
    assert q.contexts == ("Question: x\nAnswer:",) * 2 and q.continuations == (" yes", " no") and q.choices == ("yes", "no")
    q = shared_continuation(["The cup is full because the cup", "The cup is full because the jug"], "was filled.", 0)
    assert q.continuations == (" was filled.",) * 2
    assert q.choices == q.contexts  # lm-eval's doc_to_choice for partial evaluation is the contexts


# ---------------------------------------------------------------- registry and data


def test_registry_rejects_duplicates_and_names_the_choices(toy_registry):
    with pytest.raises(ValueError, match="registered twice"):
        register(TOY)
    with pytest.raises(ValueError, match="unknown zero-shot task 'nope'; choose from toy"):
        get_task("nope")


def test_local_records_missing_file_and_missing_field(toy_registry, tmp_path):
    assert load_records(TOY, toy_registry, limit=2) == TOY_ROWS[:2]
    with pytest.raises(DataError, match=r"toy data is missing: expected .*toy/validation.jsonl .* omit --data_dir to load someone/toy"):
        load_records(TOY, tmp_path / "toy")
    (toy_registry / "toy" / "validation.jsonl").write_text(json.dumps({"q": "x", "gold": 0}) + "\n")
    with pytest.raises(DataError, match=r"validation.jsonl:1: toy record lacks field\(s\) options"):
        load_records(TOY, toy_registry)
    with pytest.raises(DataError, match="toy row 0: gold index 5 is not one of its 2 choices"):
        parse_records(TOY, [{"q": "x", "options": ["a", "b"], "gold": 5}])


def test_hub_records_use_the_spec_id(toy_registry, monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, split=None, data_files=None, **kwargs):
        calls.append((path, name, split))
        return datasets.Dataset.from_list(TOY_ROWS)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert load_records(TOY, None, limit=1) == TOY_ROWS[:1]
    assert calls == [("someone/toy", "main", "validation")]


# ---------------------------------------------------------------- scoring


def test_evaluate_task_scores_each_choice_after_its_context(tokenizer):
    model = make_llama()
    result = evaluate_task(model, tokenizer, TOY, TOY_ROWS, batch_size=2, progress=False)
    for row, sample in zip(TOY_ROWS, result["samples"]):
        question = TOY.parse(row)
        expected = continuation_logprobs(model, tokenizer, list(question.contexts), list(question.continuations), progress=False)
        assert sample["loglik"] == pytest.approx([s["logprob"] for s in expected], abs=1e-5)
        assert sample["id"] == row["uid"] and sample["gold"] == row["gold"]
        assert sample == {**sample, **choice_metrics(sample["loglik"], question.choices, question.gold)}
    assert result["metrics"]["acc"] == pytest.approx(sum(s["acc"] for s in result["samples"]) / 3)
    assert set(result["metrics"]) == {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr"}
    assert result["counts"] == {"total": 3}


def test_suite_through_evaluate_tasks_reports_each_task_and_the_mean(toy_registry, tokenizer):
    report = evaluate_tasks(make_llama(), tokenizer, ["zeroshot"], data_dir=toy_registry, limit={"zeroshot": 2},
                            log_samples=True, progress=False)
    metrics = report["metrics"]["zeroshot"]
    assert report["counts"]["zeroshot"] == {"toy": 2}
    assert metrics["mean_acc"] == metrics["toy_acc"] and metrics["mean_acc_norm"] == metrics["toy_acc_norm"]
    assert [s["id"] for s in report["samples"]["zeroshot"]["toy"]] == ["a", "b"]


@pytest.mark.real_data
@pytest.mark.parametrize("name, rows", [("boolq", 3270), ("rte", 277), ("hellaswag", 10042), ("winogrande", 1267),
                                        ("arc_easy", 570), ("arc_challenge", 299), ("openbookqa", 500), ("piqa", 1838)])
def test_every_shared_data_row_parses(name, rows):
    from tests.helpers import SHARED_DATA

    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not here")
    task = get_task(name)
    questions = parse_records(task, load_records(task, SHARED_DATA))
    assert len(questions) == rows
    assert all(len(set(q.contexts)) == (2 if name == "winogrande" else 1) for q in questions)


def test_suite_boolq_equals_the_toolkit_boolq_task(tokenizer):
    """Same prompt, same " no"/" yes" continuations: `--tasks boolq` accuracy == the suite's boolq acc."""
    from tests.helpers import SAMPLE_DATA
    from lib.data import load_task_examples
    from lib.eval.tasks.examples import evaluate_boolq

    model = make_llama()
    task = get_task("boolq")
    ours = evaluate_task(model, tokenizer, task, load_records(task, SAMPLE_DATA), progress=False)
    toolkit = evaluate_boolq(model, tokenizer, load_task_examples("boolq", "eval", SAMPLE_DATA), progress=False, log_samples=True)
    assert ours["metrics"]["acc"] == pytest.approx(toolkit["metrics"]["accuracy"])
    for sample, reference in zip(ours["samples"], toolkit["samples"]):
        assert sample["loglik"] == pytest.approx([reference["logprob_no"], reference["logprob_yes"]], abs=1e-4)
