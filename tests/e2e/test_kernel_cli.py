"""--kernel hybrid through the CLIs on a tiny tiered checkpoint: the same metrics as --kernel none, one-line errors,
and scripts/bench_decode.py --quick writing its rows."""

import json
import subprocess
import sys

import pytest
import torch

from lib.tiered.kernel.linear import HybridLinear
from tests.helpers import REPO, SAMPLE_DATA, write_task_data


@pytest.fixture(scope="module")
def tiered_dir(tiny_llama_dir, tmp_path_factory):
    import main_block_three_tier as cli

    out = tmp_path_factory.mktemp("kernel") / "tiered"
    args = ["--model", str(tiny_llama_dir), "--data_dir", str(SAMPLE_DATA), "--nsamples", "2", "--seqlen", "32",
            "--device", "cpu", "--no_eval", "--save_compressed", str(out)]
    assert cli.main(args) == 0
    return out


def test_load_model_hybrid_equals_the_decoded_model(tiered_dir):
    from lib.models.loading import load_model

    dense, _ = load_model(str(tiered_dir), device="cpu")
    hybrid, _ = load_model(str(tiered_dir), device="cpu", kernel="hybrid")
    modules = [m for m in hybrid.modules() if isinstance(m, HybridLinear)]
    assert len(modules) == 7 * hybrid.config.num_hidden_layers and all(m.encoding == "tiered" for m in modules)
    assert not any(name.endswith("proj.weight") for name, _ in hybrid.named_parameters())  # no dense copy is kept
    ids = torch.randint(0, hybrid.config.vocab_size, (2, 12))
    with torch.inference_mode():
        torch.testing.assert_close(hybrid(ids).logits, dense(ids).logits, rtol=1e-4, atol=1e-4)
        generated = [m.generate(ids[:1], max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0)
                     for m in (dense, hybrid)]
    assert torch.equal(*generated)


def run_script(args, timeout=300):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_eval_tasks_hybrid_gives_the_same_metrics(tiered_dir, tmp_path):
    data = write_task_data(tmp_path / "data")
    reports = {}
    for kernel in ("none", "hybrid"):
        output = tmp_path / f"{kernel}.json"
        done = run_script(["scripts/eval_tasks.py", "--model", str(tiered_dir), "--device", "cpu", "--tasks", "wikitext2",
                           "boolq", "--data_dir", str(data), "--seqlen", "64", "--eval_windows", "2", "--limit", "3",
                           "--batch_size", "2", "--kernel", kernel, "--output", str(output)])
        assert done.returncode == 0, done.stderr[-2000:]
        reports[kernel] = json.loads(output.read_text())
    assert reports["hybrid"]["settings"]["kernel"] == "hybrid"
    none, hybrid = reports["none"]["metrics"], reports["hybrid"]["metrics"]
    assert none.keys() == hybrid.keys()
    for task in none:
        assert none[task].keys() == hybrid[task].keys()
        for metric, value in none[task].items():
            assert hybrid[task][metric] == pytest.approx(value, rel=1e-4, abs=1e-6), (task, metric)


def test_a_model_that_is_not_tiered_is_refused_in_one_line(tiny_llama_dir, tmp_path):
    done = run_script(["scripts/eval_tasks.py", "--model", str(tiny_llama_dir), "--device", "cpu", "--tasks", "wikitext2",
                       "--kernel", "hybrid", "--output", str(tmp_path / "e.json")])
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("error: --kernel hybrid needs a tiered checkpoint directory") and "--kernel none" in done.stderr
    assert not (tmp_path / "e.json").exists()


def test_bench_decode_quick_writes_every_row(tiny_llama_dir, tiered_dir, tmp_path):
    out = tmp_path / "bench.json"
    done = run_script(["scripts/bench_decode.py", "--quick", "--model", str(tiny_llama_dir), "--checkpoint",
                       f"three_tier={tiered_dir}", "--data_dir", str(SAMPLE_DATA), "--threads", "1", "--json", str(out)])
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    kernel = [r for r in rows if r["kind"] == "kernel"]
    decode = [r for r in rows if r["kind"] == "decode"]
    assert [r["structure"] for r in kernel] == ["three_tier", "2:4", "bitmask"]
    for row in kernel:
        assert row.keys() >= {"shape", "structure", "batch", "time_ratio", "kernel_s", "linear_s", "bytes_ratio"}
        assert row["time_ratio"] == pytest.approx(row["kernel_s"] / row["linear_s"]) and 0.5 < row["bytes_ratio"] < 0.8
    assert [r["name"] for r in decode] == ["dense", "three_tier"]
    for row in decode:
        assert row.keys() >= {"name", "tokens_per_s", "speedup", "bytes_ratio", "batch", "same_tokens"}
    assert decode[0]["speedup"] == 1 and decode[0]["bytes_ratio"] == 1 and decode[0]["same_tokens"]
    assert 0.4 < decode[1]["bytes_ratio"] < 0.8
    assert decode[1]["same_tokens"] or "first_difference" in decode[1]
    assert done.stderr.count("kind=") == len(rows)  # every row is logged as it is measured
    again = run_script(["scripts/bench_decode.py", "--quick", "--only", "kernel", "--json", str(tmp_path / "mine.json")])
    (tmp_path / "mine.json").write_text("keep")
    refused = run_script(["scripts/bench_decode.py", "--quick", "--only", "kernel", "--json", str(tmp_path / "mine.json")])
    assert again.returncode == 0, again.stderr[-2000:]
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1 and "--overwrite" in refused.stderr
    assert (tmp_path / "mine.json").read_text() == "keep"
