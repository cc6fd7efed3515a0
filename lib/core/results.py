"""JSON results files and run metadata (environment, git commit) and a named wall-clock timer."""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

from lib.core.files import atomic_write_text

logger = logging.getLogger(__name__)


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically (`lib.core.files.atomic_write`) with stable formatting."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json_text(data))


def json_text(data: Any) -> str:
    """The JSON text every results file uses: indented, insertion order, tensors and paths converted."""
    return json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n"


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def git_commit() -> str | None:
    """The checkout's commit hash (with '-dirty' when modified), or None outside git."""
    root = Path(__file__).resolve().parents[2]  # lib/core/results.py -> the checkout
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def environment_info() -> dict[str, Any]:
    """Library versions, Python, platform and git commit for a results file."""
    import torch
    import transformers

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "git_commit": git_commit(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


class Timer:
    """Accumulating named wall-clock timers: `with timer("calibration"): ...`; `timer.seconds` is a dict."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
