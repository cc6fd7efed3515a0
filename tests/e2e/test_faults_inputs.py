"""Issue 23, the inputs: no code from a model directory, decoders only, every check before the work,
validated data / token-cache / eval.json / checkpoint files, warnings for repeats and caps, clear messages.

Each refusal is checked the same way: exit 2, exactly one `error:` line on stderr naming the file or
flag and the defect, no traceback, the model not loaded (or not pruned) when the error was knowable
before, and no output written.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import main_block_three_tier as cli
from lib.core.errors import ModelLoadError
from lib.data import sources, token_cache
from lib.models.checks import check_causal, effective_seqlen
from lib.models.loading import load_model
from tests.helpers import REPO, SAMPLE_DATA, make_llama, make_opt, make_tokenizer
from scripts import eval_tasks
from tests.helpers import BASE, finetune_value_is_refused, listing, one_line_error

SCRIPT = REPO / "scripts" / "run_task_experiments.sh"


@pytest.fixture
def no_prune(monkeypatch):
    """Fail the test if the pruning CLI starts pruning: the error was due before."""
    def refuse(*args, **kwargs):
        raise AssertionError("pruning started before the error")

    monkeypatch.setattr(cli, "prune_model", refuse)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private WANDA_CACHE and empty per-process caches (a fresh process as far as the data is concerned)."""
    monkeypatch.setenv("WANDA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(token_cache, "TOKEN_CACHE", {})
    monkeypatch.setattr(sources, "_DIGESTS", {})
    monkeypatch.setattr(sources, "_PARSED", {})
    return tmp_path / "cache"


def data_copy(tmp_path: Path, *datasets: str) -> Path:
    """A data directory holding copies of the sample data of `datasets`."""
    root = tmp_path / "data"
    for name in datasets:
        shutil.copytree(SAMPLE_DATA / name, root / name)
    return root


def warnings_of(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and text in r.getMessage()]


# ---------------------------------------------------------------- no code from a model directory


def remote_code_model(tiny_llama_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A tiny Llama whose config names code in its own directory; that code would create `witness`."""
    model = tmp_path / "evil_model"
    shutil.copytree(tiny_llama_dir, model)
    witness = tmp_path / "witness.txt"
    (model / "evil.py").write_text(f"open({str(witness)!r}, 'w').write('ran')\n"
                                   "from transformers import LlamaConfig as EvilConfig, LlamaForCausalLM as EvilModel\n")
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (model / "config.json").write_text(json.dumps(config))
    return model, witness


@pytest.mark.parametrize("stdin", ["y\n", None], ids=["echo_y", "stdin_closed"])
def test_model_dir_with_remote_code_is_refused_without_reading_stdin(tiny_llama_dir, tmp_path, stdin):
    model, witness = remote_code_model(tiny_llama_dir, tmp_path)
    out = tmp_path / "r"
    result = subprocess.run(
        [sys.executable, str(REPO / "main_block_three_tier.py"), "--model", str(model), *BASE, "--save", str(out)],
        input=stdin, stdin=subprocess.DEVNULL if stdin is None else None, capture_output=True, text=True,
        timeout=300, cwd=tmp_path)
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert errors == [f"error: model {model} needs code from its own directory (config.json auto_map: AutoConfig, "
                      "AutoModelForCausalLM); this toolkit never runs code from a model directory: use a model whose "
                      "architecture transformers itself implements"], result.stderr
    assert not witness.exists() and not out.exists()


@pytest.mark.parametrize("edit", ["unknown_model_type", "tokenizer_auto_map"])
def test_other_ways_of_asking_for_model_code_are_refused(tiny_llama_dir, tmp_path, capsys, no_model_load, edit):
    model, witness = remote_code_model(tiny_llama_dir, tmp_path)
    config = json.loads((model / "config.json").read_text())
    del config["auto_map"]
    if edit == "unknown_model_type":
        config["model_type"] = "evil"
        expected = "has model_type 'evil', which transformers does not implement"
    else:
        tokenizer_config = json.loads((model / "tokenizer_config.json").read_text())
        tokenizer_config["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", None]}
        (model / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
        expected = "needs code from its own directory (tokenizer_config.json auto_map: AutoTokenizer)"
    (model / "config.json").write_text(json.dumps(config))
    before = listing(tmp_path)
    err = one_line_error(capsys, cli.main(["--model", str(model), *BASE, "--save", str(tmp_path / "r")]))
    assert f"model {model}" in err and expected in err
    assert listing(tmp_path) == before and not witness.exists()
    with pytest.raises(ModelLoadError, match="never runs code from a model directory"):
        load_model(str(model), device="cpu")  # the library entry point refuses too


def test_every_from_pretrained_refuses_remote_code():
    """Static: each from_pretrained call in lib/, scripts/, dense_ft/ passes trust_remote_code=False."""
    offenders = []
    for path in [*REPO.glob("lib/**/*.py"), *REPO.glob("scripts/*.py"), *REPO.glob("dense_ft/*.py"),
                 REPO / "main_block_three_tier.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "from_pretrained":
                flag = {k.arg: k.value for k in node.keywords}.get("trust_remote_code")
                if not (isinstance(flag, ast.Constant) and flag.value is False):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


# ---------------------------------------------------------------- decoders only


def save_bert(path: Path, head: str) -> Path:
    from transformers import BertConfig, BertForMaskedLM, BertLMHeadModel

    config = BertConfig(vocab_size=400, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=128)
    torch.manual_seed(0)
    (BertForMaskedLM if head == "masked_lm" else BertLMHeadModel)(config).save_pretrained(path)
    make_tokenizer().save_pretrained(path)
    return path


@pytest.mark.parametrize("head", ["masked_lm", "lm_head"])
def test_bidirectional_model_is_refused_before_pruning(tmp_path, capsys, no_prune, head):
    model = save_bert(tmp_path / "bert", head)
    before = listing(tmp_path)
    err = one_line_error(capsys, cli.main(["--model", str(model), *BASE, "--save", str(tmp_path / "r")]))
    assert err.startswith(f"error: model {model} (BertLMHeadModel) is not a causal decoder: its predictions at a "
                          "position change with later tokens")
    assert "decoder-only causal LMs only" in err
    assert listing(tmp_path) == before


def test_causal_models_pass_the_probe():
    for model in (make_llama(), make_opt()):
        check_causal(model, "tiny")  # raises for a model that is not causal


# ---------------------------------------------------------------- the token cache


def test_replaced_data_file_is_tokenized_again(cache, tmp_path, tokenizer):
    from lib.data import get_eval_tokens

    data = tmp_path / "data"
    (data / "wikitext2").mkdir(parents=True)
    test_file = data / "wikitext2" / "wiki.test.raw"
    test_file.write_text(" = Foxes = \n\n The quick brown fox jumps over the lazy dog .\n" * 20)
    first = get_eval_tokens("wikitext2", tokenizer, data_dir=data, seqlen=16)
    stat = test_file.stat()
    replaced = test_file.read_text().replace("brown fox", "black cat")  # same length, other text
    test_file.write_text(replaced)
    os.utime(test_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime as the first file
    assert test_file.stat().st_size == stat.st_size and test_file.stat().st_mtime_ns == stat.st_mtime_ns
    for name in ("TOKEN_CACHE", "_DIGESTS", "_PARSED"):  # a new process
        getattr(token_cache if name == "TOKEN_CACHE" else sources, name).clear()
    second = get_eval_tokens("wikitext2", tokenizer, data_dir=data, seqlen=16)
    expected = tokenizer("\n\n".join(sources._wikitext_lines(test_file)), return_tensors="pt").input_ids
    assert torch.equal(second, expected) and not torch.equal(first, second)
    assert len(list((cache / "tokenized").glob("*.pt"))) == 2  # one entry per content


def flip_tensor_byte(path: Path) -> None:
    """Flip one byte inside the first tensor storage of a torch.save archive (torch.load does not notice)."""
    with zipfile.ZipFile(path) as archive:
        member = next(info for info in archive.infolist() if "/data/" in info.filename)
    raw = bytearray(path.read_bytes())
    start = member.header_offset + 30 + len(member.filename.encode()) + len(member.extra)
    raw[start + member.compress_size // 2] ^= 0x5A
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage, problem", [("flip", "its tokens fail their checksum"),
                                             ("truncate", "unreadable: "), ("foreign", "written for another file")])
def test_damaged_token_cache_entry_is_rebuilt(cache, tmp_path, tokenizer, caplog, damage, problem):
    from lib.data import get_eval_tokens

    fresh = get_eval_tokens("wikitext2", tokenizer, data_dir=SAMPLE_DATA, seqlen=16)
    entry, = (cache / "tokenized").glob("*.pt")
    if damage == "flip":
        flip_tensor_byte(entry)
    elif damage == "truncate":
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    else:
        torch.save(torch.zeros(5, dtype=torch.int32), entry)  # the old format, or another file's
    token_cache.TOKEN_CACHE.clear()
    with caplog.at_level("WARNING"):
        again = get_eval_tokens("wikitext2", tokenizer, data_dir=SAMPLE_DATA, seqlen=16)
    assert torch.equal(again, fresh)
    warned = warnings_of(caplog, "token cache")
    assert len(warned) == 1 and warned[0].startswith(f"token cache {entry} is damaged ({problem}")
    assert warned[0].endswith("; tokenizing again and rewriting it")
    caplog.clear()
    token_cache.TOKEN_CACHE.clear()
    with caplog.at_level("WARNING"):
        assert torch.equal(get_eval_tokens("wikitext2", tokenizer, data_dir=SAMPLE_DATA, seqlen=16), fresh)
    assert warnings_of(caplog, "token cache") == []  # rewritten whole


# ---------------------------------------------------------------- experiment runner: a damaged eval.json is not done


def test_step_output_check_names_the_defect(tmp_path):
    from lib.experiments.rows import output_problem

    report = tmp_path / "eval.json"
    good = {"tasks": ["wikitext2", "squad"], "metrics": {"wikitext2": {"ppl": 9.0}, "squad": {"f1": 0.1}},
            "counts": {}, "settings": {}}
    cases = {
        json.dumps(good): None,
        json.dumps(good)[:40]: "is not valid JSON (Unterminated string starting at: line 1 column 35)",
        "[1, 2]": "holds a JSON list, not an object",
        json.dumps({**good, "metrics": {"wikitext2": {"ppl": 9.0}}}): "has no metrics for squad",
        json.dumps({k: v for k, v in good.items() if k != "counts"}): "lacks counts",
    }
    for text, problem in cases.items():
        report.write_text(text)
        assert output_problem(report) == problem, text
    report.write_bytes(b"\xff\xfe{}")
    assert output_problem(report) == "is unreadable (UnicodeDecodeError)"
    assert output_problem(tmp_path / "missing.json") == "is missing"


FAKE_PYTHON = """#!{python}
# The experiment runner's interpreter for this test: real Python for the runner itself, a stand-in
# evaluation that writes a sound eval.json, and a failure for every other step (pruning).
import json, os, sys
script = os.path.basename(sys.argv[1])
if script == "run_experiments.py":
    os.execv({python!r}, [{python!r}, *sys.argv[1:]])
if script == "eval_tasks.py":
    out = sys.argv[sys.argv.index("--output") + 1]
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({{"tasks": ["wikitext2"], "metrics": {{"wikitext2": {{"ppl": 9.0}}}}, "counts": {{}}, "settings": {{}}}}, f)
    sys.exit(0)
sys.exit(3)
"""


def run_matrix(tmp_path: Path, *flags: str, **env_vars: str) -> subprocess.CompletedProcess:
    python = tmp_path / "python"
    python.write_text(FAKE_PYTHON.format(python=sys.executable))
    python.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDA_", "PRESET"))}
    env.update(PYTHON=str(python), OUT=str(tmp_path / "out"), EXPS="exp1", MODEL="tiny", DATA_DIR=str(SAMPLE_DATA),
               **env_vars)
    return subprocess.run(["bash", str(SCRIPT), *flags], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_damaged_eval_json_in_an_experiment_run_is_run_again(tmp_path):
    first = run_matrix(tmp_path)
    report = tmp_path / "out" / "dense" / "eval.json"
    assert "done eval_dense" in first.stdout and "step prune_wikitext2 failed (exit 3)" in first.stderr
    good = report.read_text()
    report.write_text(good[: len(good) // 2])  # a damaged report
    dry = run_matrix(tmp_path, "--dry_run")
    assert dry.returncode == 0, dry.stderr
    assert (f"redo eval_dense: {report}: it is not valid JSON" in dry.stdout and "skip eval_dense" not in dry.stdout
            and f"would run eval_dense:" in dry.stdout)
    assert report.read_text() == good[: len(good) // 2]  # a dry run changes nothing
    again = run_matrix(tmp_path)
    assert f"redo eval_dense: {report}: it is not valid JSON" in again.stdout and "done eval_dense" in again.stdout
    kept, = report.parent.glob("eval.json.damaged-*")
    assert kept.read_text() == good[: len(good) // 2] and report.read_text() == good
    assert "skip eval_dense: done" in run_matrix(tmp_path).stdout


@pytest.mark.parametrize("variable, value, message", [
    ("NSAMPLES", "abc", "NSAMPLES='abc' must be a whole number >= 1"),
    ("FT_LR", "nan", "FT_LR='nan' must be a finite number >= 0"),
    ("EVAL_WINDOWS", "0", "EVAL_WINDOWS='0' must be a whole number >= 1 (or empty)"),
    ("SPARSITY_RATIOS", "0.5 0.5 0.5", "SPARSITY_RATIOS='0.5 0.5 0.5' must sum to 1"),
])
def test_experiment_variables_are_checked_before_the_first_step(tmp_path, variable, value, message):
    result = run_matrix(tmp_path, **{variable: value})
    assert result.returncode == 2 and result.stderr.strip() == f"error: {message}", result.stderr
    assert "run  eval_dense" not in result.stdout and not (tmp_path / "out").exists()


# ---------------------------------------------------------------- resume checkpoints


def fake_checkpoint(path: Path, step: int) -> Path:
    """A checkpoint directory with the files a Trainer resume reads (tiny, but in their real formats)."""
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    save_file({"w": torch.randn(8, 8)}, path / "model.safetensors")
    torch.save({"state": {0: {"exp_avg": torch.randn(64)}}}, path / "optimizer.pt")
    torch.save({"last_epoch": step}, path / "scheduler.pt")
    return path


def test_damaged_latest_checkpoint_falls_back_with_a_warning(tmp_path, caplog):
    from lib.training.checkpoints import resolve_resume

    fake_checkpoint(tmp_path / "checkpoint-10", 10)
    latest = fake_checkpoint(tmp_path / "checkpoint-20", 20)
    flip_tensor_byte(latest / "optimizer.pt")  # torch.load would read it without a word
    torch.load(latest / "optimizer.pt", weights_only=True)
    with caplog.at_level("WARNING"):
        assert resolve_resume("latest", str(tmp_path)) == str(tmp_path / "checkpoint-10")
    assert warnings_of(caplog, "checkpoint") == [
        f"skipping the incomplete checkpoint {latest}: it has a corrupt (CRC mismatch in optimizer/data/0) optimizer.pt"]


# ---------------------------------------------------------------- warnings: repeats and caps


def test_repeated_calibration_rows_warn_once(cache, tmp_path, tokenizer, caplog):
    from lib.data import get_loaders

    data = data_copy(tmp_path, "wikitext2")
    (data / "gsm8k").mkdir()
    (data / "gsm8k" / "train.jsonl").write_text(json.dumps({"question": "1+1?", "answer": "1+1=2\n#### 2"}) + "\n")
    with caplog.at_level("WARNING"):
        trainloader, _ = get_loaders("gsm8k", nsamples=8, seqlen=16, tokenizer=tokenizer, data_dir=data)
    assert len({tuple(inp[0].tolist()) for inp, _ in trainloader}) == 1  # one row, eight copies
    messages = warnings_of(caplog, "calibration")
    assert len(messages) == 1 and "8 gsm8k samples use" in messages[0]
    assert "the train split has only 1 distinct example(s), so examples repeat" in messages[0]


def test_capped_num_fewshot_warns_once(caplog):
    from lib.eval.runner import load_task_data

    with caplog.at_level("WARNING"):
        data = load_task_data(["gsm8k"], SAMPLE_DATA, limit=1, num_fewshot=100000)
    assert len(data["gsm8k"]["fewshot_examples"]) == 25  # sample_data/gsm8k/train.jsonl holds 25
    assert warnings_of(caplog, "--num_fewshot") == [
        "--num_fewshot 100000 exceeds the 25 examples of the gsm8k train split; using 25"]


def test_default_seqlen_is_capped_with_a_warning_an_explicit_one_refused(tiny_llama, caplog):
    with caplog.at_level("WARNING"):
        assert effective_seqlen(tiny_llama, 4096) == 256
    assert warnings_of(caplog, "--seqlen") == ["the default --seqlen 4096 exceeds max_position_embeddings 256; using 256"]
    with pytest.raises(ValueError, match="--seqlen 4096 exceeds max_position_embeddings 256 of model"):
        effective_seqlen(tiny_llama, 4096, explicit=True)


# ---------------------------------------------------------------- late failures now fail before the work


def test_short_evaluation_text_fails_before_pruning(tiny_llama_dir, tmp_path, capsys, no_prune, cache):
    data = data_copy(tmp_path, "wikitext2")
    (data / "wikitext2" / "wiki.test.raw").write_text(" = A = \n\n Too short .\n")
    argv = ["--model", str(tiny_llama_dir), "--data_dir", str(data), "--nsamples", "2", "--seqlen", "32",
            "--device", "cpu", "--save", str(tmp_path / "r")]
    err = one_line_error(capsys, cli.main(argv))
    assert err.startswith(f"error: the evaluation text wikitext2/wiki.test.raw under {data} has ")
    assert err.endswith("tokens, fewer than one window of --seqlen 32; use a smaller --seqlen or a longer evaluation text")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("extra, message", [
    (["--eval_batch_size", "0"], "error: --eval_batch_size must be at least 1, got 0"),
    (["--sparsity_ratios", "nan", "0.5", "0.5"], "error: --sparsity_ratios must be a finite number, got nan"),
    (["--top_dense_ratio", "0.5", "--mid_2_4_ratio", "inf", "--bottom_topk_ratio", "0.5"],
     "error: --sparsity_ratios must be a finite number, got inf"),
    (["--owl", "--owl_m", "nan"], "error: --owl_m must be a finite number, got nan"),
    (["--seqlen", "100000"], "error: --seqlen 100000 exceeds max_position_embeddings 256 of model {model}; "
                             "pass --seqlen 256 or less"),
    (["--data_dir", "/nonexistent/data"], "error: data directory '/nonexistent/data' does not exist"),
    (["--calibration_dataset", "squad"], "error: {data}/squad/train-v2.0.json:1: invalid JSON"),
])
def test_pruning_cli_checks_before_loading_the_model(tiny_llama_dir, tmp_path, capsys, no_model_load, cache,
                                                     extra, message):
    data = data_copy(tmp_path, "wikitext2", "squad")
    (data / "squad" / "train-v2.0.json").write_text('{"data": [')
    argv = ["--model", str(tiny_llama_dir), "--data_dir", str(data), "--nsamples", "2", "--seqlen", "32",
            "--device", "cpu", *extra, "--save", str(tmp_path / "r")]
    before = listing(tmp_path)
    err = one_line_error(capsys, cli.main(argv))
    assert err.startswith(message.format(model=tiny_llama_dir, data=data)), err
    assert listing(tmp_path) == before


def test_corrupt_squad_file_fails_before_any_task_is_evaluated(tiny_llama_dir, tmp_path, capsys, no_model_load, cache):
    data = data_copy(tmp_path, "wikitext2", "squad", "boolq")
    (data / "squad" / "dev-v2.0.json").write_text('{"version": "v2.0", "data": [{"title": 1}]}')
    err = one_line_error(capsys, eval_tasks.main(["--model", str(tiny_llama_dir), "--tasks", "wikitext2", "boolq",
                                                  "squad", "--data_dir", str(data), "--output", str(tmp_path / "e.json")]))
    assert err == (f"error: {data}/squad/dev-v2.0.json: data[0]: field 'title' is a int, expected a str "
                   "(official schema)")
    assert not (tmp_path / "e.json").exists()


@pytest.mark.parametrize("flag, value, message", [
    ("--learning_rate", "nan", "--learning_rate must be a finite number, got nan"),
    ("--weight_decay", "inf", "--weight_decay must be a finite number, got inf"),
    ("--data_dir", "/nonexistent/data", "data directory '/nonexistent/data' does not exist"),
])
def test_finetune_values_are_checked_at_parse_time(tmp_path, capsys, flag, value, message):
    finetune_value_is_refused(tmp_path, capsys, flag, value, message)  # one line, exit 2, nothing written


@pytest.mark.parametrize("argv, message", [
    (["--nsamples", "0"], "error: --nsamples must be at least 1, got 0"),
    (["--eval_windows", "-3"], "error: --eval_windows must be at least 1, got -3"),
    (["--seeds", "0", "-1"], "error: --seeds / --seed must be at least 0, got -1"),
])
def test_bench_quality_numbers_are_one_line(tmp_path, capsys, argv, message):
    from scripts import bench_quality

    with pytest.raises(SystemExit) as exit_info:
        bench_quality.main([*argv, "--output", str(tmp_path / "b.json")])
    assert one_line_error(capsys, exit_info.value.code) == message
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- messages that say what is wrong


def test_non_utf8_data_names_the_file_and_offset(tiny_llama_dir, tmp_path, capsys, no_model_load, cache):
    data = data_copy(tmp_path, "wikitext2")
    train = data / "wikitext2" / "wiki.train.raw"
    text = train.read_bytes()
    line_start = text.index(b"\n", len(text) // 2) + 1  # past the first reading chunk of the text decoder
    train.write_bytes(text[:line_start] + "café".encode("latin-1") + text[line_start:])
    err = one_line_error(capsys, cli.main(["--model", str(tiny_llama_dir), *BASE[2:], "--data_dir", str(data)]))
    assert err == (f"error: {train}: not UTF-8 text (byte 0xe9 at offset {line_start + 3}); convert it to UTF-8, "
                   "e.g. with iconv -f latin1 -t utf-8")


def test_empty_task_file_says_it_has_no_examples(tiny_llama_dir, tmp_path, capsys, monkeypatch, cache):
    import lib.training.run

    data = data_copy(tmp_path, "gsm8k")
    (data / "gsm8k" / "train.jsonl").write_text("")

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the error")

    monkeypatch.setattr(lib.training.run, "load_model", refuse)
    with pytest.raises(SystemExit) as exit_info:
        lib.training.run.main("gsm8k", ["--model_name_or_path", str(tiny_llama_dir), "--data_dir", str(data),
                                    "--output_dir", str(tmp_path / "ft"), "--max_steps", "1", "--report_to", "none"])
    assert one_line_error(capsys, exit_info.value.code) == (
        f"error: {data}/gsm8k/train.jsonl has no examples; pass the official GSM8K file (gsm8k/{{train,test}}.jsonl)")
    assert not (tmp_path / "ft" / "model.safetensors").exists()


def test_bench_quality_suggests_only_its_own_flags(tmp_path, capsys):
    from scripts import bench_quality

    report = tmp_path / "b.json"
    report.write_text('{"mine": 1}')
    with pytest.raises(SystemExit) as exit_info:
        bench_quality.main(["--output", str(report)])
    err = one_line_error(capsys, exit_info.value.code)
    assert "did not write" in err and err.endswith("or pass --overwrite to replace it")
    with pytest.raises(SystemExit):
        bench_quality.main(["--help"])
    assert "--overwrite" in capsys.readouterr().out
    assert report.read_text() == '{"mine": 1}'
