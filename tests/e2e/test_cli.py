"""main_block_three_tier.py end to end on a tiny random Llama and the embedded sample data."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

import main_block_three_tier as cli
from lib.tiered.tier_map import TierMetadata, load_tier_maps
from tests.helpers import SAMPLE_DATA

BASE = ["--data_dir", str(SAMPLE_DATA), "--nsamples", "4", "--seqlen", "64", "--eval_windows", "3", "--device", "cpu"]


@pytest.fixture(scope="module")
def pruned_run(tiny_llama_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    args = ["--model", str(tiny_llama_dir), *BASE, "--save", str(out / "results"), "--save_model", str(out / "model")]
    assert cli.main(args) == 0
    return out


def test_outputs_are_complete(pruned_run, tiny_llama_dir):
    results = pruned_run / "results"
    report = json.loads((results / "results.json").read_text())
    assert report["args"]["nsamples"] == 4 and report["seed"] == 0
    assert report["perplexity"]["seqlen"] == 64 and report["perplexity"]["n_windows"] == 3
    assert report["perplexity"]["n_tokens"] == 3 * 63
    assert len(report["perplexity"]["window_nll"]) == 3 and report["perplexity"]["nll_stderr"] > 0
    assert report["perplexity"]["ppl_ci95_low"] < report["perplexity"]["ppl"] < report["perplexity"]["ppl_ci95_high"]
    assert set(report["timings"]) >= {"load", "calibration_forward", "mask", "evaluation"}
    assert report["environment"]["torch"] == torch.__version__
    assert len(report["matrices"]) == 14 and all("tiers" in m for m in report["matrices"])
    q = next(m for m in report["matrices"] if m["layer"] == 0 and m["name"] == "self_attn.q_proj")
    assert q["tiers"] == {"dense": 5, "2:4": 7, "topk": 4}  # 16 blocks of 64x64
    log = next(results.glob("log_*.txt")).read_text().splitlines()
    assert log[0] == "method\tactual_sparsity\tppl_test"
    assert log[1].split("\t")[0] == "wanda_three_tier_wanda_matrix"
    assert float(log[1].split("\t")[1]) == pytest.approx(report["sparsity"]["sparsity"], abs=1e-4)
    maps, metadata = load_tier_maps(results / "tier_map.safetensors")
    assert metadata == TierMetadata(16, (0.35, 0.45, 0.2), 15, "matrix", False, str(tiny_llama_dir))
    assert maps["model.layers.1.mlp.down_proj"].shape == (4, 6) and maps["model.layers.1.mlp.down_proj"].dtype == torch.uint8
    assert (results / "tier_map.png").stat().st_size > 1000
    assert not list(pruned_run.glob(".*partial*"))


def test_saved_model_reloads_with_identical_weights(pruned_run, tiny_llama_dir):
    reloaded = AutoModelForCausalLM.from_pretrained(pruned_run / "model")
    maps, _ = load_tier_maps(pruned_run / "model" / "tier_map.safetensors")
    assert len(maps) == 14
    weight = reloaded.model.layers[0].mlp.up_proj.weight
    original = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).model.layers[0].mlp.up_proj.weight
    assert 0.3 < (weight == 0).float().mean() < 0.5
    kept = weight != 0
    assert torch.equal(weight[kept], original[kept])  # Wanda only zeroes weights


def test_same_seed_same_masks(tiny_llama_dir, tmp_path, pruned_run):
    assert cli.main(["--model", str(tiny_llama_dir), *BASE, "--no_eval", "--save_model", str(tmp_path / "again")]) == 0
    a = AutoModelForCausalLM.from_pretrained(pruned_run / "model").state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "again").state_dict()
    assert all(torch.equal(a[k] == 0, b[k] == 0) for k in a)


def test_same_command_twice_is_bit_identical(tiny_llama_dir, tmp_path, pruned_run):
    """Determinism on the CPU: the pruned_run command again gives identical weights, tier maps and metrics."""
    from safetensors.torch import load_file

    again = tmp_path / "again"
    args = ["--model", str(tiny_llama_dir), *BASE, "--save", str(again / "results"), "--save_model", str(again / "model")]
    assert cli.main(args) == 0
    first, second = load_file(pruned_run / "model" / "model.safetensors"), load_file(again / "model" / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    maps_a, _ = load_tier_maps(pruned_run / "results" / "tier_map.safetensors")
    maps_b, _ = load_tier_maps(again / "results" / "tier_map.safetensors")
    assert all(torch.equal(maps_a[k], maps_b[k]) for k in maps_a)
    report_a = json.loads((pruned_run / "results" / "results.json").read_text())
    report_b = json.loads((again / "results" / "results.json").read_text())
    assert report_a["perplexity"] == report_b["perplexity"]  # ppl, per-window NLLs: equal, not approximately
    assert report_a["sparsity"] == report_b["sparsity"] and report_a["matrices"] == report_b["matrices"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--sparsity_ratios", "0.5", "0.5", "0.5"], "sum to 1"),
        (["--sparsity_ratios", "-0.2", "0.7", "0.5"], ">= 0"),
        (["--block_size", "10"], "multiple of 4"),
        (["--top_dense_ratio", "0.5"], "all three"),
        (["--nsamples", "0"], "--nsamples"),
        (["--calibration_dataset", "imagenet"], "unknown calibration dataset"),
    ],
)
def test_bad_input_is_one_clear_line(tiny_llama_dir, tmp_path, capsys, extra, message):
    code = cli.main(["--model", str(tiny_llama_dir), *BASE, *extra, "--save", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and message in err and "\n" not in err
    assert not (tmp_path / "r").exists()


def test_fork_aliases(tiny_llama_dir, tmp_path):
    args = ["--model", str(tiny_llama_dir), *BASE, "--no_eval", "--save", str(tmp_path / "r"),
            "--top_dense_ratio", "0.5", "--mid_2_4_ratio", "0.25", "--bottom_topk_ratio", "0.25", "--calib_dataset", "wikitext2"]
    assert cli.main(args) == 0
    report = json.loads((tmp_path / "r" / "results.json").read_text())
    assert report["config"]["ratios"] == [0.5, 0.25, 0.25]


def test_interrupted_run_leaves_no_result(tiny_llama_dir, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "plot_tier_maps", boom, raising=False)
    import lib.pruning.report

    monkeypatch.setattr(lib.pruning.report, "plot_tier_maps", boom)
    with pytest.raises(SystemExit) as exit_info:  # issue 23: one line and 128 + SIGINT, no traceback
        cli.main(["--model", str(tiny_llama_dir), *BASE, "--no_eval", "--save", str(tmp_path / "r")])
    assert exit_info.value.code == 130
    assert not (tmp_path / "r").exists()
    assert not list(tmp_path.glob(".r*"))
