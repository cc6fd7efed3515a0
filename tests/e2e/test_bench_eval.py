"""scripts/bench_eval.py on a tiny random Llama and the sample data, with a stand-in for lm-eval's Python: the rows are
measured and the JSON has the documented schema (the real lm-eval side runs on the lead's machine)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import REPO, SAMPLE_DATA

SCRIPT = REPO / "scripts" / "bench_eval.py"

# Called as `PY scripts/compare_lm_eval.py lm-eval ... --tasks T --limit N ... --output F`: writes what that side
# writes, every row acc 1 / acc_norm 0 and 2.5 s of scoring.
FAKE_LM_EVAL = """#!{python}
import json, sys
args = sys.argv[1:]
assert args[0].endswith("compare_lm_eval.py") and args[1] == "lm-eval", args
task, n, out = (args[args.index(flag) + 1] for flag in ("--tasks", "--limit", "--output"))
rows = [{{"acc": 1.0, "acc_norm": 0.0}}] * int(n)
json.dump({{"tasks": {{task: {{"metrics": {{}}, "n": int(n), "per_example": rows, "seconds": 2.5}}}}}}, open(out, "w"))
"""


def ours(model_dir, task: str) -> list[dict]:
    from lib.data import load_task_examples
    from lib.eval.multiple_choice import evaluate_multiple_choice
    from lib.eval.tasks.task import get
    from lib.models.loading import load_model

    model, tokenizer = load_model(str(model_dir), dtype="float32", device="cpu")
    examples = load_task_examples(get(task).dataset, "eval", SAMPLE_DATA, 3)
    return evaluate_multiple_choice(model, tokenizer, get(task), examples, progress=False)["samples"]


def test_help_runs():
    run = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and "--lm_eval_python" in run.stdout and "--json" in run.stdout


def test_a_tiny_run_writes_every_row_in_the_schema(tiny_llama_dir, tmp_path):
    fake = tmp_path / "python"
    fake.write_text(FAKE_LM_EVAL.format(python=sys.executable))
    fake.chmod(0o755)
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--model", str(tiny_llama_dir), "--data_dir", str(SAMPLE_DATA),
                          "--lm_eval_python", str(fake), "--tasks", "boolq", "rte", "--limit", "3",
                          "--generation_tasks", "squad", "--generation_limit", "2", "--seqlen", "32",
                          "--eval_windows", "2", "--threads", "1", "--json", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    report = json.loads(out.read_text())
    assert [set(row) for row in report["rows"]] == [{"task", "n", "ours_s", "lm_eval_s", "ratio", "disagreements"}] * 2
    assert [(row["task"], row["n"], row["lm_eval_s"]) for row in report["rows"]] == [("boolq", 3, 2.5), ("rte", 3, 2.5)]
    for row in report["rows"]:
        assert row["ratio"] == row["ours_s"] / 2.5
    for row in report["rows"]:  # boolq and rte compare acc only: a row disagrees where our acc is 0 (the stand-in says 1)
        assert row["disagreements"] == sum(s["acc"] == 0 for s in ours(tiny_llama_dir, row["task"]))
    assert set(report["total"]) == {"ours_s", "lm_eval_s", "ratio"} and report["total"]["lm_eval_s"] == 5.0
    assert report["total"]["ours_s"] == sum(row["ours_s"] for row in report["rows"])
    [generation] = report["generation"]
    assert set(generation) == {"task", "n", "ours_s", "generate_s", "ratio", "same_outputs"}
    assert generation["task"] == "squad" and generation["n"] == 2 and generation["same_outputs"] is True
    ppl = report["perplexity"]
    assert (ppl["task"], ppl["n_windows"], ppl["seqlen"]) == ("wikitext2", 2, 32) and ppl["ratio"] == ppl["ours_s"] / ppl["floor_s"]
    assert "boolq" in run.stdout and "generate squad" in run.stdout and "perplexity:" in run.stdout  # rows logged

    again = subprocess.run([sys.executable, str(SCRIPT), "--data_dir", str(SAMPLE_DATA), "--lm_eval_python", str(fake),
                            "--json", str(REPO / "README.md")], capture_output=True, text=True)
    assert again.returncode != 0 and len(again.stderr.strip().splitlines()) == 1  # a file it did not write: refused
