"""The documentation's commands: every script that README.md and docs/ tell a user to run exists, and its
`--help` exits 0. Commands are read from the ```bash blocks (continuation lines joined, comments dropped);
the script of a command is its first word that is a repository path ending in .py or .sh, after the last
`&&`. `scripts/install.sh` is checked to exist but not run (it takes no flags: it installs)."""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from tests.helpers import REPO

DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
NOT_RUN = {"scripts/install.sh"}
FENCE = re.compile(r"```(?:bash|sh|shell)\n(.*?)```", re.S)


def documented_commands() -> list[tuple[str, str]]:
    """[(doc file relative to the repo, command)] of every shell block in README.md and docs/."""
    commands = []
    for doc in DOC_FILES:
        for block in FENCE.findall(doc.read_text()):
            for command in block.replace("\\\n", " ").splitlines():
                command = command.split("#", 1)[0].strip() if command.lstrip().startswith("#") else command.strip()
                if command:
                    commands.append((str(doc.relative_to(REPO)), command))
    return commands


def script_of(command: str) -> str | None:
    """The repository script a command runs (`scripts/x.py`, `main_block_three_tier.py`), or None."""
    for word in command.split("&&")[-1].split():
        if word.endswith((".py", ".sh")) and not word.startswith(("-", "/")) and "=" not in word:
            return word
    return None


COMMANDS = documented_commands()
SCRIPTS = sorted({s for _, c in COMMANDS if (s := script_of(c))})


def test_the_docs_document_commands():
    assert len(COMMANDS) >= 30 and "main_block_three_tier.py" in SCRIPTS and "scripts/eval_tasks.py" in SCRIPTS


def test_every_documented_script_exists():
    missing = [(doc, c) for doc, c in COMMANDS if (s := script_of(c)) and not (REPO / s).is_file()]
    assert not missing, "documented commands whose script does not exist:\n" + "\n".join(f"{d}: {c}" for d, c in missing)


def _help(script: str) -> tuple[str, int, str]:
    argv = ["bash", script, "--help"] if script.endswith(".sh") else [sys.executable, script, "--help"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    return script, done.returncode, (done.stderr or done.stdout)[-400:]


def test_every_documented_script_answers_help():
    scripts = [s for s in SCRIPTS if s not in NOT_RUN and (REPO / s).is_file()]
    with ThreadPoolExecutor(max_workers=2) as pool:
        failed = [r for r in pool.map(_help, scripts) if r[1] != 0]
    assert not failed, "\n".join(f"{s}: rc={rc}: {tail}" for s, rc, tail in failed)
