"""The Python runner against what the bash runner it replaced printed and wrote (fixtures/bash_runner, captured on
main before the change): every flag and environment variable it read, with the same precedence (flag >
environment > preset > default), the same --dry_run output and errors for 37 settings, the same markers, and an OUT
the bash runner finished resumes with every step skipped."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lib.experiments.design import PRESETS
from lib.experiments.markers import read_marker
from lib.experiments.settings import FIELDS, FLAGS, resolve
from scripts import run_experiments
from tests.experiments.stand_in import clean_environment, stand_in_python
from tests.helpers import REPO

FIXTURES = Path(__file__).parent / "fixtures" / "bash_runner"
CASES = json.loads((FIXTURES / "dry_runs.json").read_text())
INTERFACE = json.loads((FIXTURES / "interface.json").read_text())  # the bash runner's flags and variables
# two valid values of every variable (the first neither its default nor a preset's; the second, for a flag,
# not the first either; FT_SEEDS with SEEDS="0 1 2")
SAMPLES = {"PRESET": None, "DRY_RUN": ("1", "yes"), "PYTHON": ("/a/python", "/b/python"), "MODEL": ("a/m", "b/m"),
           "DATA_DIR": ("/a data", "/b"), "OUT": ("a out", "b"), "EXPS": ("exp3", "baseline exp6"),
           "SEED": ("4", "5"), "SEEDS": ("0 1", "2 0"), "FT_SEEDS": ("1", "2 1"), "SPARSITY_RATIOS": ("0.5 0.3 0.2",
           "0.1 0.8 0.1"), "NSAMPLES": ("3", "007"), "SEQLEN": ("96", "99"), "PRUNE_ARGS": ("--a", "--b 1"),
           "FT_LAUNCHER": ("torchrun", "accelerate launch"), "FT_EPOCHS": ("1.5", "2e0"), "FT_MAX_STEPS": ("7", "0"),
           "FT_LR": ("3e-4", ".001"), "FT_BATCH_SIZE": ("2", "3"), "FT_GRAD_ACCUM": ("2", "3"),
           "FT_MAX_LENGTH": ("64", "65"), "FT_BLOCK_SIZE": ("64", "65"), "FT_MAX_TRAIN_SAMPLES": ("5", "6"),
           "FT_EVAL_SAMPLES": ("5", "6"), "FT_SAVE_STEPS": ("3", "4"), "FT_SAVE_TOTAL_LIMIT": ("2", "3"),
           "FT_LOGGING_STEPS": ("3", "4"), "FT_BF16": ("0", "1"), "FT_ARGS": ("--a", "--b"),
           "KEEP_CHECKPOINTS": ("1", "0"), "EVAL_TASKS": ("squad", "boolq"), "EVAL_LIMITS": ("4", "squad=5"),
           "EVAL_NLL_LIMITS": ("4", "gsm8k=5"), "EVAL_WINDOWS": ("3", "4"), "EVAL_SEQLEN": ("33", "34"),
           "EVAL_BATCH_SIZE": ("3", "5"), "EVAL_MAX_NEW_TOKENS": ("4", "squad=5"), "EVAL_DTYPE": ("float32", "float16"),
           "EVAL_ARGS": ("--a", "--b")}
CONTEXT = {"FT_SEEDS": {"SEEDS": "0 1 2"}}  # what a sample needs beside it
WRAPPER = REPO / "scripts" / "run_task_experiments.sh"
# the settings of the bash run whose markers fixtures/bash_runner/markers holds
MARKED_RUN = {"MODEL": "tiny model", "DATA_DIR": "sample_data", "EXPS": "exp1 baseline", "SEEDS": "0 1", "FT_SEEDS": "0",
              "PRUNE_ARGS": "--prune_method wanda", "FT_ARGS": "--warmup_ratio 0.1", "EVAL_ARGS": "--num_fewshot 0",
              "EVAL_LIMITS": "squad=2 gsm8k=2 boolq=2", "NSAMPLES": "2", "SEQLEN": "64", "FT_MAX_STEPS": "2"}


def test_every_flag_and_variable_of_the_bash_runner_is_kept():
    """The same flag spellings setting the same variables; every variable a setting (OMP_WAIT_POLICY: a preset's
    export to the steps); -h and --help."""
    assert FLAGS == INTERFACE["flags"]
    exported = {name for preset in PRESETS.values() for name in preset.environment}
    assert sorted(set(FIELDS) | exported) == INTERFACE["variables"]
    assert set(SAMPLES) == set(FIELDS)
    for option in INTERFACE["help"]:
        with pytest.raises(SystemExit) as exited:
            run_experiments.build_parser().parse_args([option])
        assert exited.value.code == 0


def values(environ: dict, argv: list[str]) -> dict:
    """Every setting after the CLI's parser read `argv` and resolve() the environment, by variable."""
    flags = {env: value for env, value in vars(run_experiments.build_parser().parse_args(argv)).items()
             if value is not None}
    settings = resolve(environ, flags)
    return {env: getattr(settings, f.name) for env, f in FIELDS.items()}


@pytest.mark.parametrize("flag", INTERFACE["flags"])
def test_a_flag_beats_its_variable_and_every_preset(flag):
    env = INTERFACE["flags"][flag]
    if env in ("PRESET", "DRY_RUN"):
        assert values({"PRESET": "cpu"}, ["--preset", "paper"])["PRESET"] == "paper"
        assert values({"DRY_RUN": ""}, ["--dry_run"])["DRY_RUN"] == "1"
        return
    environment, given = SAMPLES[env]
    for preset in ("", *PRESETS):
        context = {"PRESET": preset, **CONTEXT.get(env, {})}
        assert values({**context, env: environment}, [flag, given])[env] == given, (flag, preset)


@pytest.mark.parametrize("env", [env for env in SAMPLES if env != "PRESET"])
def test_a_variable_beats_every_preset_which_beats_the_default(env):
    sample = SAMPLES[env][0]
    defaults = values({}, [])
    for preset in ("", *PRESETS):
        context = {"PRESET": preset, **CONTEXT.get(env, {})}
        assert values({**context, env: sample}, [])[env] == sample, (env, preset)
        with_preset = values(context, [])[env]
        if env in PRESETS.get(preset, PRESETS["paper"]).values and preset:
            assert with_preset == PRESETS[preset].values[env], (env, preset)
        elif FIELDS[env].default.startswith("$"):  # a derived default follows its source
            source = FIELDS[env].default[1:]
            assert with_preset == values(context, [])[source], (env, preset)
        else:
            assert with_preset == defaults[env] == FIELDS[env].default, (env, preset)


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
