"""scripts/eval_tasks.py end to end on tiny random models: one report, one-line errors, the zero-shot suite."""

import json
import subprocess
import sys

import pytest
import torch

from lib.eval.tasks.task import members
from tests.helpers import REPO, write_task_data


@pytest.mark.slow
def test_cli_end_to_end_writes_one_report(tiny_llama_dir, tmp_path):
    data = write_task_data(tmp_path / "data")
    output = tmp_path / "eval.json"
    cmd = [
        sys.executable, "scripts/eval_tasks.py", "--model", str(tiny_llama_dir), "--device", "cpu",
        "--tasks", "wikitext2", "squad", "gsm8k", "boolq", "--data_dir", str(data), "--seqlen", "64",
        "--eval_windows", "2", "--limit", "squad=2", "boolq=3", "--max_new_tokens", "gsm8k=8", "--num_fewshot", "1",
        "--batch_size", "2", "--log_samples", "--output", str(output),
    ]
    env = {**__import__("os").environ, "WANDA_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(output.read_text())
    assert report["tasks"] == ["wikitext2", "squad", "gsm8k", "boolq"]
    assert report["counts"]["wikitext2"]["n_windows"] == 2 and report["counts"]["wikitext2"]["seqlen"] == 64
    assert report["metrics"]["wikitext2"]["ppl"] > 1
    assert report["counts"]["squad"]["total"] == 2 and report["counts"]["squad"]["HasAns_total"] == 1
    assert report["counts"]["gsm8k"] == {**report["counts"]["gsm8k"], "total": 2, "num_fewshot": 1}
    assert report["counts"]["boolq"] == {"total": 3}
    assert report["metrics"]["boolq"]["majority_rate"] == pytest.approx(2 / 3)  # 1 of the 3 answers is yes
    assert len(report["samples"]["boolq"]) == 3
    assert set(report["seconds"]) >= {"load_model", "wikitext2", "squad", "gsm8k", "boolq", "total"}
    assert report["settings"]["limit"] == {"squad": 2, "boolq": 3}
    for task, metrics in report["metrics"].items():  # a stderr beside every metric, per-example values kept
        assert all(key + "_stderr" in metrics for key in metrics if not key.endswith(("_stderr", "_ci95_low", "_ci95_high")))
    info = report["tasks_info"]  # self-describing: every metric but the uncertainties, as the summary shows it
    assert list(info) == report["tasks"]
    for task, metrics in report["metrics"].items():
        assert set(info[task]["metrics"]) == {key for key in metrics if "_stderr" not in key and "_ci95_" not in key}
    assert info["squad"]["display"] == "SQuAD" and info["squad"]["output_type"] == "generate"
    assert info["squad"]["metrics"]["exact"] == {"display": "SQuAD EM", "higher_is_better": True, "format": "pct",
                                                 "role": "score"}
    assert info["wikitext2"]["metrics"]["ppl"] == {"display": "WikiText2 PPL", "higher_is_better": False, "format": "ppl",
                                                   "role": "score"}
    assert info["boolq"]["output_type"] == "multiple_choice" and info["boolq"]["metrics"]["yes_rate"]["role"] == "behaviour"
    assert list(report["per_example"]["wikitext2"]["nll"]) == ["0", "1"]
    assert list(report["per_example"]["squad"]["exact"]) == ["a", "b"]
    assert report["environment"]["torch"] == torch.__version__


def run_cli(argv, capsys):
    from scripts.eval_tasks import main

    code = main(argv)
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--tasks", "squad", "mmlu"], "unknown task(s) mmlu; choose from wikitext2, c4, squad, gsm8k, boolq"),
        (["--tasks", "squad", "--limit", "squad=0"], "--limit squad must be at least 1"),
        (["--tasks", "squad", "--limit", "mmlu=5"], "TASK=N with TASK in squad, gsm8k, boolq, rte,"),
        (["--tasks", "squad", "--nll_limit", "boolq=5"], "--nll_limit applies to squad and gsm8k only, got boolq"),
        (["--tasks", "boolq", "--backend", "lm-eval"], "pip install lm-eval"),
    ],
)
def test_cli_bad_input_is_one_line_error(argv, message, capsys):
    if "lm-eval" in argv and __import__("importlib").util.find_spec("lm_eval") is not None:
        pytest.skip("lm_eval is installed")
    code, err = run_cli(argv + ["--output", "/nonexistent/never-written.json"], capsys)
    assert code == 2
    assert message in err and len(err.splitlines()) == 1


def test_eval_tasks_cli_runs_the_suite_on_sample_data(tiny_llama_dir, tmp_path):
    import subprocess
    import sys

    from tests.helpers import REPO

    output = tmp_path / "eval.json"
    cmd = [sys.executable, "scripts/eval_tasks.py", "--model", str(tiny_llama_dir), "--device", "cpu", "--tasks", "zeroshot",
           "--data_dir", "sample_data", "--limit", "zeroshot=3", "--batch_size", "4", "--output", str(output)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "WANDA_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(output.read_text())
    names = [task.name for task in members("zeroshot")]
    assert names == ["boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa", "piqa"]
    assert report["counts"]["zeroshot"] == dict.fromkeys(names, 3)
    metrics = report["metrics"]["zeroshot"]
    assert metrics["mean_acc"] == pytest.approx(sum(metrics[f"{n}_acc"] for n in names) / len(names))
    assert all(0 <= metrics[f"{n}_acc_norm"] <= 1 and f"{n}_acc_norm_stderr" in metrics for n in names)
