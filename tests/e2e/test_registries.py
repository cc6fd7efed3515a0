"""The registries: a dataset (lib.data.registry), an evaluation task (lib.eval.tasks) or a pruning score registered
from outside lib/ is usable end to end."""

from __future__ import annotations

import json

import pytest

import main_block_three_tier as cli
from lib.data import dataset_names, parse_mixture, registry
from lib.data.sources import Corpus
from lib.eval.tasks import task as tasks
from lib.experiments.rows import data_label
from tests.helpers import SAMPLE_DATA, TOKENIZER_CORPUS

TOY_TEXT = [line for _ in range(40) for line in TOKENIZER_CORPUS]  # running text, a few thousand tokens


@pytest.fixture
def toy_dataset(monkeypatch, tmp_path):
    """A text dataset named "toy" and its perplexity task, registered for the test only; records which corpus roles
    were read."""
    monkeypatch.setenv("WANDA_CACHE", str(tmp_path / "cache"))
    roles = []

    def corpus(role, data_dir):
        roles.append(role)
        texts = TOY_TEXT if role == "calibration" else TOY_TEXT[::-1]
        return Corpus(texts, f"toy:{role}:v1", f"toy {role}")

    spec = registry.DatasetSpec("toy", "Toy", "text", "toy/ (in memory)", ("nobody/toy", None), corpus=corpus)
    monkeypatch.setitem(registry.DATASETS, "toy", spec)
    monkeypatch.setattr(tasks, "TASKS", dict(tasks.TASKS))
    tasks.register(tasks.Task("toy", "Toy", "perplexity", "toy", tasks.perplexity_metrics("Toy")))
    return roles


def test_registered_dataset_is_a_calibration_and_evaluation_choice(toy_dataset):
    assert "toy" in dataset_names() and parse_mixture("wikitext2+toy")[1][0] == "toy"
    assert data_label("wikitext2+toy") == "WikiText2 + Toy"
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(registry.DATASETS["toy"])
    assert "toy" in cli.build_parser().format_help()


def test_pruning_cli_and_evaluation_run_on_a_registered_dataset(toy_dataset, tiny_llama_dir, tmp_path, capsys):
    from scripts.eval_tasks import main as eval_main

    out = tmp_path / "run"
    argv = ["--model", str(tiny_llama_dir), "--data_dir", str(SAMPLE_DATA), "--calibration_dataset", "toy",
            "--nsamples", "4", "--seqlen", "32", "--eval_windows", "2", "--device", "cpu",
            "--save", str(out / "results"), "--save_model", str(out / "model")]
    assert cli.main(argv) == 0, capsys.readouterr().err
    report = json.loads((out / "results" / "results.json").read_text())
    assert report["args"]["calibration_dataset"] == "toy" and 0.3 < report["sparsity"]["sparsity"] < 0.6
    assert set(toy_dataset) == {"calibration"}  # read once to check it before the model loads, once to calibrate

    assert eval_main(["--model", str(out / "model"), "--tasks", "toy", "--seqlen", "32", "--eval_windows", "3",
                      "--device", "cpu", "--output", str(out / "eval.json")]) == 0, capsys.readouterr().err
    metrics = json.loads((out / "eval.json").read_text())["metrics"]["toy"]
    assert set(toy_dataset) == {"calibration", "evaluation"}
    assert metrics["ppl"] > 1 and metrics["ppl_ci95_low"] < metrics["ppl"] < metrics["ppl_ci95_high"]


TOY_QA_EVAL = [{"q": "two and two", "a": "two"}, {"q": "one and one", "a": "three"}, {"q": "a quick fox", "a": "fox"},
               {"q": "a dog", "a": "cat"}]
TOY_QA_TRAIN = [{"q": "first solved", "a": "first"}, {"q": "second solved", "a": "second"}]


def _toy_qa_score(examples, generations, nll):
    """An answer is right when it is a word of its question; the answer NLL as the runner measured it."""
    from lib.eval.report import by_id, example_ids

    per_example = {**nll.values(), "match": by_id(example_ids(examples), [ex["a"] in ex["q"].split() for ex in examples])}
    metrics = {"match": sum(per_example["match"].values()) / len(examples), "answer_nll": nll.nll}
    return {"metrics": metrics, "counts": {"total": len(examples), **nll.counts()}, "per_example": per_example,
            "samples": [{"q": ex["q"], "generated": text} for ex, text in zip(examples, generations)]}


@pytest.fixture
def toy_task(monkeypatch, tmp_path):
    """An example dataset "toyqa" and its generating task, registered for the test only; its data dir, and the
    calls of the generation (prompts, max_new_tokens, batch_size)."""
    from lib.eval import generate

    def record(row, where):
        return {"q": registry.require_field(row, "q", str, where), "a": registry.require_field(row, "a", str, where)}

    spec = registry.DatasetSpec(
        "toyqa", "ToyQA", "examples", "toyqa/{train,eval}.jsonl", ("nobody/toyqa", None),
        files={"train": ("train.jsonl", "train"), "eval": ("eval.jsonl", "validation")}, parse_record=record,
        calibration_text=lambda ex: ex["q"],
    )
    monkeypatch.setitem(registry.DATASETS, "toyqa", spec)
    monkeypatch.setattr(tasks, "TASKS", dict(tasks.TASKS))
    tasks.register(tasks.Task(
        "toyqa", "ToyQA", "generate", "toyqa", prompt=lambda ex: ex["q"] + " ->", target=lambda ex: " " + ex["a"],
        max_new_tokens=7, answer_nll=True, fewshot=lambda exs: "".join(f"{ex['q']} -> {ex['a']}\n" for ex in exs),
        score=_toy_qa_score,
        metrics=(tasks.Metric("match", "ToyQA match"), tasks.Metric("answer_nll", "ToyQA NLL", False, "nll", "detail")),
    ))
    calls = []

    def recording_generate_greedy(model, tokenizer, prompts, max_new_tokens, stop_strings=(), batch_size=8, progress=True):
        calls.append((prompts, max_new_tokens, batch_size))
        return [""] * len(prompts)

    monkeypatch.setattr(generate, "generate_greedy", recording_generate_greedy)
    data = tmp_path / "data"
    (data / "toyqa").mkdir(parents=True)
    for name, rows in (("eval.jsonl", TOY_QA_EVAL), ("train.jsonl", TOY_QA_TRAIN)):
        (data / "toyqa" / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
    return data, calls


def test_registered_evaluation_task_runs_through_eval_tasks(toy_task, tiny_llama_dir, tiny_llama, tokenizer, tmp_path,
                                                            capsys):
    from lib.eval.runner import evaluate_tasks, nll_tasks, task_names
    from scripts.eval_tasks import build_parser, main as eval_main

    data, calls = toy_task
    assert "toyqa" in task_names() and "toyqa" in nll_tasks() and "toyqa" in build_parser().format_help()
    out = tmp_path / "eval.json"
    assert eval_main(["--model", str(tiny_llama_dir), "--tasks", "toyqa", "--data_dir", str(data), "--device", "cpu",
                      "--limit", "toyqa=3", "--nll_limit", "toyqa=4", "--max_new_tokens", "toyqa=5", "--num_fewshot", "1",
                      "--batch_size", "2", "--log_samples", "--output", str(out)]) == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    # match [1, 0, 1]: mean 2/3, variance (1/9 + 4/9 + 1/9) / 2 = 1/3, se sqrt(1/3) / sqrt(3) = 1/3
    metrics = report["metrics"]["toyqa"]
    assert metrics["match"] == pytest.approx(2 / 3) and metrics["match_stderr"] == pytest.approx(1 / 3)
    assert list(metrics) == ["match", "match_stderr", "answer_nll", "answer_nll_stderr"] and metrics["answer_nll"] > 0
    counts = report["counts"]["toyqa"]
    assert counts == {"total": 3, "answer_total": 4, "answer_tokens": counts["answer_tokens"], "num_fewshot": 1}
    assert report["per_example"]["toyqa"]["match"] == {"0": 1.0, "1": 0.0, "2": 1.0}
    assert list(report["per_example"]["toyqa"]["answer_nll"]) == ["0", "1", "2", "3"]
    assert report["samples"]["toyqa"] == [{"q": row["q"], "generated": ""} for row in TOY_QA_EVAL[:3]]
    assert report["tasks_info"]["toyqa"] == {"display": "ToyQA", "output_type": "generate", "metrics": {
        "match": {"display": "ToyQA match", "higher_is_better": True, "format": "pct", "role": "score"},
        "answer_nll": {"display": "ToyQA NLL", "higher_is_better": False, "format": "nll", "role": "detail"}}}
    prompts, max_new_tokens, batch_size = calls[-1]
    assert prompts == ["first solved -> first\n" + row["q"] + " ->" for row in TOY_QA_EVAL[:3]]
    assert (max_new_tokens, batch_size) == (5, 2)

    # the task's defaults: max_new_tokens 7, no few-shot examples, the answer NLL on the scored examples
    result = evaluate_tasks(tiny_llama, tokenizer, ["toyqa"], data_dir=data, progress=False)
    assert result["metrics"]["toyqa"]["match"] == 0.5
    assert result["counts"]["toyqa"]["total"] == 4 and result["counts"]["toyqa"]["answer_total"] == 4
    assert result["counts"]["toyqa"]["num_fewshot"] == 0 and "samples" not in result
    prompts, max_new_tokens, batch_size = calls[-1]
    assert prompts == [row["q"] + " ->" for row in TOY_QA_EVAL] and (max_new_tokens, batch_size) == (7, 8)


@pytest.fixture
def toy_score(monkeypatch):
    """A score registered for the test only: the negated magnitude, so pruning keeps the smallest weights."""
    from lib.pruning.methods import SCORES, Score
    from lib.pruning.stats import ActNormStats

    calls = []

    def negated_magnitude(weight, stats):
        calls.append(stats.act_norm_sq.shape)  # calibration statistics reach the score
        return -weight.float().abs()

    monkeypatch.setitem(SCORES, "toy", Score(ActNormStats, negated_magnitude, "-|W| (test only)"))
    return calls


def test_registered_score_and_dataset_run_the_pruning_cli_and_evaluation(
    toy_score, toy_dataset, tiny_llama_dir, tmp_path, capsys
):
    import torch
    from transformers import AutoModelForCausalLM

    from scripts.eval_tasks import main as eval_main

    out = tmp_path / "run"
    argv = ["--model", str(tiny_llama_dir), "--data_dir", str(SAMPLE_DATA), "--calibration_dataset", "toy",
            "--prune_method", "toy", "--sparsity_type", "unstructured", "--sparsity_ratio", "0.5",
            "--nsamples", "2", "--seqlen", "32", "--eval_windows", "2", "--device", "cpu",
            "--save_model", str(out / "model")]
    assert "toy" in cli.build_parser().format_help()
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert len(toy_score) == 14 and set(toy_dataset) == {"calibration"}  # 2 layers x 7 Linears
    pruned = AutoModelForCausalLM.from_pretrained(out / "model").model.layers[0].mlp.up_proj.weight
    original = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).model.layers[0].mlp.up_proj.weight
    kept = pruned != 0
    assert torch.equal(kept.sum(1), torch.full((pruned.shape[0],), pruned.shape[1] // 2))
    largest_kept = original.abs().where(kept, 0).amax(1)
    smallest_pruned = original.abs().where(~kept, float("inf")).amin(1)
    assert (largest_kept <= smallest_pruned).all()  # the toy score ranked, not Wanda
    assert eval_main(["--model", str(out / "model"), "--tasks", "toy", "--seqlen", "32", "--eval_windows", "2",
                      "--device", "cpu", "--output", str(out / "eval.json")]) == 0, capsys.readouterr().err
    assert json.loads((out / "eval.json").read_text())["metrics"]["toy"]["ppl"] > 1


