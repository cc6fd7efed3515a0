"""Issue 13: outputs never delete what was there, checks run before the expensive part, degenerate
settings are refused, and the fine-tune CLIs end in one-line errors (tiny models, tmp dirs)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

import main_block_three_tier as cli
from lib.core.markers import MARKER_FILE, MARKER_KEY
from lib.core.writes import atomic_dir
from tests.helpers import BASE, REPO, SAMPLE_DATA, finetune_argv, finetune_value_is_refused, listing, one_line_error
from scripts import eval_tasks


# ---------------------------------------------------------------- the output rule (data loss)


@pytest.mark.parametrize("existing", ["foreign_dir", "file", "parent_of_results"])
def test_save_refuses_what_it_did_not_write(tiny_llama_dir, tmp_path, capsys, no_model_load, existing):
    target = tmp_path / "out"
    if existing == "file":
        target.write_text("my notes")
    else:
        (target / "exp_old").mkdir(parents=True)
        (target / "exp_old" / "results.json").write_text("{}")
        if existing == "parent_of_results":  # `--save out` over a folder of earlier results
            (target / "exp_old" / MARKER_FILE).write_text("{}")
        else:
            (target / "paper.tex").write_text("draft")
    before = listing(tmp_path)
    for flag in ("--save", "--save_model"):
        err = one_line_error(capsys, cli.main(["--model", str(tiny_llama_dir), *BASE, flag, str(target)]))
        assert f"{flag} {target}" in err
        if existing == "file":  # a directory output never replaces a file, not even with --overwrite
            assert "is an existing file" in err and "--overwrite" not in err
            err = one_line_error(capsys, cli.main(["--model", str(tiny_llama_dir), *BASE, flag, str(target),
                                                   "--overwrite"]))
            assert "is an existing file" in err
        else:
            assert "--overwrite" in err
        assert listing(tmp_path) == before  # nothing gone, no temporary, no lock file


def test_save_replaces_its_own_earlier_output_and_overwrite_writes_into(tiny_llama_dir, tmp_path):
    target = tmp_path / "r"
    assert cli.main(["--model", str(tiny_llama_dir), *BASE, "--save", str(target)]) == 0
    marker = json.loads((target / MARKER_FILE).read_text())
    assert marker["kind"] == "results" and marker["tool"] == "wanda_hybrid"
    assert sorted(marker["entries"]) == sorted(p.name for p in target.iterdir() if p.name != MARKER_FILE)
    first = (target / "results.json").read_bytes()
    (target / "notes.txt").write_text("added by the user")  # inside our own output: kept (issue 23)
    assert cli.main(["--model", str(tiny_llama_dir), *BASE, "--save", str(target)]) == 0
    assert (target / "notes.txt").read_text() == "added by the user"
    assert (target / "results.json").read_bytes() != first  # replaced (its timings differ)
    assert "notes.txt" not in json.loads((target / MARKER_FILE).read_text())["entries"]

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x.txt").write_text("x")
    assert cli.main(["--model", str(tiny_llama_dir), *BASE, "--save", str(foreign), "--overwrite"]) == 0
    assert (foreign / "results.json").is_file() and (foreign / "x.txt").read_text() == "x"
    assert not (foreign / MARKER_FILE).exists()  # never marked: it held foreign files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign", "r"]


@pytest.mark.parametrize("layout", ["same", "results_in_model", "model_in_results", "into_input_model"])
def test_overlapping_outputs_and_input_are_refused(tiny_llama_dir, tmp_path, capsys, no_model_load, layout):
    model = tmp_path / "input_model"
    shutil.copytree(tiny_llama_dir, model)
    save, save_model = {
        "same": (tmp_path / "x", tmp_path / "x"),
        "results_in_model": (tmp_path / "m" / "results", tmp_path / "m"),
        "model_in_results": (tmp_path / "r", tmp_path / "r" / "model"),
        "into_input_model": (model / "results", tmp_path / "m"),
    }[layout]
    before = listing(tmp_path)
    err = one_line_error(capsys, cli.main(["--model", str(model), *BASE, "--save", str(save),
                                           "--save_model", str(save_model)]))
    assert "use separate paths" in err
    assert listing(tmp_path) == before


def test_finetune_output_dir_that_is_the_model_or_a_file_is_refused(tiny_llama_dir, tmp_path, capsys):
    from lib.training.args import parse_args

    model = tmp_path / "pruned"
    shutil.copytree(tiny_llama_dir, model)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "paper.tex").write_text("draft")
    before = listing(tmp_path)
    refusals = {model: "is the same path as --model_name_or_path", model / "ft": "is inside",
                a_file: "is a file; name a directory",
                foreign: "did not write (e.g. 'paper.tex'); choose another path, or pass --overwrite_output_dir"}
    for output_dir, message in refusals.items():
        with pytest.raises(SystemExit) as exit_info:
            parse_args("squad", ["--model_name_or_path", str(model), "--output_dir", str(output_dir)])
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and message in err and "\n" not in err, err
    assert listing(tmp_path) == before
    parse_args("squad", ["--model_name_or_path", str(model), "--output_dir", str(foreign), "--overwrite_output_dir"])


# ---------------------------------------------------------------- checks before the expensive part


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--save", "/proc/wanda_x"], "cannot write --save /proc/wanda_x"),
        (["--save_model", "/proc/wanda_x"], "cannot write --save_model /proc/wanda_x"),
        (["--seqlen", "1"], "--seqlen must be at least 2"),
        (["--topk_per_block", "300"], "--topk_per_block 300 is not in [0, 256] (block_size 16 squared)"),
    ],
)
def test_errors_come_before_loading_the_model(tiny_llama_dir, tmp_path, capsys, no_model_load, extra, message):
    err = one_line_error(capsys, cli.main(["--model", str(tiny_llama_dir), *BASE, "--save", str(tmp_path / "r"),
                                           *extra]))
    assert message in err
    assert list(tmp_path.iterdir()) == []


def test_unwritable_model_output_fails_before_any_result_is_written(tiny_llama_dir, tmp_path, capsys, no_model_load):
    a_file = tmp_path / "file"
    a_file.write_text("")
    err = one_line_error(capsys, cli.main(["--model", str(tiny_llama_dir), *BASE, "--save", str(tmp_path / "r"),
                                           "--save_model", str(a_file / "model")]))
    assert "cannot write --save_model" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # no results dir, no lock, no parent made


def test_eval_output_that_is_a_directory_fails_before_evaluating(tiny_llama_dir, tmp_path, capsys, no_model_load):
    (tmp_path / "eval").mkdir()
    code = eval_tasks.main(["--model", str(tiny_llama_dir), "--tasks", "wikitext2", "--data_dir", str(SAMPLE_DATA),
                            "--output", str(tmp_path / "eval")])
    err = one_line_error(capsys, code)
    assert f"--output {tmp_path / 'eval'} is a directory" in err
    (tmp_path / "report.json").write_text('{"mine": 1}')
    code = eval_tasks.main(["--model", str(tiny_llama_dir), "--tasks", "wikitext2", "--output", str(tmp_path / "report.json")])
    assert "did not write" in one_line_error(capsys, code)
    assert (tmp_path / "report.json").read_text() == '{"mine": 1}'


def test_eval_report_is_marked_and_replaced_on_rerun(tiny_llama_dir, tmp_path):
    args = ["--model", str(tiny_llama_dir), "--tasks", "wikitext2", "--data_dir", str(SAMPLE_DATA), "--seqlen", "32",
            "--eval_windows", "1", "--device", "cpu", "--output", str(tmp_path / "eval.json")]
    assert eval_tasks.main(args) == 0
    assert json.loads((tmp_path / "eval.json").read_text())[MARKER_KEY]["kind"] == "eval_report"
    assert eval_tasks.main(args) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["eval.json"]


def test_nonexistent_model_path_says_so(tmp_path, capsys):
    for model in ("/nonexistent/model", "./no_such_model", str(tmp_path / "missing")):
        err = one_line_error(capsys, cli.main(["--model", model, *BASE]))
        assert f"model path {model} does not exist" in err


def test_block_larger_than_a_matrix_is_refused_before_calibration(tiny_llama_dir, tmp_path, capsys, monkeypatch):
    def no_data(*args, **kwargs):
        raise AssertionError("calibration data was loaded before the error")

    monkeypatch.setattr(cli, "get_loaders", no_data)
    err = one_line_error(capsys, cli.main(["--model", str(tiny_llama_dir), *BASE, "--block_size", "1000",
                                           "--save", str(tmp_path / "r")]))
    # the tiny Llama's k_proj is 32 x 64 (2 KV heads of 16)
    assert "--block_size 1000 exceeds the smallest side of model.layers.0.self_attn.k_proj (32 x 64)" in err
    assert "at most 32" in err and list(tmp_path.iterdir()) == []


def test_unpacked_calibration_never_repeats_examples(tiny_llama_dir, capsys):
    # sample_data/gsm8k/train.jsonl holds 25 examples
    err = one_line_error(capsys, cli.main(["--model", str(tiny_llama_dir), *BASE, "--calibration_dataset", "gsm8k",
                                           "--calibration_packing", "none", "--nsamples", "26"]))
    assert "at most 25" in err and "--calibration_packing concat" in err
    assert cli.main(["--model", str(tiny_llama_dir), *BASE, "--calibration_dataset", "gsm8k",
                     "--calibration_packing", "none", "--nsamples", "25"]) == 0


# ---------------------------------------------------------------- concurrency and stale temporaries


def test_cli_refuses_a_path_another_process_is_writing(tiny_llama_dir, tmp_path):
    target = tmp_path / "r"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            sys.path.insert(0, {str(REPO)!r})
            from lib.core.writes import atomic_dir
            with atomic_dir({str(target)!r}, "results") as out:
                print("holding", flush=True)
                time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        started = time.perf_counter()
        result = subprocess.run([sys.executable, str(REPO / "main_block_three_tier.py"), "--model", str(tiny_llama_dir),
                                 *BASE, "--save", str(target)], capture_output=True, text=True, timeout=120)
        assert result.returncode == 2
        assert result.stderr.strip() == (f"error: {target} is being written by another process (pid {holder.pid}); "
                                         "wait for it to finish or choose another path")
        assert time.perf_counter() - started < 60
    finally:
        holder.kill()
        holder.wait()
    # the holder died mid-write (kill -9): its temporaries are stale, and the next writer removes them
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".r.partial-")] == [f".r.partial-{holder.pid}"]
    with atomic_dir(target, "results") as out:
        (out / "a.txt").write_text("a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


# ---------------------------------------------------------------- fine-tune CLIs


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--per_device_train_batch_size", "0", "--per_device_train_batch_size must be at least 1, got 0"),
        ("--learning_rate", "-1", "--learning_rate must be >= 0, got -1.0"),
        ("--gradient_accumulation_steps", "0", "--gradient_accumulation_steps must be at least 1"),
    ],
)
def test_finetune_bad_training_values_are_one_line(tmp_path, capsys, flag, value, message):
    finetune_value_is_refused(tmp_path, capsys, flag, value, message)


def test_finetune_malformed_data_file_is_one_line(tiny_llama_dir, tmp_path, monkeypatch, capsys):
    from lib.training.run import main

    monkeypatch.setenv("WANDA_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    (data / "gsm8k").mkdir(parents=True)
    (data / "gsm8k" / "train.jsonl").write_text('{"question": "1+1?", "answer": "2\\n#### 2"}\n{"question": \n')
    with pytest.raises(SystemExit) as exit_info:
        main("gsm8k", finetune_argv(tiny_llama_dir, data, tmp_path / "ft", "--max_steps", "1"))
    assert "train.jsonl:2: invalid JSON" in one_line_error(capsys, exit_info.value.code)
    assert not (tmp_path / "ft" / "model.safetensors").exists()


def test_finetune_resume_skips_a_checkpoint_killed_while_written(tiny_llama_dir, tmp_path, monkeypatch, caplog, capsys):
    from lib.training.checkpoints import resolve_resume
    from lib.training.run import main

    monkeypatch.setenv("WANDA_CACHE", str(tmp_path / "cache"))
    output_dir = tmp_path / "ft"
    main("gsm8k", finetune_argv(tiny_llama_dir, SAMPLE_DATA, output_dir, "--max_steps", "2", "--save_strategy", "steps",
                                "--save_steps", "1"))
    broken = output_dir / "checkpoint-2"
    (broken / "optimizer.pt").write_bytes(b"")  # killed while writing it
    with caplog.at_level("WARNING"):
        assert resolve_resume("latest", str(output_dir)) == str(output_dir / "checkpoint-1")
    assert f"skipping the incomplete checkpoint {broken}: it has a missing, empty or truncated optimizer.pt" in caplog.text
    capsys.readouterr()  # the first run's log
    with pytest.raises(SystemExit) as exit_info:
        main("gsm8k", finetune_argv(tiny_llama_dir, SAMPLE_DATA, output_dir, "--max_steps", "3",
                                    "--resume_from_checkpoint", str(broken)))
    assert one_line_error(capsys, exit_info.value.code) == (
        f"error: --resume_from_checkpoint {broken} has a missing, empty or truncated optimizer.pt: pass "
        "a complete checkpoint, or `latest` for the latest complete one under --output_dir")
    caplog.clear()
    with caplog.at_level("INFO"):
        main("gsm8k", finetune_argv(tiny_llama_dir, SAMPLE_DATA, output_dir, "--max_steps", "3",
                                    "--save_strategy", "no", "--resume_from_checkpoint", "latest"))
    assert f"resuming from {output_dir / 'checkpoint-1'}, the latest complete checkpoint" in caplog.text
    assert json.loads((output_dir / "trainer_state.json").read_text())["global_step"] == 3
    assert (output_dir / MARKER_FILE).is_file() and not list(tmp_path.glob(".ft.*"))
