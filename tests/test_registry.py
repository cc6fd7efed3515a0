"""The dataset registry (lib.dataset_specs): a dataset registered from outside lib/ is usable end to end."""

from __future__ import annotations

import json

import pytest

import main_block_three_tier as cli
from conftest import SAMPLE_DATA, TOKENIZER_CORPUS
from lib import dataset_specs
from lib.data import dataset_names, parse_mixture
from lib.data_sources import Corpus
from lib.experiments import data_label

TOY_TEXT = [line for _ in range(40) for line in TOKENIZER_CORPUS]  # running text, a few thousand tokens


@pytest.fixture
def toy_dataset(monkeypatch, tmp_path):
    """A text dataset named "toy", registered for the test only; records which corpus roles were read."""
    monkeypatch.setenv("WANDA_CACHE", str(tmp_path / "cache"))
    roles = []

    def corpus(role, data_dir):
        roles.append(role)
        texts = TOY_TEXT if role == "calibration" else TOY_TEXT[::-1]
        return Corpus(texts, f"toy:{role}:v1", f"toy {role}")

    spec = dataset_specs.DatasetSpec("toy", "Toy", "text", "toy/ (in memory)", ("nobody/toy", None), corpus=corpus)
    monkeypatch.setitem(dataset_specs.DATASETS, "toy", spec)
    return roles


def test_registered_dataset_is_a_calibration_and_evaluation_choice(toy_dataset):
    assert "toy" in dataset_names() and parse_mixture("wikitext2+toy")[1][0] == "toy"
    assert data_label("wikitext2+toy") == "WikiText2 + Toy"
    with pytest.raises(ValueError, match="registered twice"):
        dataset_specs.register(dataset_specs.DATASETS["toy"])
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
    assert toy_dataset == ["calibration"]

    assert eval_main(["--model", str(out / "model"), "--tasks", "toy", "--seqlen", "32", "--eval_windows", "3",
                      "--device", "cpu", "--output", str(out / "eval.json")]) == 0, capsys.readouterr().err
    metrics = json.loads((out / "eval.json").read_text())["metrics"]["toy"]
    assert toy_dataset == ["calibration", "evaluation"]
    assert metrics["ppl"] > 1 and metrics["ppl_ci95_low"] < metrics["ppl"] < metrics["ppl_ci95_high"]


def test_a_spec_missing_what_its_kind_needs_is_refused():
    with pytest.raises(ValueError, match="needs corpus"):
        dataset_specs.DatasetSpec("bad", "Bad", "text", "-", ("x", None))
    with pytest.raises(ValueError, match="needs files"):
        dataset_specs.DatasetSpec("bad", "Bad", "examples", "-", ("x", None), calibration_text=str)


@pytest.fixture
def toy_score(monkeypatch):
    """A score registered for the test only: the negated magnitude, so pruning keeps the smallest weights."""
    from lib.pruning_methods import SCORES, Score
    from lib.stats import ActNormStats

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
    assert len(toy_score) == 14 and toy_dataset == ["calibration"]  # 2 layers x 7 Linears
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


def test_each_pattern_is_one_lookup_with_its_own_rule():
    import torch

    from lib.prune import PruneConfig, _chunk_selector
    from lib.pruning_methods import PATTERNS

    score = torch.rand(32, 64, generator=torch.Generator().manual_seed(0))
    kept = {}
    for name, pattern in PATTERNS.items():
        tier_map = torch.zeros(2, 4, dtype=torch.uint8) if pattern.tiers else None  # all blocks dense
        select, width = _chunk_selector(PruneConfig(sparsity_type=name), tier_map)
        kept[name] = select(score, 0).float().mean().item()
    assert kept == {"three_tier": 1.0, "unstructured": 0.5, "2:4": 0.5, "4:8": 0.5}
