"""Packaging: the wheel holds every module of lib (package discovery, pyproject.toml), and an installed wheel
runs a zero-shot task with no source tree in sight."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO, SAMPLE_DATA

LIMIT = 2  # rows per zero-shot task

# run by the wheel's interpreter: `lib` must come from its own site-packages
ZERO_SHOT = """
import json, sys
import lib
from lib.eval.runner import evaluate_tasks
from lib.models.loading import load_model

model, tokenizer = load_model(sys.argv[1], dtype="float32", device="cpu")
report = evaluate_tasks(model, tokenizer, ["zeroshot"], data_dir=sys.argv[2], limit=int(sys.argv[3]), progress=False)
modules = sorted({m.__file__ for name, m in sys.modules.items() if name.startswith("lib.") and m.__file__})
print(json.dumps({"lib": lib.__file__, "modules": modules, "counts": report["counts"]["zeroshot"],
                  "metrics": report["metrics"]["zeroshot"]}))
"""


def build_wheel(out: Path) -> Path:
    """The wheel of a copy of pyproject.toml, requirements.txt and lib/ (so the build writes nothing here)."""
    source = out / "source"
    source.mkdir()
    for name in ("pyproject.toml", "requirements.txt"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "lib", source / "lib", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w",
                    str(out / "dist"), str(source)], check=True, capture_output=True, text=True, timeout=120)
    (wheel,) = (out / "dist").glob("wanda_hybrid-*.whl")
    return wheel


def fresh_venv(path: Path, wheel: Path) -> Path:
    """A venv holding only the wheel (installed with --no-deps), then one .pth line to this interpreter's
    site-packages so torch and transformers resolve; that directory's own .pth files (the editable install of
    this checkout) are not read. Returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    python = path / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "--quiet", str(wheel)], check=True, capture_output=True, text=True, timeout=120)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "outer_site_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


@pytest.mark.slow
def test_the_wheel_runs_a_zero_shot_task_outside_the_source_tree(tmp_path, tiny_llama_dir, tokenizer):
    wheel = build_wheel(tmp_path)
    packaged = {name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".py")}
    assert packaged == {str(p.relative_to(REPO)) for p in (REPO / "lib").rglob("*.py")}
    python = fresh_venv(tmp_path / "venv", wheel)
    elsewhere = tmp_path / "elsewhere"  # the working directory: no lib/ beside it
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "WANDA_DATA_DIR")}
    env["WANDA_CACHE"] = str(tmp_path / "cache")
    result = subprocess.run([str(python), "-c", ZERO_SHOT, str(tiny_llama_dir), str(SAMPLE_DATA), str(LIMIT)],
                            cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    installed = json.loads(result.stdout.splitlines()[-1])
    venv = str((tmp_path / "venv").resolve())
    assert installed["lib"].startswith(venv)
    assert all(path.startswith(venv) for path in installed["modules"])
    assert any(path.endswith("/lib/eval/tasks/hellaswag.py") for path in installed["modules"])  # a task module

    from lib.eval.runner import evaluate_tasks  # the same evaluation from this checkout
    from lib.models.loading import load_model

    model, tok = load_model(str(tiny_llama_dir), dtype="float32", device="cpu")
    here = evaluate_tasks(model, tok, ["zeroshot"], data_dir=SAMPLE_DATA, limit=LIMIT, progress=False)
    assert installed["counts"] == here["counts"]["zeroshot"] and len(installed["counts"]) == 8
    assert set(installed["counts"].values()) == {LIMIT}
    assert installed["metrics"] == pytest.approx(here["metrics"]["zeroshot"], nan_ok=True)
