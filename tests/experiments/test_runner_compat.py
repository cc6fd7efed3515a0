"""The Python runner against what the bash runner it replaced printed and wrote (fixtures/bash_runner, captured on
main before the change): the same --dry_run output and errors for 37 settings, the same markers, and an OUT the
bash runner finished resumes with every step skipped."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lib.experiments.markers import read_marker
from scripts import run_experiments
from tests.experiments.stand_in import clean_environment, stand_in_python
from tests.helpers import REPO

FIXTURES = Path(__file__).parent / "fixtures" / "bash_runner"
CASES = json.loads((FIXTURES / "dry_runs.json").read_text())
WRAPPER = REPO / "scripts" / "run_task_experiments.sh"
# the settings of the bash run whose markers fixtures/bash_runner/markers holds
MARKED_RUN = {"MODEL": "tiny model", "DATA_DIR": "sample_data", "EXPS": "exp1 baseline", "SEEDS": "0 1", "FT_SEEDS": "0",
              "PRUNE_ARGS": "--prune_method wanda", "FT_ARGS": "--warmup_ratio 0.1", "EVAL_ARGS": "--num_fewshot 0",
              "EVAL_LIMITS": "squad=2 gsm8k=2 boolq=2", "NSAMPLES": "2", "SEQLEN": "64", "FT_MAX_STEPS": "2"}


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_same_output_as_the_bash_runner(case, tmp_path, monkeypatch, capsys):
    """Every dry run prints the bash runner's lines and commands word for word, every bad setting its error."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os, "environ", clean_environment(PYTHON="{PYTHON}", **case["env"]))
    monkeypatch.setattr(run_experiments, "REPO", "{REPO}")
    assert run_experiments.main(case["args"]) == case["returncode"]
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == (case["stdout"], case["stderr"])
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_the_bash_wrapper_passes_everything_on(tmp_path):
    """The wrapper runs scripts/run_experiments.py with $PYTHON: flags, environment, exit status and output."""
    for name in ("cpu_smoke", "err_nsamples", "err_argument"):
        case = next(c for c in CASES if c["name"] == name)
        env = clean_environment(PYTHON=sys.executable, **case["env"])
        result = subprocess.run(["bash", str(WRAPPER), *case["args"]], env=env, cwd=tmp_path, capture_output=True,
                                text=True, timeout=60)
        normalized = [text.replace(sys.executable, "{PYTHON}").replace(str(REPO), "{REPO}")
                      for text in (result.stdout, result.stderr)]
        assert [result.returncode, *normalized] == [case["returncode"], case["stdout"], case["stderr"]], name


def run_marked(out: Path, python: str) -> subprocess.CompletedProcess:
    env = clean_environment(PYTHON=python, OUT=str(out), **MARKED_RUN)
    return subprocess.run(["bash", str(WRAPPER)], env=env, cwd=out.parent, capture_output=True, text=True, timeout=120)


def marker_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if not line.startswith("seconds ")]


def test_same_markers_as_the_bash_runner(tmp_path):
    out = tmp_path / "new run"  # a space: the markers spell OUT '$OUT', the model name 'tiny\ model'
    result = run_marked(out, stand_in_python(tmp_path, sys.executable))
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in (out / "markers").iterdir())
    assert written == sorted(p.name for p in (FIXTURES / "markers").iterdir())
    for name in written:
        assert marker_lines(out / "markers" / name) == marker_lines(FIXTURES / "markers" / name), name
        assert re.fullmatch(r"seconds \d+", (out / "markers" / name).read_text().splitlines()[1])
    assert (out / "results.md").read_text() == "expected: dense pruned/wikitext2 exp1 pruned/wikitext2_seed1 baseline\n"


def test_a_run_the_bash_runner_finished_resumes_with_nothing_to_do(tmp_path):
    """The bash runner's markers, with the outputs they list: every step skipped, the summary too, nothing written."""
    out = tmp_path / "old run"
    shutil.copytree(FIXTURES / "markers", out / "markers")
    for marker in (out / "markers").iterdir():
        for output in read_marker(marker).outputs:
            path = out / output
            path.parent.mkdir(parents=True, exist_ok=True)
            name = path.name
            body = ({"tasks": [], "metrics": {}, "counts": {}, "settings": {}} if name == "eval.json" else
                    {"args": {}, "sparsity": {}} if name == "results.json" else
                    {"task": "squad", "model_name_or_path": "m", "data_args": {}} if name == "finetune_results.json"
                    else {"model_type": "llama"})
            path.write_text(json.dumps(body))
    for name in ("results.md", "results.png"):
        (out / name).write_text("summary")
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    result = run_marked(out, stand_in_python(tmp_path, sys.executable))
    assert result.returncode == 0, result.stderr
    steps = [marker.name.removesuffix(".done") for marker in (FIXTURES / "markers").iterdir()]
    assert sorted(re.findall(r"^skip (\S+): done$", result.stdout, re.M)) == sorted(steps)
    assert f"skip summary: {out}/results.md is newer than every step" in result.stdout
    assert result.stdout.endswith(f"finished: 0 step(s) run; table {out}/results.md, plot {out}/results.png\n")
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
