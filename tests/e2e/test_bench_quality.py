"""scripts/bench_quality.py on a tiny random Llama: the table, saved rows and resuming from them."""

import json
import subprocess
import sys

import pytest

from tests.helpers import REPO, SAMPLE_DATA

SCRIPT = REPO / "scripts" / "bench_quality.py"
ROWS = ["dense", "three_tier wanda model owl", "three_tier sparsegpt row"]


def bench(model_dir, rows_dir, output, *rows, seeds=()):
    args = [sys.executable, str(SCRIPT), "--model", str(model_dir), "--data_dir", str(SAMPLE_DATA), "--nsamples", "4",
            "--seqlen", "64", "--eval_windows", "2", "--device", "cpu", "--rows_dir", str(rows_dir), "--output", str(output)]
    if rows:
        args += ["--only", *rows]
    if seeds:
        args += ["--seeds", *map(str, seeds)]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout.splitlines()


def test_rows_are_saved_and_reused(tiny_llama_dir, tmp_path):
    rows_dir = tmp_path / "rows"
    bench(tiny_llama_dir, rows_dir, tmp_path / "a.json", *ROWS[:2])  # worker 1
    bench(tiny_llama_dir, rows_dir, tmp_path / "b.json", ROWS[2])  # worker 2
    assert len(list(rows_dir.glob("*.json"))) == 3
    saved = {json.loads(p.read_text())["row"]["configuration"]: p.stat().st_mtime_ns for p in rows_dir.glob("*.json")}

    lines = bench(tiny_llama_dir, rows_dir, tmp_path / "all.json", *ROWS)  # the table, from the saved rows only
    assert [line.split()[0] for line in lines[1:]] == ["dense", "three_tier", "three_tier"]
    assert {json.loads(p.read_text())["row"]["configuration"]: p.stat().st_mtime_ns for p in rows_dir.glob("*.json")} == saved
    table = json.loads((tmp_path / "all.json").read_text())["rows"]
    first = json.loads((tmp_path / "a.json").read_text())["rows"]
    assert [r["configuration"] for r in table] == ROWS
    assert table[:2] == first  # same numbers as when they were measured
    assert table[0]["ppl_over_dense"] == 1.0
    assert 0.40 < table[1]["sparsity"] < 0.47 and 0.40 < table[2]["sparsity"] < 0.47
    assert table[2]["ppl_over_dense"] == table[2]["ppl"] / table[0]["ppl"]
    assert table[1]["stored_bytes"] < table[0]["stored_bytes"] and table[1]["macs_per_token"] < table[0]["macs_per_token"]


def test_rows_saved_with_other_settings_are_not_reused(tiny_llama_dir, tmp_path):
    rows_dir = tmp_path / "rows"
    bench(tiny_llama_dir, rows_dir, tmp_path / "a.json", "dense")
    path = next(rows_dir.glob("*.json"))
    saved = json.loads(path.read_text())
    saved["settings"]["seed"] = 1
    saved["row"]["ppl"] = -1.0
    path.write_text(json.dumps(saved))
    bench(tiny_llama_dir, rows_dir, tmp_path / "b.json", "dense")
    assert json.loads((tmp_path / "b.json").read_text())["rows"][0]["ppl"] > 1.0


@pytest.mark.slow
def test_seeds_give_mean_sd_per_seed_values_and_a_welch_comparison(tiny_llama_dir, tmp_path):
    rows_dir = tmp_path / "rows"
    names = ["dense", "three_tier wanda matrix", "three_tier wanda matrix owl"]
    bench(tiny_llama_dir, rows_dir, tmp_path / "s0.json", *names[:2], seeds=[0])  # a first worker: seed 0
    lines = bench(tiny_llama_dir, rows_dir, tmp_path / "all.json", *names, seeds=[0, 1, 2])
    report = json.loads((tmp_path / "all.json").read_text())
    dense, matrix, owl = report["rows"]
    assert dense["seeds"] == [0] and matrix["seeds"] == [0, 1, 2]  # the dense model does not depend on the seed
    assert len(list(rows_dir.glob("*.json"))) == 1 + 3 + 3  # one file per (row, seed)
    first = json.loads((tmp_path / "s0.json").read_text())["rows"][1]
    assert matrix["ppl_per_seed"][0] == first["ppl"]  # seed 0 reused from the first worker
    assert len(set(matrix["ppl_per_seed"])) == 3  # other calibration samples, other masks
    mean = sum(matrix["ppl_per_seed"]) / 3
    sd = (sum((p - mean) ** 2 for p in matrix["ppl_per_seed"]) / 2) ** 0.5  # ddof 1
    assert matrix["ppl"] == pytest.approx(mean) and matrix["ppl_sd"] == pytest.approx(sd)
    assert all(len(run["window_nll"]) == 2 for run in report["runs"])
    comparison = next(line for line in lines if "three_tier wanda matrix owl - three_tier wanda matrix:" in line)
    assert "Welch's t = " in comparison and "df = " in comparison and ("exceeds the seed spread" in comparison
                                                                       or "not established" in comparison)
    assert report["comparisons"] == [comparison.strip()]


def test_comparison_verdicts_follow_holm_over_all_comparisons():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def row(name, ppls):
        return {"configuration": name, "ppl_per_seed": ppls}

    tests = [
        module.compare(row("sparsegpt", [124.1, 123.8, 123.6]), row("wanda", [763.3, 629.0, 631.5])),  # far apart
        module.compare(row("owl", [118.7, 116.3, 115.4]), row("no owl", [124.1, 123.8, 123.6])),  # p ~ 0.02 alone
        module.compare(row("a", [632.1, 583.0, 727.0]), row("b", [674.6, 629.0, 763.0])),  # within the spread
        module.compare(row("c", [384.2, 407.0, 367.8]), row("d", [367.8, 358.3, 426.7])),  # within the spread
        module.compare(row("one seed", [120.0]), row("other", [130.0])),  # no test possible
    ]
    p = [t["p"] for t in tests]
    assert p[0] < 0.05 / 4 and 0.05 / 3 < p[1] < 0.05 and p[2] > 0.05 and p[3] > 0.05 and p[4] is None
    lines = module.comparison_lines(tests)
    assert lines[0].endswith(": exceeds the seed spread") and "Holm-adjusted over 4 = " in lines[0]
    assert lines[1].endswith("before the correction only: not established")  # 3 * p[1] >= 0.05
    assert lines[2].endswith("within the seed spread: not established") and lines[3].endswith("not established")
    assert "one seed" in lines[4] and "Holm" not in lines[4]


def test_frontier_rows_resume_and_compare_with_sparsegpt_2_4(tiny_llama_dir, tmp_path):
    rows = ["2:4 sparsegpt", "three_tier sparsegpt row budget 2:4 k=8"]
    bench(tiny_llama_dir, tmp_path / "rows", tmp_path / "a.json", *rows, seeds=(0, 1))
    saved = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "rows").glob("*.json")}
    assert sorted(saved) == ["2_4_sparsegpt.json", "2_4_sparsegpt_seed1.json", "three_tier_sparsegpt_row_budget_2_4_k_8.json",
                             "three_tier_sparsegpt_row_budget_2_4_k_8_seed1.json"]
    table = json.loads((tmp_path / "a.json").read_text())
    budgeted = table["rows"][1]
    assert budgeted["encodings"]["tiered"] == 14 and budgeted["seeds"] == [0, 1]
    assert budgeted["decoder_bytes"] <= table["rows"][0]["decoder_bytes"]  # within uniform 2:4's bytes
    again = bench(tiny_llama_dir, tmp_path / "rows", tmp_path / "b.json", *rows, seeds=(0, 1))
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "rows").glob("*.json")} == saved  # nothing pruned again
    assert json.loads((tmp_path / "b.json").read_text())["rows"] == table["rows"]
    assert [line.split()[0] for line in again[1:3]] == ["2:4", "three_tier"]


def test_every_frontier_row_has_its_exact_structure():
    """Every pruned row of the frontier sweep on a tiny Llama: three-tier rows keep exactly 2 of 4 in 2:4 tiles and
    exactly their k in top-k tiles (the budgeted ones within uniform 2:4's bytes); N:M rows keep N of every M along
    the inputs; unstructured rows their sparsity."""
    import importlib.util

    import torch

    from lib.pruning.driver import prune_model
    from lib.tiered.cost import tiered_cost
    from tests.helpers import check_structure, make_llama

    spec = importlib.util.spec_from_file_location("bench_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    samples = [torch.randint(4, 400, (1, 24), generator=torch.Generator().manual_seed(i)) for i in range(4)]
    configs = module.configurations(list(module.FRONTIER_ROWS))
    assert len(configs) == len(module.FRONTIER_ROWS)
    for name, config in configs.items():
        if config is None:
            continue
        model = make_llama()
        result = prune_model(model, samples, config, progress=False)
        linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"}
        for path, linear in linears.items():
            keep = linear.weight != 0
            if config.sparsity_type == "three_tier":
                tier_map = result.tier_maps[path]
                check_structure(keep, tier_map, config.block_size, config.topk_per_block)
                if config.tier_assignment == "budgeted":  # never more bytes than uniform 2:4 (float32)
                    nm_bytes = tiered_cost(torch.ones_like(tier_map), config.block_size, config.topk_per_block, 4)["bytes"]
                    assert tiered_cost(tier_map, config.block_size, config.topk_per_block, 4)["bytes"] <= nm_bytes, (name, path)
            elif config.sparsity_type in ("2:4", "4:8"):
                n, m = map(int, config.sparsity_type.split(":"))
                assert (keep.reshape(keep.shape[0], -1, m).sum(-1) == n).all(), (name, path)
            else:
                assert abs((~keep).float().mean().item() - config.sparsity_ratio) < 0.01, (name, path)
