"""lib/experiments/runner.py with a stand-in interpreter (tests/experiments/stand_in.py): markers and resuming,
a changed command, lost and damaged outputs, fine-tune checkpoints, failures and interrupts, the summary step."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lib.experiments.runner import step_environment
from lib.experiments.settings import resolve
from tests.experiments.stand_in import clean_environment, complete_checkpoint, stand_in_python
from tests.helpers import REPO

RUNNER = REPO / "scripts" / "run_experiments.py"
STEPS = ["eval_dense", "prune_wikitext2", "eval_pruned_wikitext2", "ft_exp1", "eval_exp1"]


@pytest.fixture
def run(tmp_path):
    """run(*flags, **env) -> the finished runner on OUT=tmp/out, EXPS=exp1, with the stand-in interpreter."""
    python = stand_in_python(tmp_path, sys.executable)

    def run(*flags: str, **env: str) -> subprocess.CompletedProcess:
        settings = {"OUT": str(tmp_path / "out"), "EXPS": "exp1", "MODEL": "tiny", "PYTHON": python,
                    "STAND_IN_ARGV": str(tmp_path / "argv.jsonl"), **env}
        return subprocess.run([sys.executable, str(RUNNER), *flags], env=clean_environment(**settings), cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)

    return run


def done(result: subprocess.CompletedProcess) -> list[str]:
    return re.findall(r"^done (\S+) \(\d+ s\)$", result.stdout, re.M)


def step_argv(tmp_path: Path, script: str) -> list[list[str]]:
    lines = (tmp_path / "argv.jsonl").read_text().splitlines()
    return [argv for argv in map(json.loads, lines) if argv[0].endswith(script)]


def test_a_run_then_a_rerun_that_does_nothing(run, tmp_path):
    first = run()
    assert first.returncode == 0, first.stderr
    assert done(first) == STEPS and first.stderr == ""
    out = tmp_path / "out"
    assert (out / "markers" / "eval_dense.done").read_text().splitlines()[2:] == ["output dense/eval.json"]
    assert (out / "logs" / "ft_exp1.log").read_text().startswith("### ")
    assert (out / "results.md").read_text() == "expected: dense pruned/wikitext2 exp1\n"
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    again = run()
    assert re.findall(r"^skip (\S+): done$", again.stdout, re.M) == STEPS and done(again) == []
    assert "skip summary" in again.stdout and "finished: 0 step(s) run" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    os.utime(out / "markers" / "eval_exp1.done")  # a step finished after the summary: the summary runs again
    assert "run  summary" in run().stdout


@pytest.mark.parametrize("setting, value, step", [("EVAL_LIMITS", "3", "eval_dense"), ("FT_LR", "1e-3", "ft_exp1")])
def test_a_changed_command_stops_before_any_step(run, tmp_path, setting, value, step):
    assert run().returncode == 0
    logs = {p.name: p.read_text() for p in (tmp_path / "out" / "logs").iterdir()}
    for flags in ((), ("--dry_run",)):
        result = run(*flags, **{setting: value})
        marker = tmp_path / "out" / "markers" / f"{step}.done"
        assert result.returncode == 2
        assert result.stderr == (f"error: step {step} finished earlier with other settings ({marker}). Use another OUT, "
                                 "or delete that marker and the markers of the steps after it to redo them\n")
        assert not re.search(r"^(run|done|skip|would run) ", result.stdout, re.M)  # stopped before the first step
    assert {p.name: p.read_text() for p in (tmp_path / "out" / "logs").iterdir()} == logs


def test_a_lost_or_damaged_output_reruns_its_step_only(run, tmp_path):
    assert run().returncode == 0
    out = tmp_path / "out"
    (out / "exp1" / "model" / "finetune_results.json").unlink()
    config = out / "pruned" / "wikitext2" / "model" / "config.json"
    config.write_text('{"model_type": ')
    result = run()
    assert result.returncode == 0, result.stderr
    assert f"redo ft_exp1: its output {out}/exp1/model/finetune_results.json is missing" in result.stdout
    assert (f"redo prune_wikitext2: {config}: it is not valid JSON (Expecting value: line 1 column 16); kept it as "
            f"{config}.damaged-<time> and running the step again") in result.stdout
    assert done(result) == ["prune_wikitext2", "ft_exp1"]  # their evaluations are still done
    kept, = config.parent.glob("config.json.damaged-*")
    assert kept.read_text() == '{"model_type": ' and json.loads(config.read_text()) == {"model_type": "llama"}


@pytest.mark.parametrize("damage, problem", [
    ('{"tasks": ["wikitext2"], "metrics": {}, "counts": {}, "settings": {}}', "has no metrics for wikitext2"),
    ('{"tasks": ["wikitext2"], "metrics": {"wikitext2": {"ppl": 9.0}}', "is not valid JSON (Expecting ',' delimiter: "
                                                                       "line 1 column 64)"),  # cut off
    ('{"tasks": [], "metrics": {}}', "lacks counts, settings"),
])
def test_a_damaged_eval_json_is_not_done(run, tmp_path, damage, problem):
    """A marker with its eval.json present but damaged: the evaluation runs again (a dry run says so, moves nothing)."""
    assert run().returncode == 0
    report = tmp_path / "out" / "dense" / "eval.json"
    report.write_text(damage)
    dry = run("--dry_run")
    assert dry.returncode == 0, dry.stderr
    assert f"redo eval_dense: {report}: it {problem}\n" in dry.stdout
    assert re.findall(r"^would run (\S+):", dry.stdout, re.M) == ["eval_dense"] and report.read_text() == damage
    result = run()
    assert result.returncode == 0, result.stderr
    assert done(result) == ["eval_dense"]
    kept, = report.parent.glob("eval.json.damaged-*")
    assert kept.read_text() == damage and json.loads(report.read_text())["metrics"]["wikitext2"]


def interrupted_finetune(run, tmp_path) -> tuple[Path, Path, str]:
    """A finished run whose ft_exp1 was interrupted: its .started marker, no .done; returns (model dir, markers, sig)."""
    assert run().returncode == 0
    markers, model = tmp_path / "out" / "markers", tmp_path / "out" / "exp1" / "model"
    signature = (markers / "ft_exp1.done").read_text().splitlines()[0]
    (markers / "ft_exp1.done").unlink()
    (markers / "ft_exp1.started").write_text(signature + "\n")
    (tmp_path / "argv.jsonl").unlink()
    return model, markers, signature


def test_an_interrupted_finetune_resumes_from_its_latest_complete_checkpoint(run, tmp_path):
    model, markers, signature = interrupted_finetune(run, tmp_path)
    complete_checkpoint(model / "checkpoint-4", 4)
    complete_checkpoint(model / "checkpoint-8", 8)
    (model / "checkpoint-12").mkdir()  # cut off while it was written
    (model / "checkpoint-12" / "trainer_state.json").write_text('{"global_step": 12}')
    result = run()
    assert result.returncode == 0, result.stderr
    assert f"resume ft_exp1 from the latest complete checkpoint in {model}" in result.stdout
    assert "skipping the incomplete checkpoint" in result.stderr and "checkpoint-12" in result.stderr
    argv, = step_argv(tmp_path, "finetune_squad.py")
    assert argv[-2:] == ["--resume_from_checkpoint", "latest"]
    assert done(result) == ["ft_exp1"]  # eval_exp1 is still done
    assert (markers / "ft_exp1.done").read_text().splitlines()[0] == signature  # the command without the resume
    assert not (markers / "ft_exp1.started").exists() and not list(model.glob("checkpoint-*"))  # KEEP_CHECKPOINTS=0


def test_without_a_complete_checkpoint_the_finetune_starts_over(run, tmp_path):
    """Unlike the bash runner's test (a trainer_state.json), an incomplete checkpoint is no reason to resume."""
    model, _, _ = interrupted_finetune(run, tmp_path)
    (model / "checkpoint-2").mkdir()
    (model / "checkpoint-2" / "trainer_state.json").write_text('{"global_step": 2}')
    result = run(KEEP_CHECKPOINTS="1")
    assert result.returncode == 0 and "resume " not in result.stdout
    argv, = step_argv(tmp_path, "finetune_squad.py")
    assert "--resume_from_checkpoint" not in argv
    assert (model / "checkpoint-2").is_dir()  # KEEP_CHECKPOINTS=1


def test_a_checkpoint_of_other_settings_is_never_resumed(run, tmp_path):
    model, markers, _ = interrupted_finetune(run, tmp_path)
    complete_checkpoint(model / "checkpoint-4", 4)
    for flags in (("--dry_run",), ()):
        result = run(*flags, FT_LR="1e-3")
        assert result.returncode == 2
        assert result.stderr == (f"error: {model}/checkpoint-4 comes from an interrupted ft_exp1 with other settings "
                                 f"({markers}/ft_exp1.started); delete {model} to start it again\n")
        assert not re.search(r"^(run|would run) ", result.stdout, re.M)


def test_a_failed_step_stops_the_run_with_its_status_and_log(run, tmp_path):
    result = run(STAND_IN_FAIL="main_block_three_tier.py:3")
    log = tmp_path / "out" / "logs" / "prune_wikitext2.log"
    assert result.returncode == 3
    lines = result.stderr.splitlines()
    assert lines[0] == f"error: step prune_wikitext2 failed (exit 3); see its log: {log}"
    assert lines[1].startswith("  | ### ") and lines[2:] == ["  | stand-in: failing on purpose"]
    assert done(result) == ["eval_dense"] and not (tmp_path / "out" / "markers" / "prune_wikitext2.done").exists()
    assert sorted(p.name for p in log.parent.iterdir()) == ["eval_dense.log", "prune_wikitext2.log"]


def test_sigterm_ends_the_step_and_the_run_in_one_line(tmp_path):
    python = stand_in_python(tmp_path, sys.executable)
    env = clean_environment(OUT=str(tmp_path / "out"), EXPS="exp1", MODEL="tiny", PYTHON=python,
                            STAND_IN_SLEEP="eval_tasks.py")
    runner = subprocess.Popen([sys.executable, str(RUNNER)], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    log = tmp_path / "out" / "logs" / "eval_dense.log"
    for line in runner.stdout:
        if line.startswith("run  eval_dense"):
            break
    deadline = time.monotonic() + 60
    while "stand-in: waiting" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.05)
    runner.send_signal(signal.SIGTERM)
    stdout, stderr = runner.communicate(timeout=60)
    assert runner.returncode == 128 + signal.SIGTERM
    assert stderr == (f"error: interrupted by SIGTERM during step eval_dense (its log: {log}); rerun the same command "
                      "to resume\n")
    markers = tmp_path / "out" / "markers"
    assert [p.name for p in markers.iterdir()] == ["eval_dense.started"]


def test_steps_get_the_preset_environment(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")
    env = step_environment(resolve({"PRESET": "cpu"}, {}))
    assert (env["OMP_WAIT_POLICY"], env["PYTHONUNBUFFERED"], env["TOKENIZERS_PARALLELISM"]) == ("PASSIVE", "1", "false")
    assert "OMP_WAIT_POLICY" not in step_environment(resolve({"PRESET": "paper"}, {}))
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's own value wins over the preset's
    assert step_environment(resolve({"PRESET": "cpu-smoke"}, {}))["OMP_WAIT_POLICY"] == "ACTIVE"


def test_an_out_that_cannot_be_written_is_one_error_line(run, tmp_path):
    (tmp_path / "out").write_text("a file, not a directory")
    result = run()
    assert result.returncode == 2
    assert result.stderr == (f"error: {tmp_path}/out/markers/ft_exp1.started: Not a directory; check OUT "
                             f"({tmp_path}/out)\n")
    assert (tmp_path / "out").read_text() == "a file, not a directory"
