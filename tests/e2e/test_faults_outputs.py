"""Issue 23, the output rule and faults: `--overwrite` replaces and never deletes, protected places and every
resolved input are refused, markers carry their kind, write faults and signals end in one line with no
temporary or lock left, cache conversions serialize (tiny models, tmp dirs, real processes for signals)."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import main_block_three_tier as cli
from lib.core.errors import OutputError
from lib.core.markers import MARKER_FILE, manifest, write_marker
from lib.core.writes import write_output_json
from lib.models.loading import DEFAULT_MODEL, convert_gguf, model_input_paths
from tests.helpers import REPO, SAMPLE_DATA
from scripts import compress_model, eval_tasks
from tests.helpers import BASE, dead_pid, finetune_argv, listing, one_line_error

LITTER = re.compile(r"\.(partial|old|tmp)-\d+$|\.lock$|\.tmp\d+$")
FSIZE = 200_000  # bytes: above the tokenizer and JSON files, below the tiny model's 440 kB of weights


def litter(root: Path) -> list[str]:
    """Temporaries and locks of the output rule anywhere under root."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if LITTER.search(p.name))


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    """A token / model cache shared by this module's tests, outside their tmp_path (never the user's)."""
    monkeypatch.setenv("WANDA_CACHE", str(tmp_path_factory.getbasetemp() / "faults_cache"))


def child_env() -> dict[str, str]:
    """The environment of a child process: this test's WANDA_CACHE, offline, no .pyc writes (a file-size limit)."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def script(tmp_path: Path, body: str) -> Path:
    """A Python file that runs `body` with the repository importable."""
    path = tmp_path / "child.py"
    path.write_text(f"import sys, time\nsys.path.insert(0, {str(REPO)!r})\n" + textwrap.dedent(body))
    return path


def last_line(stderr: str) -> str:
    """The final stderr line of a CLI (progress bars may come before it), after checking there is no traceback."""
    assert "Traceback" not in stderr, stderr
    return stderr.strip().splitlines()[-1]


@pytest.fixture
def foreign_dir(tmp_path) -> Path:
    """A directory of the user's: two files, a sub-directory, and a `results.json` of their own."""
    path = tmp_path / "mine"
    (path / "sub").mkdir(parents=True)
    (path / "notes.txt").write_text("my notes")
    (path / "data.csv").write_text("a,b\n1,2\n")
    (path / "sub" / "x.bin").write_bytes(bytes(range(256)))
    (path / "results.json").write_text('{"mine": true}')
    return path


# ---------------------------------------------------------------- refused, even with --overwrite


@pytest.mark.parametrize("where", ["cwd", "repo_root", "above_repo"])
def test_git_work_tree_and_current_directory_are_refused(tiny_llama_dir, tmp_path, monkeypatch, capsys, no_model_load,
                                                         where):
    repo = tmp_path / "parent" / "repo"
    (repo / "code").mkdir(parents=True)
    (repo / "code" / "main.py").write_text("print('hi')\n")
    data = shutil.copytree(SAMPLE_DATA, repo / "data")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    before = listing(tmp_path)
    if where == "cwd":
        monkeypatch.chdir(repo)
    save = {"cwd": ".", "repo_root": str(repo), "above_repo": str(repo.parent)}[where]
    err = one_line_error(capsys, cli.main(["--model", str(tiny_llama_dir), *BASE[2:], "--data_dir", str(data),
                                           "--save", save, "--overwrite"]))
    assert err.startswith(f"error: --save {repo if where != 'above_repo' else repo.parent} ")
    assert ("is the current directory or contains it" if where == "cwd" else f"holds a git work tree ({repo / '.git'})") in err
    assert listing(tmp_path) == before


@pytest.mark.parametrize("case", ["save_is_data_dir", "model_inside_data_dir", "env_data_dir", "default_model_cache",
                                  "contains_cache", "eval_output_is_a_data_file"])
def test_outputs_overlapping_resolved_inputs_are_refused(tmp_path, monkeypatch, capsys, no_model_load, case):
    monkeypatch.setenv("WANDA_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("WANDA_DATA_DIR", raising=False)
    data = shutil.copytree(SAMPLE_DATA, tmp_path / "data")
    entry = model_input_paths(DEFAULT_MODEL)[1]  # where the default model's conversion lives (WANDA_CACHE/models/...)
    entry.mkdir(parents=True)
    (entry / "config.json").write_text("{}")
    (entry / "model.safetensors").write_bytes(b"converted weights")
    before = listing(tmp_path)
    common = ["--nsamples", "2", "--seqlen", "32", "--device", "cpu", "--no_eval", "--overwrite"]
    argv, expected = {
        "save_is_data_dir": (["--data_dir", str(data), "--save", str(data)], f"is the same path as --data_dir {data}"),
        "model_inside_data_dir": (["--data_dir", str(data), "--save_model", str(data / "m")], "is inside --data_dir"),
        "env_data_dir": (["--save", str(data / "wikitext2")], f"is inside WANDA_DATA_DIR {data}"),
        "default_model_cache": (["--data_dir", str(data), "--save_model", str(entry)], f"is the same path as --model {entry}"),
        "contains_cache": (["--data_dir", str(data), "--save", str(tmp_path)], "contains --model"),
        "eval_output_is_a_data_file": (None, f"is inside --data_dir {data}"),
    }[case]
    if case == "env_data_dir":
        monkeypatch.setenv("WANDA_DATA_DIR", str(data))
    if argv is None:
        code = eval_tasks.main(["--tasks", "gsm8k", "--data_dir", str(data), "--output",
                                str(data / "gsm8k" / "test.jsonl"), "--overwrite"])
    else:
        code = cli.main([*argv, *common])  # no --model: the default alias, resolved to its cache entry
    err = one_line_error(capsys, code)
    assert code == 2 and expected in err and "use separate paths" in err, err
    assert listing(tmp_path) == before


@pytest.mark.skipif(not os.path.ismount("/dev/shm"), reason="needs the mount point /dev/shm")
def test_a_mount_point_is_refused_before_any_work(tiny_llama_dir, capsys, no_model_load):
    err = one_line_error(capsys, cli.main(["--model", str(tiny_llama_dir), *BASE, "--save_model", "/dev/shm",
                                           "--overwrite"]))
    assert err == "error: --save_model /dev/shm is a mount point: a rename cannot replace it; choose a directory inside it"


def test_not_enough_free_space_is_refused_before_loading(tiny_llama_dir, tmp_path, capsys, no_model_load):
    from lib.core.files import free_bytes

    model = shutil.copytree(tiny_llama_dir, tmp_path / "model")
    with open(model / "padding.safetensors", "wb") as f:  # sparse: a model larger than the free space, on paper
        f.truncate(free_bytes(tmp_path) + 2**30)
    err = one_line_error(capsys, cli.main(["--model", str(model), *BASE, "--save_model", str(tmp_path / "m")]))
    assert err.startswith(f"error: not enough free space for --save_model {tmp_path / 'm'}: about ")
    assert err.endswith("free some space or choose another place")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


# ---------------------------------------------------------------- --overwrite replaces, never deletes


def test_overwrite_into_a_foreign_directory_keeps_its_files(tiny_llama_dir, foreign_dir, caplog):
    before = listing(foreign_dir)
    with caplog.at_level("INFO"):
        assert cli.main(["--model", str(tiny_llama_dir), *BASE, "--save", str(foreign_dir), "--overwrite"]) == 0
    after = listing(foreign_dir)
    assert {k: v for k, v in after.items() if k in before and k != "results.json"} == \
        {k: v for k, v in before.items() if k != "results.json"}  # every other entry byte-identical
    assert json.loads(after["results.json"])["method"].startswith("wanda_three_tier")  # the same-named one replaced
    assert sorted(set(after) - set(before)) == ["log_tiny_llama0.txt", "tier_map.png", "tier_map.safetensors"]
    replaced = [r.getMessage() for r in caplog.records if r.getMessage().startswith("replaced ")]
    assert replaced == [f"replaced {foreign_dir / 'results.json'} (--overwrite; not written by this toolkit)"]
    assert not litter(foreign_dir.parent)


def test_own_output_keeps_user_files_and_refuses_a_changed_entry(tiny_llama_dir, tmp_path, capsys, caplog):
    target = tmp_path / "r"
    assert cli.main(["--model", str(tiny_llama_dir), *BASE, "--save", str(target)]) == 0
    (target / "notes.txt").write_text("added by the user")
    unstructured = ["--sparsity_type", "unstructured", "--sparsity_ratio", "0.5"]
    with caplog.at_level("INFO"):  # this run writes no tier map: the earlier one (ours, unchanged) goes
        assert cli.main(["--model", str(tiny_llama_dir), *BASE, *unstructured, "--save", str(target)]) == 0
    names = sorted(p.name for p in target.iterdir())
    assert names == [MARKER_FILE, "log_tiny_llama0.txt", "notes.txt", "results.json"]
    assert (target / "notes.txt").read_text() == "added by the user"
    assert f"removed {target / 'tier_map.png'}: an earlier output of this toolkit that this run does not write" \
        in caplog.text
    (target / "results.json").write_text('{"edited": "by hand"}')  # ours, changed since: not replaced silently
    before = listing(tmp_path)
    err = one_line_error(capsys, cli.main(["--model", str(tiny_llama_dir), *BASE, "--save", str(target)]))
    assert err == (f"error: --save {target}/results.json changed since this toolkit wrote it; move it away, or pass "
                   "--overwrite to replace it")
    assert listing(tmp_path) == before


@pytest.mark.parametrize("entries", [{}, {"notes.txt": {"size": 8, "mtime_ns": 1}}, None])
def test_a_planted_marker_makes_nothing_deletable(tiny_llama_dir, foreign_dir, entries, capsys):
    (foreign_dir / "results.json").unlink()
    marker = {"tool": "wanda_hybrid", "kind": "results", **({} if entries is None else {"entries": entries})}
    (foreign_dir / MARKER_FILE).write_text(json.dumps(marker))
    before = listing(foreign_dir)
    code = cli.main(["--model", str(tiny_llama_dir), *BASE, "--save", str(foreign_dir)])
    if entries == {}:  # our results dir by its marker, but every entry foreign: merged in, all of them kept
        assert code == 0 and (foreign_dir / "results.json").is_file()
    else:
        assert "--overwrite" in one_line_error(capsys, code)
    after = listing(foreign_dir)
    assert {k: after[k] for k in before if k != MARKER_FILE} == {k: v for k, v in before.items() if k != MARKER_FILE}


# ---------------------------------------------------------------- kinds


@pytest.mark.parametrize("writer", ["compress_model", "prune_save", "eval_report_over_another_kind"])
def test_an_output_of_another_kind_is_not_replaced_without_overwrite(tiny_llama_dir, tmp_path, capsys, writer):
    ft = shutil.copytree(tiny_llama_dir, tmp_path / "ft")  # a fine-tuned model with its checkpoints
    (ft / "checkpoint-2").mkdir()
    (ft / "checkpoint-2" / "optimizer.pt").write_bytes(b"optimizer state")
    write_marker(ft, "finetune", manifest(ft))
    write_output_json(tmp_path / "bench.json", {"rows": [1]}, "bench_quality")
    before = listing(tmp_path)
    if writer == "compress_model":
        err = one_line_error(capsys, compress_model.main([str(tiny_llama_dir), str(ft)]))
        assert err == (f"error: out {ft} is a finetune output of this toolkit, not a tiered_model one; choose another "
                       "path, or pass --overwrite to write into it (same-named entries are replaced; nothing else is deleted)")
    elif writer == "prune_save":
        err = one_line_error(capsys, cli.main(["--model", str(tiny_llama_dir), *BASE, "--save", str(ft)]))
        assert "is a finetune output of this toolkit, not a results one" in err
    else:
        with pytest.raises(OutputError, match="is a bench_quality report of this toolkit, not a eval_report one"):
            write_output_json(tmp_path / "bench.json", {"metrics": {}}, "eval_report")
    assert listing(tmp_path) == before


def test_finetune_writes_into_a_foreign_dir_without_marking_it(tiny_llama_dir, foreign_dir, capsys, caplog):
    from lib.training.run import main

    (foreign_dir / "config.json").write_text('{"mine": true}')  # same name as a file the final save writes
    before = listing(foreign_dir)
    with caplog.at_level("INFO"):
        main("gsm8k", finetune_argv(tiny_llama_dir, SAMPLE_DATA, foreign_dir, "--max_steps", "1", "--save_strategy",
                                    "no", "--overwrite_output_dir"))
    after = listing(foreign_dir)
    assert not (foreign_dir / MARKER_FILE).exists()
    assert {k: after[k] for k in before if k != "config.json"} == {k: v for k, v in before.items() if k != "config.json"}
    assert json.loads(after["config.json"])["model_type"] == "llama"
    assert f"replaced {foreign_dir / 'config.json'} (--overwrite_output_dir; not written by this toolkit)" in caplog.text
    capsys.readouterr()
    err = one_line_error(capsys, cli.main(["--model", str(tiny_llama_dir), *BASE, "--save", str(foreign_dir)]))
    assert "this toolkit did not write" in err and listing(foreign_dir) == after


# ---------------------------------------------------------------- write faults


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")
@pytest.mark.parametrize("cli_name", ["prune_save_model", "compress_model", "finetune"])
def test_file_size_limit_while_saving_is_one_line(tiny_llama_dir, tmp_path, cli_name):
    earlier = tmp_path / "out"
    assert cli.main(["--model", str(tiny_llama_dir), *BASE, "--save_model", str(earlier)]) == 0  # a model to keep
    (tmp_path / "notes.txt").write_text("keep me")
    target, flag, argv = {
        "prune_save_model": (earlier, "--save_model", [str(REPO / "main_block_three_tier.py"), "--model",
                                                        str(tiny_llama_dir), *BASE, "--save_model", str(earlier)]),
        "compress_model": (tmp_path / "tiered", "out", [str(REPO / "scripts" / "compress_model.py"), str(earlier),
                                                        str(tmp_path / "tiered")]),
        "finetune": (tmp_path / "ft", "--output_dir", [str(REPO / "dense_ft" / "finetune_gsm8k.py"), *finetune_argv(
            tiny_llama_dir, SAMPLE_DATA, tmp_path / "ft", "--max_steps", "1", "--save_strategy", "no")]),
    }[cli_name]
    before = listing(tmp_path)
    result = subprocess.run(["prlimit", f"--fsize={FSIZE}", sys.executable, *argv], capture_output=True, text=True,
                            env=child_env(), timeout=300)
    assert result.returncode == 2, result.stderr
    after_text = "the fine-tuned model was not saved" if cli_name == "finetune" else (
        f"nothing was written, {target} is as it was" if target == earlier else "nothing was written")
    assert last_line(result.stderr) == f"error: cannot write {flag} {target}: file too large (EFBIG); {after_text}"
    assert listing(tmp_path) == before  # the earlier model byte-identical; the fine-tune's marker-only dir gone again
    assert not litter(tmp_path)


def test_full_disk_while_saving_is_one_line(tiny_llama_dir, tmp_path, monkeypatch, capsys):
    def disk_full(model, tokenizer, path):
        (Path(path) / "model.safetensors").write_bytes(b"\0" * 1000)  # partly written, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cli, "save_model", disk_full)
    (tmp_path / "notes.txt").write_text("keep me")
    err = one_line_error(capsys, cli.main(["--model", str(tiny_llama_dir), *BASE, "--save", str(tmp_path / "r"),
                                           "--save_model", str(tmp_path / "m")]))
    assert err == (f"error: cannot write --save_model {tmp_path / 'm'}: no space left on device (ENOSPC); nothing was "
                   f"written (finished before it: --save {tmp_path / 'r'})")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "r"]


def test_full_disk_while_writing_a_checkpoint_removes_it(tiny_llama_dir, tmp_path, monkeypatch, capsys):
    import transformers

    from lib.training.run import main

    def disk_full(self, output_dir):
        (Path(output_dir) / "optimizer.pt").write_bytes(b"PK")  # partly written, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(transformers.Trainer, "_save_optimizer_and_scheduler", disk_full)
    output_dir = tmp_path / "ft"
    with pytest.raises(SystemExit) as exit_info:
        main("gsm8k", finetune_argv(tiny_llama_dir, SAMPLE_DATA, output_dir, "--max_steps", "2", "--save_strategy",
                                    "steps", "--save_steps", "1"))
    assert one_line_error(capsys, exit_info.value.code) == (
        f"error: cannot write --output_dir {output_dir}: no space left on device (ENOSPC); the fine-tuned model was "
        "not saved")
    assert list(tmp_path.iterdir()) == []  # the half-written checkpoint-1, then the marker-only directory: gone


# ---------------------------------------------------------------- signals

SLOW_SAVE = """
    import main_block_three_tier as cli
    def slow(*args, **kwargs):
        print("SLOW", flush=True)
        time.sleep(120)
    cli.save_model = slow
    sys.exit(cli.main(sys.argv[1:]))
"""

SLOW_TRAINING = """
    import transformers
    def slow(self, *args, **kwargs):
        print("SLOW", flush=True)
        time.sleep(120)
    transformers.Trainer.train = slow
    from lib.training.run import main
    main("gsm8k", sys.argv[1:])
"""


def interrupt(tmp_path: Path, body: str, argv: list[str], signum: int) -> subprocess.Popen:
    """Run `body` in a real process, send `signum` when it prints SLOW; returns the ended process, with
    `.stderr_text`."""
    child = subprocess.Popen([sys.executable, str(script(tmp_path, body)), *argv], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        for line in child.stdout:  # the fine-tune CLIs log to stdout too
            if line.strip() == "SLOW":
                break
        else:
            pytest.fail(f"the child never reached the slow step: {child.communicate(timeout=60)[1]}")
        child.send_signal(signum)
        child.stderr_text = child.communicate(timeout=60)[1]
    finally:
        child.kill()
    return child


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_a_run_ends_in_one_line(tiny_llama_dir, tmp_path, signum):
    results, model = tmp_path / "r", tmp_path / "m"
    done = interrupt(tmp_path, SLOW_SAVE, ["--model", str(tiny_llama_dir), *BASE, "--save", str(results),
                                           "--save_model", str(model)], signum)
    assert done.returncode == 128 + signum, done.stderr_text
    assert last_line(done.stderr_text) == (f"error: interrupted by {signal.Signals(signum).name}: kept --save {results} "
                                      "(finished before it); nothing else was written")
    assert (results / "results.json").is_file() and not model.exists()
    assert not litter(tmp_path)


@pytest.mark.slow
def test_sigterm_during_a_finetune_leaves_no_marker_only_directory(tiny_llama_dir, tmp_path):
    output_dir = tmp_path / "runs" / "ft"
    done = interrupt(tmp_path, SLOW_TRAINING, finetune_argv(tiny_llama_dir, SAMPLE_DATA, output_dir, "--max_steps", "1"),
                     signal.SIGTERM)
    assert done.returncode == 143, done.stderr_text
    assert last_line(done.stderr_text) == "error: interrupted by SIGTERM: nothing was written; every output is as it was"
    assert not (tmp_path / "runs").exists()  # it created runs/ft and left only its marker there: both gone
    assert not litter(tmp_path)


@pytest.mark.slow
def test_a_finetune_killed_during_its_final_save_leaves_a_temporary_the_next_run_removes(tiny_llama_dir, tmp_path):
    from lib.training.run import main

    output_dir = tmp_path / "ft"
    body = """
        import transformers
        save = transformers.Trainer.save_model
        def save_then_hang(self, output_dir=None, _internal_call=False):
            save(self, output_dir, _internal_call)
            print("SLOW", flush=True)
            time.sleep(120)
        transformers.Trainer.save_model = save_then_hang
        from lib.training.run import main
        main("gsm8k", sys.argv[1:])
    """
    args = finetune_argv(tiny_llama_dir, SAMPLE_DATA, output_dir, "--max_steps", "1", "--save_strategy", "no")
    killed = interrupt(tmp_path, body, args, signal.SIGKILL)
    temporary = tmp_path / f".ft.partial-{killed.pid}"
    assert temporary.is_dir() and (temporary / "model.safetensors").is_file()  # what kill -9 leaves
    assert not (output_dir / "model.safetensors").exists()  # never a half-written model in the output
    main("gsm8k", args)
    assert not temporary.exists() and (output_dir / "model.safetensors").is_file()
    assert not litter(tmp_path)


# ---------------------------------------------------------------- model-cache conversions

FAKE_CONVERSION = """
    import logging, os
    from pathlib import Path
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import lib.models.loading as models
    gguf, counter, release = map(Path, sys.argv[1:4])
    def fake(source, out):
        print("CONVERTING", flush=True)
        deadline = time.time() + 30
        while not release.exists() and time.time() < deadline:
            time.sleep(0.05)
        (out / "config.json").write_text("{}")
        with open(counter, "a") as f:
            f.write(f"{os.getpid()}\\n")
    models._write_converted = fake
    print(models.convert_gguf(gguf), flush=True)
"""


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("WANDA_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF" + bytes(1000))
    return path


def test_concurrent_conversions_serialize(fake_gguf, tmp_path):
    child = str(script(tmp_path, FAKE_CONVERSION))
    args = [str(fake_gguf), str(tmp_path / "conversions.txt"), str(tmp_path / "release")]
    start = [sys.executable, child, *args]
    first = subprocess.Popen(start, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    second = None
    try:
        assert first.stdout.readline().strip() == "CONVERTING"
        second = subprocess.Popen(start, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=child_env())
        waited = ""
        while "waiting for another process converting tiny.gguf" not in waited:
            line = second.stderr.readline()
            assert line, f"the second process never waited: {waited}"
            waited += line
        (tmp_path / "release").touch()
        outputs = [process.communicate(timeout=60) for process in (first, second)]
    finally:
        for process in (first, second):
            if process is not None:
                process.kill()
    assert first.returncode == 0 and second.returncode == 0, outputs
    target = model_input_paths(str(fake_gguf))[1]
    assert outputs[0][0].split()[-1] == outputs[1][0].split()[-1] == str(target)
    assert len((tmp_path / "conversions.txt").read_text().split()) == 1  # converted once, reused once
    assert f"reusing {target}, converted meanwhile by another process" in outputs[1][1]
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # no lock, no temporary


def test_stale_conversion_temporaries_are_removed_by_the_next_run(fake_gguf, tmp_path, monkeypatch):
    import lib.models.loading

    target = model_input_paths(str(fake_gguf))[1]
    target.parent.mkdir(parents=True)
    dead, alive = dead_pid(), os.getppid()
    for name in (f"{target.name}.tmp{dead}", f".{target.name}.partial-{dead}", f".{target.name}.partial-{alive}"):
        (target.parent / name).mkdir()
        (target.parent / name / "model.safetensors").write_bytes(bytes(4096))
    monkeypatch.setattr(lib.models.loading, "_write_converted", lambda gguf, out: (out / "config.json").write_text("{}"))
    assert convert_gguf(fake_gguf) == target
    assert sorted(p.name for p in target.parent.iterdir()) == sorted([target.name, f".{target.name}.partial-{alive}"])


def test_a_failed_conversion_is_one_line_and_leaves_nothing(fake_gguf, tmp_path, monkeypatch):
    import lib.models.loading

    def disk_full(gguf, out):
        (out / "model.safetensors").write_bytes(bytes(4096))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(lib.models.loading, "_write_converted", disk_full)
    target = model_input_paths(str(fake_gguf))[1]
    with pytest.raises(OutputError) as error:
        convert_gguf(fake_gguf)
    assert str(error.value) == (f"cannot write the model cache entry {target}: no space left on device (ENOSPC); "
                                "nothing was written")
    assert list(target.parent.iterdir()) == []
