"""scripts/run_task_experiments.sh (the Python runner behind it) + scripts/summarize_experiments.py: the whole
matrix on a tiny random Llama.

Each of the matrix's 26 steps is a fresh Python process, and on this 2-core machine importing
torch + transformers + the Llama modeling code costs ~10 s of CPU per process. The matrix tests
therefore run the steps through `PYTHON=<warm python>`: a fork server that imports those once
and runs each `python script.py args` in a forked child (same argv, cwd, environment, stdio and
exit status; the runner itself runs there too). The failure test runs the real interpreter.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lib.experiments.rows import data_label, load_rows
from tests.helpers import REPO, SAMPLE_DATA

SCRIPT = REPO / "scripts" / "run_task_experiments.sh"
EXPERIMENTS = ("baseline", "exp1", "exp2", "exp3", "exp4", "exp5", "exp6")
CALIBRATION_TAGS = ("wikitext2", "squad", "gsm8k", "wikitext2-squad", "wikitext2-gsm8k")
STEPS = ("eval_dense prune_wikitext2 eval_pruned_wikitext2 ft_baseline eval_baseline ft_exp1 eval_exp1 prune_squad "
         "eval_pruned_squad ft_exp2 eval_exp2 ft_exp3 eval_exp3 prune_gsm8k eval_pruned_gsm8k ft_exp4 eval_exp4 "
         "prune_wikitext2-squad eval_pruned_wikitext2-squad ft_exp5 eval_exp5 prune_wikitext2-gsm8k "
         "eval_pruned_wikitext2-gsm8k ft_exp6 eval_exp6").split()  # experiment by experiment, each pruning once
TINY = {
    "NSAMPLES": "2", "SEQLEN": "64", "FT_MAX_STEPS": "2", "FT_SAVE_STEPS": "2", "FT_BATCH_SIZE": "2",
    "FT_GRAD_ACCUM": "1", "FT_MAX_LENGTH": "512", "FT_BLOCK_SIZE": "64", "FT_LOGGING_STEPS": "1",
    "EVAL_LIMITS": "2", "EVAL_WINDOWS": "2", "EVAL_MAX_NEW_TOKENS": "4", "EVAL_BATCH_SIZE": "2",
}
MATRIX_SECONDS = 180  # on an otherwise idle 2-core CPU

SERVER = r'''
import json, os, runpy, signal, socket, sys, traceback
sock_path, repo = sys.argv[1], sys.argv[2]
sys.path.insert(0, repo)
import torch, transformers  # the imports every step repeats
from transformers import AutoModelForCausalLM, AutoTokenizer, HfArgumentParser, Trainer, TrainingArguments
import transformers.models.llama.modeling_llama
import lib.data, lib.experiments.summary, lib.training.run, lib.models.loading, lib.pruning.driver, lib.eval.tasks, lib.eval.runner
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot


def child(conn, request, fds):
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the server's SIG_IGN would hide the exit status of a child's children
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    script = os.path.abspath(request["argv"][0])
    sys.argv = [script, *request["argv"][1:]]
    sys.path[0] = os.path.dirname(script)
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exit:
        if isinstance(exit.code, int):
            code = exit.code
        elif exit.code is not None:
            print(exit.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    conn.send(str(code).encode())
    os._exit(code)


signal.signal(signal.SIGCHLD, signal.SIG_IGN)
server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
server.bind(sock_path)
server.listen()
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
    if os.fork() == 0:
        server.close()
        child(conn, json.loads(message), fds)
    conn.close()
    for fd in fds:
        os.close(fd)
'''

CLIENT = r'''
import json, os, socket, sys
client = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
client.connect(SOCK)
request = {"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}
socket.send_fds(client, [json.dumps(request).encode()], [0, 1, 2])
code = client.recv(16)
sys.exit(int(code) if code else 1)
'''


def base_env(tmp: Path, python: str, **settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDA_", "PRESET"))}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", WANDA_CACHE=str(tmp / "cache"), PYTHON=python,
               DATA_DIR=str(SAMPLE_DATA), **TINY)
    env.update({k: str(v) for k, v in settings.items()})
    return env


def run_matrix(env: dict[str, str], *flags: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *flags], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def warm_python(tmp_path_factory):
    """An executable that runs `script.py args` in a fork of a process that has imported torch and transformers."""
    tmp = tmp_path_factory.mktemp("warm_python")
    sock = tmp / "sock"
    (tmp / "server.py").write_text(SERVER)
    client = tmp / "python"
    client.write_text(f"#!{sys.executable}\nSOCK = {str(sock)!r}\n{CLIENT}")
    client.chmod(0o755)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}  # tiny models: one thread, no spinning
    server = subprocess.Popen([sys.executable, "-u", str(tmp / "server.py"), str(sock), str(REPO)],
                              env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        yield str(client)
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def matrix(tiny_llama_dir, warm_python, tmp_path_factory):
    """The whole matrix once: (OUT, the environment it ran with, the finished process, wall seconds)."""
    tmp = tmp_path_factory.mktemp("matrix")
    env = base_env(tmp, warm_python, MODEL=tiny_llama_dir, OUT=tmp / "out")
    started = time.perf_counter()
    result = run_matrix(env)
    seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stdout + result.stderr
    return tmp / "out", env, result, seconds


def snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


@pytest.mark.slow
def test_matrix_writes_every_file_and_row(matrix):
    out, _, result, seconds = matrix
    print(f"tiny matrix: {seconds:.0f} s, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    oversubscribed = max(1.0, os.getloadavg()[0] / os.cpu_count())  # the machine is shared: scale, don't flake
    assert seconds < MATRIX_SECONDS * oversubscribed, f"the tiny matrix took {seconds:.0f} s"
    assert re.findall(r"^done (\S+)", result.stdout, re.M) == STEPS  # each step once, in order
    expected = ["dense/eval.json", "results.md", "results.png", "logs/summary.log"]
    for tag in CALIBRATION_TAGS:  # one pruned model per calibration data set, shared by its experiments
        expected += [f"pruned/{tag}/{name}" for name in ("results/results.json", "results/tier_map.safetensors",
                                                          "model/model.safetensors", "model/tier_map.safetensors",
                                                          "eval.json")]
    for exp in EXPERIMENTS:
        expected += [f"{exp}/{name}" for name in ("model/model.safetensors", "model/sparsity.json",
                                                   "model/finetune_results.json", "eval.json")]
    expected += [f"logs/{step}.log" for step in STEPS] + [f"markers/{step}.done" for step in STEPS]
    missing = [name for name in expected if not (out / name).is_file()]
    assert not missing
    assert sorted(p.name for p in (out / "pruned").iterdir()) == sorted(CALIBRATION_TAGS)
    assert not list(out.rglob("checkpoint-*")) and not list(out.glob("markers/*.started"))
    assert (out / "results.png").stat().st_size > 10_000

    table = (out / "results.md").read_text()
    labels = ["Dense (no pruning, no FT)", "Baseline"] + [f"Exp {i}" for i in range(1, 7)]
    labels += [f"Pruned {data_label(tag.replace('-', '+'))}, before FT" for tag in CALIBRATION_TAGS]
    first_table = table.split("\n## ")[0]
    for label in labels:
        assert f"| {label} |" in first_table, label
    assert "| Exp 5 | WikiText2 + SQuAD | SQuAD |" in table
    assert "| Baseline | WikiText2 | WikiText2 |" in table
    assert "| Exp 4 | GSM8K → GSM8K |" in table  # the change-after-fine-tuning table
    assert "Pruning: `--nsamples 2 --seqlen 64 --sparsity_ratios 0.35 0.45 0.2`" in table
    assert "--max_steps 2 --learning_rate 2e-5" in table and "| ft_exp6 |" in table
    for header in ("WikiText2 PPL", "SQuAD EM", "SQuAD F1", "GSM8K acc (strict)", "BoolQ acc", "SQuAD NLL", "GSM8K NLL"):
        assert header in table
    assert_interval_cells(table, "## Change after fine-tuning", 7)
    assert_interval_cells(table, "## Comparisons between experiments", 6)
    verdicts = re.findall(r"^- (.*): \*\*(supported|contradicted|not established \(the interval covers 0\))\*\*$",
                          table, re.M)
    # fine-tuning helps its task: one per fine-tuned row (7), plus the answerable SQuAD NLL of the 3 rows fine-tuned
    # on SQuAD; calibration: 4 + 2 + 2, plus the answerable SQuAD NLL before and after fine-tuning (2)
    assert len(verdicts) == 20

    rows = {row.name: row for row in load_rows(out)}
    assert len(rows) == 13
    assert rows["exp6"].calibration == "wikitext2+gsm8k" and rows["exp6"].finetuning == "gsm8k"
    assert rows["baseline"].finetuning == "wikitext2" and rows["exp2"].reference == "pruned/squad"
    for exp in EXPERIMENTS:  # fine-tuning kept every zero of the pruned model it started from
        row, reference = rows[exp], rows[rows[exp].reference]
        assert 0.3 < reference.sparsity < 0.5 and row.sparsity == pytest.approx(reference.sparsity, abs=1e-12)
        report = json.loads((out / exp / "eval.json").read_text())
        assert report["model"] == str(out / exp / "model") and set(report["metrics"]) == {"wikitext2", "squad", "gsm8k", "boolq"}


def assert_interval_cells(table: str, section: str, n_lines: int) -> None:
    """Every cell of a difference table is 'd [low, high]' with the mark exactly when the interval excludes 0."""
    lines = [line for line in table.split(section)[1].split("\n## ")[0].splitlines() if line.startswith("| ")][1:]
    assert len(lines) == n_lines
    cells = [cell.strip() for line in lines for cell in line.strip("|").split("|")[2:]]
    for cell in cells:
        match = re.fullmatch(r"([+-][\d.]+) \[([+-][\d.]+), ([+-][\d.]+)\]( \*)?", cell)
        assert match, cell
        low, high = float(match[2]), float(match[3])
        assert low <= high, cell
        if match[4]:  # marked: the interval excludes 0 (rounding may show an end as 0)
            assert low >= 0 or high <= 0, cell
        else:
            assert low <= 0 <= high, cell


@pytest.mark.slow
def test_rerun_does_no_work(matrix):
    out, env, _, _ = matrix
    before = snapshot(out)
    result = run_matrix(env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert re.findall(r"^skip (\S+): done$", result.stdout, re.M) == STEPS
    assert "skip summary" in result.stdout and not re.search(r"^(run|done|resume) ", result.stdout, re.M)
    assert "finished: 0 step(s) run" in result.stdout
    assert snapshot(out) == before  # no file written, touched or removed


@pytest.mark.slow
def test_a_lost_output_is_redone_and_a_row_without_data_is_named(matrix, tmp_path):
    from scripts.summarize_experiments import main as summarize

    source, env, _, _ = matrix
    out = tmp_path / "out"
    shutil.copytree(source, out)
    assert (out / "markers" / "eval_exp1.done").read_text().splitlines()[2:] == ["output exp1/eval.json"]
    (out / "exp1" / "eval.json").unlink()  # lost after its step finished: the marker alone must not skip it
    result = run_matrix({**env, "OUT": str(out)}, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"redo eval_exp1: its output {out}/exp1/eval.json is missing" in result.stdout
    assert re.findall(r"^done (\S+)", result.stdout, re.M) == ["eval_exp1"]
    assert "| Exp 1 | WikiText2 | SQuAD |" in (out / "results.md").read_text()

    (out / "exp1" / "eval.json").unlink()
    (out / "pruned" / "squad" / "eval.json").unlink()
    assert summarize(["--out", str(out), "--expect", "dense", "pruned/squad", "exp1", "exp2"]) == 0
    table = (out / "results.md").read_text()
    assert "| Exp 1 (**no data**) | WikiText2 | SQuAD | 4" in table  # sparsity from its fine-tune report
    assert "| Pruned SQuAD, before FT (**no data**) | SQuAD | none |" in table
    assert ("**No data** for Pruned SQuAD, before FT (no pruned/squad/eval.json), Exp 1 (no exp1/eval.json): "
            "rerun scripts/run_task_experiments.sh") in table


@pytest.mark.slow
def test_more_seeds_reuse_the_finished_run(matrix, tmp_path):
    """SEEDS="0 1" FT_SEEDS=0 on a finished single-seed OUT: only the seed-1 pruning and its evaluation run."""
    source, env, _, _ = matrix
    out = tmp_path / "out"
    shutil.copytree(source, out)
    result = run_matrix({**env, "OUT": str(out), "EXPS": "exp2", "SEEDS": "0 1", "FT_SEEDS": "0"}, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.findall(r"^done (\S+)", result.stdout, re.M) == ["prune_squad_seed1", "eval_pruned_squad_seed1"]
    assert (out / "pruned" / "squad_seed1" / "eval.json").is_file() and not (out / "exp2_seed1").exists()
    assert "--seed 1 " in (out / "markers" / "prune_squad_seed1.done").read_text()
    table = (out / "results.md").read_text()
    assert "| Seeds |" in table and "calibration seeds resampled per row" in table
    line = next(line for line in table.splitlines() if line.startswith("| Pruned SQuAD, before FT |"))
    assert "| 0 1 |" in line and " ± " in line  # mean ± sd over the two seeds
    assert re.search(r"^\| Exp 2 \| SQuAD \| SQuAD \| [\d.]+% \| 0 \| ", table, re.M)  # fine-tuned on seed 0 only


@pytest.mark.slow
def test_changed_settings_stop_instead_of_mixing(matrix):
    out, env, _, _ = matrix
    result = run_matrix({**env, "EVAL_LIMITS": "3"}, "--dry_run", timeout=60)
    assert result.returncode == 2
    assert "step eval_dense finished earlier with other settings" in result.stderr
    assert str(out / "markers" / "eval_dense.done") in result.stderr


@pytest.mark.slow
def test_interrupted_finetune_resumes_from_its_last_checkpoint(matrix, tmp_path):
    from safetensors.torch import load_file

    source, env, _, _ = matrix
    out = tmp_path / "out"
    shutil.copytree(source, out)  # a moved OUT: the markers spell it '$OUT' and still match
    env = {**env, "OUT": str(out), "EXPS": "exp2", "FT_SAVE_STEPS": "1", "FT_SAVE_TOTAL_LIMIT": "2"}
    markers, model_dir = out / "markers", out / "exp2" / "model"
    for step in ("ft_exp2", "eval_exp2"):
        (markers / f"{step}.done").unlink()
    result = run_matrix({**env, "KEEP_CHECKPOINTS": "1"}, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.findall(r"^done (\S+)", result.stdout, re.M) == ["ft_exp2", "eval_exp2"]
    straight = load_file(model_dir / "model.safetensors")

    # interrupted during step 2: checkpoint-1 complete, checkpoint-2 and the final model never written
    signature = (markers / "ft_exp2.done").read_text().splitlines()[0]
    (markers / "ft_exp2.done").unlink()
    (markers / "ft_exp2.started").write_text(signature + "\n")
    shutil.rmtree(model_dir / "checkpoint-2")
    (model_dir / "model.safetensors").unlink()
    result = run_matrix(env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"resume ft_exp2 from the latest complete checkpoint in {model_dir}" in result.stdout
    log = (out / "logs" / "ft_exp2.log").read_text()
    assert "--resume_from_checkpoint latest\n" in log and "global step 1" in log
    assert f"resuming from {model_dir}/checkpoint-1, the latest complete checkpoint" in log
    assert re.findall(r"^done (\S+)", result.stdout, re.M) == ["ft_exp2"]  # eval_exp2 is still done
    assert json.loads((model_dir / "trainer_state.json").read_text())["global_step"] == 2
    resumed = load_file(model_dir / "model.safetensors")
    assert all(torch.equal(resumed[name], straight[name]) for name in straight)  # as if never interrupted
    assert not list(model_dir.glob("checkpoint-*")) and not (markers / "ft_exp2.started").exists()

    # a checkpoint of an interrupted run with other settings is not resumed silently
    (markers / "ft_exp2.done").unlink()
    (markers / "ft_exp2.started").write_text(signature + "\n")
    (model_dir / "checkpoint-1").mkdir()
    (model_dir / "checkpoint-1" / "trainer_state.json").write_text("{}")
    result = run_matrix({**env, "FT_LR": "1e-3"}, "--dry_run", timeout=60)
    assert result.returncode == 2 and "interrupted ft_exp2 with other settings" in result.stderr


def test_dry_run_shares_pruned_models(tmp_path):
    env = base_env(tmp_path, sys.executable, OUT=tmp_path / "out", EXPS="exp1 exp3 baseline exp5")
    result = run_matrix(env, "--dry_run", timeout=60)
    assert result.returncode == 0, result.stderr
    steps = re.findall(r"^would run (\S+):", result.stdout, re.M)
    assert steps == ["eval_dense", "prune_wikitext2", "eval_pruned_wikitext2", "ft_exp1", "eval_exp1", "ft_exp3",
                     "eval_exp3", "ft_baseline", "eval_baseline", "prune_wikitext2-squad",
                     "eval_pruned_wikitext2-squad", "ft_exp5", "eval_exp5"]
    assert "--calibration_dataset wikitext2+squad" in result.stdout and "finetune_lm.py" in result.stdout
    assert not (tmp_path / "out").exists()
    bad = run_matrix({**env, "EXPS": "exp1 exp9"}, "--dry_run", timeout=60)
    assert bad.returncode == 2 and "unknown experiment 'exp9'" in bad.stderr and "baseline exp1" in bad.stderr


def test_presets_and_flags(tmp_path):
    env = base_env(tmp_path, sys.executable, OUT=tmp_path / "out")
    for key in TINY:
        env.pop(key)
    paper = run_matrix(env, "--preset", "paper", "--exps", "exp2", "--dry_run", timeout=60).stdout
    assert "--model meta-llama/Llama-2-7b-hf" in paper and "--nsamples 128 --seqlen 2048" in paper
    assert "--num_train_epochs 3 --max_steps -1 --learning_rate 2e-5" in paper and "--bf16" in paper
    assert "--limit" not in paper and "--eval_windows" not in paper  # full evaluation
    smoke = run_matrix({**env, "NSAMPLES": "4"}, "--preset", "cpu-smoke", "--seqlen", "128", "--dry_run",
                       timeout=60).stdout
    assert "--model smollm2-135m" in smoke and "--nsamples 4 --seqlen 128" in smoke  # env and flag beat the preset
    assert smoke.count("would run prune_") == 5 and smoke.count("would run ft_") == 7
    cpu = run_matrix(env, "--preset", "cpu", "--dry_run", timeout=60).stdout
    assert "--nsamples 32 --seqlen 512" in cpu and "--seqlen 512 --eval_windows 64" in cpu
    assert "--limit squad=200 gsm8k=100 boolq=500 --nll_limit squad=500 gsm8k=300" in cpu
    assert re.findall(r"^would run (\S+):", cpu, re.M) == [  # exp1 and exp2, 3 pruned seeds, fine-tunes on seed 0
        "eval_dense", "prune_wikitext2", "eval_pruned_wikitext2", "ft_exp1", "eval_exp1", "prune_wikitext2_seed1",
        "eval_pruned_wikitext2_seed1", "prune_wikitext2_seed2", "eval_pruned_wikitext2_seed2", "prune_squad",
        "eval_pruned_squad", "ft_exp2", "eval_exp2", "prune_squad_seed1", "eval_pruned_squad_seed1", "prune_squad_seed2",
        "eval_pruned_squad_seed2"]
    assert re.search(r"would run prune_squad_seed1: .* --seed 1 .*--save \S+/pruned/squad_seed1/results", cpu)
    everything = run_matrix(env, "--preset", "cpu", "--exps", " ".join(EXPERIMENTS), "--dry_run", timeout=60).stdout
    assert everything.count("would run prune_") == 15 and everything.count("would run ft_") == 7  # 5 data sets x 3 seeds
    all_seeds = run_matrix({**env, "FT_SEEDS": "0 1 2"}, "--preset", "cpu", "--exps", "exp1", "--dry_run", timeout=60).stdout
    assert re.findall(r"^would run (ft_\S+):", all_seeds, re.M) == ["ft_exp1", "ft_exp1_seed1", "ft_exp1_seed2"]
    assert re.search(r"would run ft_exp1_seed2: .*pruned/wikitext2_seed2/model .*--output_dir \S+/exp1_seed2/model .*--seed 2 ",
                     all_seeds)
    bad = run_matrix({**env, "SEEDS": "0 1", "FT_SEEDS": "2"}, "--dry_run", timeout=60)
    assert bad.returncode == 2 and "FT_SEEDS seed 2 is not in SEEDS (0 1)" in bad.stderr


@pytest.mark.slow
def test_failed_step_stops_and_names_its_log(tmp_path):
    """The real interpreter: a model directory without config.json fails the first step."""
    bad_model = tmp_path / "not_a_model"
    bad_model.mkdir()
    env = base_env(tmp_path, sys.executable, MODEL=bad_model, OUT=tmp_path / "out")
    result = run_matrix(env, timeout=300)
    log = tmp_path / "out" / "logs" / "eval_dense.log"
    assert result.returncode != 0
    assert f"error: step eval_dense failed (exit 2); see its log: {log}" in result.stderr
    assert "has no config.json" in log.read_text() and "has no config.json" in result.stderr
    assert not (tmp_path / "out" / "markers" / "eval_dense.done").exists()
    assert sorted(p.name for p in (tmp_path / "out" / "logs").iterdir()) == ["eval_dense.log"]  # nothing after it


