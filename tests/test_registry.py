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
