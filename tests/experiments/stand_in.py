"""A stand-in interpreter for experiment-runner tests: the runner itself runs in real Python, each step's script
writes the outputs its marker lists (sound JSON) in milliseconds instead of loading a model.

The same stand-in (with the interpreter path written in) produced tests/experiments/fixtures/bash_runner/markers.
Options through the environment: STAND_IN_FAIL="script.py:STATUS" fails that script; STAND_IN_SLEEP="script.py"
makes it wait until killed; STAND_IN_ARGV=FILE appends each step's argv (JSON) to FILE.
"""

from __future__ import annotations

import os
from pathlib import Path

STAND_IN = '''#!{python}
import json, os, sys, time
REAL = {python!r}
script = os.path.basename(sys.argv[1])
argv = sys.argv[2:]
def arg(flag):
    return argv[argv.index(flag) + 1]
def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f)
if script == "run_experiments.py":  # the runner itself: real Python
    os.execv(REAL, [REAL, *sys.argv[1:]])
if os.environ.get("STAND_IN_ARGV"):
    with open(os.environ["STAND_IN_ARGV"], "a") as f:
        f.write(json.dumps(sys.argv[1:]) + "\\n")
fail = os.environ.get("STAND_IN_FAIL", "").split(":")
if fail[0] == script:
    print("stand-in: failing on purpose", file=sys.stderr)
    sys.exit(int(fail[1]))
if os.environ.get("STAND_IN_SLEEP") == script:
    print("stand-in: waiting", flush=True)
    time.sleep(60)
if script == "eval_tasks.py":
    write(arg("--output"), {{"tasks": ["wikitext2"], "metrics": {{"wikitext2": {{"ppl": 9.0}}}}, "counts": {{}}, "settings": {{}}}})
elif script == "main_block_three_tier.py":
    write(arg("--save") + "/results.json", {{"args": {{"calibration_dataset": arg("--calibration_dataset")}}, "sparsity": {{"sparsity": 0.4}}}})
    write(arg("--save_model") + "/config.json", {{"model_type": "llama"}})
elif script.startswith("finetune_"):
    out = arg("--output_dir")
    write(out + "/config.json", {{"model_type": "llama"}})
    write(out + "/finetune_results.json", {{"task": "squad", "model_name_or_path": arg("--model_name_or_path"), "data_args": {{}}}})
elif script == "summarize_experiments.py":
    out = arg("--out")
    open(out + "/results.png", "w").write("png")
    open(out + "/results.md", "w").write("expected: " + " ".join(argv[argv.index("--expect") + 1:]) + "\\n")
else:
    sys.exit(3)
'''


def stand_in_python(directory: Path, python: str) -> str:
    """Write the stand-in (real Python: `python`) into `directory` and return its path."""
    path = Path(directory) / "stand_in_python"
    path.write_text(STAND_IN.format(python=python))
    path.chmod(0o755)
    return str(path)


def clean_environment(**settings: str) -> dict[str, str]:
    """This environment without any runner setting or WANDA_* variable, plus `settings`."""
    from lib.experiments.settings import FIELDS

    env = {k: v for k, v in os.environ.items() if k not in FIELDS and not k.startswith("WANDA_")}
    return env | {k: str(v) for k, v in settings.items()}


def complete_checkpoint(path: Path, step: int) -> Path:
    """A Trainer checkpoint that lib.training.checkpoints.checkpoint_problem accepts (tiny, real formats)."""
    import json
    import zipfile

    import numpy as np
    from safetensors.numpy import save_file

    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    save_file({"w": np.zeros((2, 2), dtype=np.float32)}, str(path / "model.safetensors"))
    for name in ("optimizer.pt", "scheduler.pt"):
        with zipfile.ZipFile(path / name, "w") as archive:
            archive.writestr("archive/data.pkl", b"state")
    return path
