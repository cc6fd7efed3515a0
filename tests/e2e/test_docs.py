"""The documentation against the tree: every script that README.md and docs/ tell a user to run exists and its
`--help` exits 0; every repository path, relative link and `lib` name they mention exists; the README's install
and test commands are the ones CI runs (.ci/run); user-facing commands name the data directory as a user has it.

Commands are read from the ```bash blocks (continuation lines joined, comment lines dropped) and from inline
code spans that start like a command (`python ...`, `bash ...`, an environment assignment). The script of a
command is its first word, after the last `&&`, that ends in .py or .sh. `scripts/install.sh` is checked to exist
but not run (it takes no flags: it installs)."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.helpers import REPO

DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
NOT_RUN = {"scripts/install.sh"}
FENCE = re.compile(r"```(?:bash|sh|shell)\n(.*?)```", re.S)
ANY_FENCE = re.compile(r"```.*?```", re.S)
INLINE = re.compile(r"`([^`\n]+)`")
COMMAND_START = re.compile(r"^(?:[A-Z_]+=\S+\s+)*(?:python3?|\.venv/bin/python|lmeval-venv/bin/python|bash|torchrun)\s")
# a repository path: a top-level folder of the repo, then at least one more part; globs, braces and placeholders
# (`<exp>`, `...`) are patterns, not paths
PATH = re.compile(r"(?<![\w./-])((?:lib|tests|scripts|dense_ft|docs|sample_data)/[\w./-]*\w/?)(?![\w*{<.-])")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
DOTTED = re.compile(r"(?<![\w./])(lib(?:\.\w+)+)")
FROM_IMPORT = re.compile(r"^from (lib[\w.]*) import ([\w, ]+)$", re.M)


def _text(doc) -> str:
    return doc.read_text(encoding="utf-8")


def _rel(doc) -> str:
    return str(doc.relative_to(REPO))


def documented_commands() -> list[tuple[str, str]]:
    """[(doc file relative to the repo, command)]: every line of a shell block and every inline command span."""
    commands = []
    for doc in DOC_FILES:
        text = _text(doc)
        for block in FENCE.findall(text):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    commands.append((_rel(doc), line))
        for span in INLINE.findall(ANY_FENCE.sub("", text)):
            if COMMAND_START.match(span + " "):
                commands.append((_rel(doc), span.strip()))
    return commands


def script_of(command: str) -> str | None:
    """The repository script a command runs (`scripts/x.py`, `main_block_three_tier.py`), or None."""
    for word in command.split("&&")[-1].split():
        if word.endswith((".py", ".sh")) and not word.startswith(("-", "/")) and "=" not in word:
            return word
    return None


COMMANDS = documented_commands()
SCRIPTS = sorted({s for _, c in COMMANDS if (s := script_of(c))})


def test_the_docs_document_the_four_clis_and_the_tools():
    assert len(COMMANDS) >= 60
    for script in ("main_block_three_tier.py", "scripts/eval_tasks.py", "dense_ft/finetune_squad.py",
                   "dense_ft/finetune_gsm8k.py", "dense_ft/finetune_lm.py", "scripts/run_task_experiments.sh",
                   "scripts/compress_model.py", "scripts/compare_lm_eval.py", "scripts/bench_quality.py"):
        assert script in SCRIPTS, script


def test_every_documented_script_exists():
    missing = [(doc, c) for doc, c in COMMANDS if (s := script_of(c)) and not (REPO / s).is_file()]
    assert not missing, "documented commands whose script does not exist:\n" + "\n".join(f"{d}: {c}" for d, c in missing)


def _help(script: str) -> tuple[str, int, str]:
    argv = ["bash", script, "--help"] if script.endswith(".sh") else [sys.executable, script, "--help"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    return script, done.returncode, (done.stderr or done.stdout)[-400:]


@pytest.mark.slow
def test_every_documented_script_answers_help():
    scripts = [s for s in SCRIPTS if s not in NOT_RUN and (REPO / s).is_file()]
    assert len(scripts) >= 15
    with ThreadPoolExecutor(max_workers=2) as pool:
        failed = [r for r in pool.map(_help, scripts) if r[1] != 0]
    assert not failed, "\n".join(f"{s}: rc={rc}: {tail}" for s, rc, tail in failed)


def test_every_repository_path_in_the_docs_exists():
    named = {(_rel(doc), p) for doc in DOC_FILES for p in PATH.findall(_text(doc))}
    missing = sorted((doc, p) for doc, p in named if not (REPO / p.rstrip("/")).exists())
    assert len(named) >= 100
    assert not missing, "paths named in the docs that are not in the tree:\n" + "\n".join(f"{d}: {p}" for d, p in missing)


def test_every_test_named_in_the_docs_exists():
    named = {m for doc in DOC_FILES for m in re.findall(r"(tests/[\w/]+\.py)::(\w+)", _text(doc))}
    missing = sorted(f"{path}::{name}" for path, name in named
                     if not (REPO / path).is_file() or f"def {name}(" not in (REPO / path).read_text())
    assert named
    assert not missing, "tests named in the docs that do not exist: " + ", ".join(missing)


def test_every_relative_link_in_the_docs_resolves():
    links = [(doc, target) for doc in DOC_FILES for target in LINK.findall(_text(doc)) if "://" not in target]
    broken = [f"{_rel(doc)}: {target}" for doc, target in links if not (doc.parent / target).exists()]
    assert len(links) >= 50
    assert not broken, "links to nothing:\n" + "\n".join(broken)


def _resolves(dotted: str) -> bool:
    """`lib.a.b.name` is a module, or an attribute of the longest importable module prefix."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(obj, attribute):
                return False
            obj = getattr(obj, attribute)
        return True
    return False


def test_every_lib_name_and_import_in_the_docs_exists():
    names = {(_rel(doc), n) for doc in DOC_FILES for n in DOTTED.findall(_text(doc))}
    names |= {(_rel(doc), f"{module}.{name.strip()}") for doc in DOC_FILES
              for module, imported in FROM_IMPORT.findall(_text(doc)) for name in imported.split(",")
              if name.strip() != "x"}  # `from lib import x` is the layer test's example of a syntax
    unknown = sorted((doc, n) for doc, n in names if not _resolves(n))
    assert len(names) >= 20
    assert not unknown, "lib names in the docs that do not exist:\n" + "\n".join(f"{d}: {n}" for d, n in unknown)


def test_the_readme_installs_and_tests_as_ci_does_and_keeps_the_quickstart():
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert ci == ["bash scripts/install.sh", ".venv/bin/python -m pytest -q"]
    readme = [c for d, c in COMMANDS if d == "README.md"]
    assert " && ".join(ci) in readme
    assert ("bash scripts/install.sh && .venv/bin/python main_block_three_tier.py --data_dir sample_data "
            "--nsamples 16 --seqlen 256 --eval_windows 8 --save out/quickstart") in readme
    assert len(_text(REPO / "README.md").splitlines()) <= 200


def test_user_facing_commands_name_the_data_directory_as_a_user_has_it():
    offending = [(doc, c) for doc, c in COMMANDS if "shared/data" in c]
    assert not offending, "\n".join(f"{d}: {c}" for d, c in offending)
    assert any("--data_dir DATA" in c for _, c in COMMANDS)
