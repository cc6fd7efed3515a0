"""The task registry reproduces what the code before it (three task registries, commit e8292af) computed on
sample_data with the tiny test Llama: tests/fixtures/eval_per_example.json holds its per-example values,
metrics and counts of every task; every number must be equal, bit for bit (the same float64).

Renamed: BoolQ's `accuracy` is `acc` (its `acc_norm` is new). Dropped: BoolQ's count `true_total` (its
`majority_rate` says the same). BoolQ alone and the zeroshot group's BoolQ are one task now, so the old
`--tasks boolq` accuracy and the old suite's `boolq_acc` are both checked against the same new values.
"""

from __future__ import annotations

import json

import pytest

from lib.eval.runner import evaluate_tasks
from tests.helpers import FIXTURES, SAMPLE_DATA, make_llama, make_tokenizer

OLD = json.loads((FIXTURES / "eval_per_example.json").read_text())
RENAMED = {("boolq", "accuracy"): "acc", ("boolq", "accuracy_stderr"): "acc_stderr"}  # (task, old key) -> new key
ADDED = {"boolq": {"acc_norm"}}  # new metrics (and their stderr)
DROPPED_COUNTS = {("boolq", "true_total")}


@pytest.fixture(scope="module")
def new_report():
    s = OLD["settings"]
    return evaluate_tasks(make_llama(), make_tokenizer(), s["tasks"], data_dir=SAMPLE_DATA, limit=s["limit"],
                          batch_size=s["batch_size"], seqlen=s["seqlen"], eval_windows=s["eval_windows"],
                          num_fewshot=s["num_fewshot"], max_new_tokens=s["max_new_tokens"], nll_limit=s["nll_limit"],
                          progress=False)


def same_number(old, new) -> bool:
    """Bit for bit: the JSON fixture holds repr()s, which read back as the very float64 that was written."""
    return type(old) is type(new) and old == new


def test_every_per_example_value_is_reproduced(new_report):
    compared = 0
    for task, metrics in OLD["per_example"].items():
        new_task = new_report["per_example"][task]
        assert set(new_task) == {RENAMED.get((task, k), k) for k in metrics} | ADDED.get(task, set())
        for key, values in metrics.items():
            new_values = new_task[RENAMED.get((task, key), key)]
            assert list(new_values) == list(values), f"{task} {key}: other example ids or order"
            bad = [i for i, v in values.items() if not same_number(v, new_values[i])]
            assert not bad, f"{task} {key}: examples {bad} differ"
            compared += len(values)
    assert compared == 431  # every value: 40 + 40 windows, 120 SQuAD, 32 GSM8K, 75 BoolQ, 2 x 62 zero-shot


def test_metrics_and_counts_are_reproduced(new_report):
    for task, metrics in OLD["metrics"].items():
        new_metrics = new_report["metrics"][task]
        added = {f"{key}{suffix}" for key in ADDED.get(task, ()) for suffix in ("", "_stderr")}
        assert set(new_metrics) == {RENAMED.get((task, k), k) for k in metrics} | added
        for key, value in metrics.items():
            assert same_number(value, new_metrics[RENAMED.get((task, key), key)]), f"{task} {key}"
    for task, counts in OLD["counts"].items():
        kept = {key: value for key, value in counts.items() if (task, key) not in DROPPED_COUNTS}
        assert new_report["counts"][task] == kept


ROLES = {  # the lead's report schema (RESTRUCTURE.md): the summary's main table and its behaviour table
    "score": {("wikitext2", "ppl"), ("c4", "ppl"), ("squad", "exact"), ("squad", "f1"), ("squad", "answer_nll"),
              ("gsm8k", "strict_accuracy"), ("gsm8k", "flexible_accuracy"), ("gsm8k", "answer_nll"), ("boolq", "acc"),
              ("zeroshot", "mean_acc")},
    "behaviour": {("squad", "HasAns_f1"), ("squad", "NoAns_exact"), ("squad", "no_answer_rate"),
                  ("squad", "HasAns_answer_nll"), ("squad", "NoAns_answer_nll"), ("boolq", "yes_rate")},
}


def test_tasks_info_declares_every_metric_with_its_role(new_report):
    from lib.eval.tasks.task import get

    info = new_report["tasks_info"]
    assert list(info) == OLD["settings"]["tasks"]
    roles = {role: {(task, key) for task in info for key, m in info[task]["metrics"].items() if m["role"] == role}
             for role in ("score", "behaviour", "detail")}
    assert roles["score"] == ROLES["score"] and roles["behaviour"] == ROLES["behaviour"]
    for task, metrics in new_report["metrics"].items():
        assert set(info[task]["metrics"]) == {key for key in metrics if "_stderr" not in key and "_ci95_" not in key}
        if task != "zeroshot":  # every key declared by its task (an undeclared one would be a plain-number detail)
            assert all(get(task).metric(key) is not None for key in info[task]["metrics"]), task
    lower = {(task, key) for task in info for key, m in info[task]["metrics"].items() if not m["higher_is_better"]}
    assert lower == {(t, k) for t, k in roles["score"] | roles["behaviour"] | roles["detail"]
                     if k in ("ppl", "nll") or k.endswith("answer_nll")}
    assert info["zeroshot"]["metrics"]["mean_acc"]["display"] == "Zero-shot mean acc"
    assert info["zeroshot"]["metrics"]["hellaswag_acc_norm"] == {"display": "HellaSwag acc_norm", "higher_is_better": True,
                                                                 "format": "pct", "role": "detail"}
