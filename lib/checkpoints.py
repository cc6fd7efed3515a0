"""Trainer checkpoints: which `checkpoint-N` directories are complete, and --resume_from_checkpoint."""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

CHECKPOINT_STATE = "trainer_state.json"
CHECKPOINT_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
CHECKPOINT_ZIPS = ("optimizer.pt", "scheduler.pt")  # torch.save zip archives the Trainer needs to resume exactly
RESUME_LATEST = ("latest", "true", "True")


def checkpoint_problem(path: Path) -> str | None:
    """Why the Trainer checkpoint directory `path` cannot be resumed from, or None when it is complete.

    Checks what a kill during `_save_checkpoint` leaves broken, cheaply: trainer_state.json parses,
    the weights file is non-empty with a readable safetensors header, optimizer.pt and
    scheduler.pt are complete zip archives (torch.save's format; a truncated one has no end record).
    """
    import zipfile

    if not path.is_dir():
        return "is not a directory"
    try:
        json.loads((path / CHECKPOINT_STATE).read_text())
    except (OSError, ValueError) as err:
        return f"has no readable {CHECKPOINT_STATE} ({err.__class__.__name__})"
    weights = next((path / name for name in CHECKPOINT_WEIGHTS if (path / name).is_file()), None)
    if weights is None or weights.stat().st_size == 0:
        return f"has no model weights ({' / '.join(CHECKPOINT_WEIGHTS)}) or an empty one"
    if weights.name == "model.safetensors":
        from safetensors import safe_open

        try:
            with safe_open(weights, "pt") as f:
                f.keys()
        except Exception as err:  # safetensors raises its own error types for a truncated header
            return f"has an unreadable {weights.name} ({err.__class__.__name__})"
    for name in CHECKPOINT_ZIPS:
        if not (path / name).is_file() or not zipfile.is_zipfile(path / name):
            return f"has a missing, empty or truncated {name}"
    return None


def latest_complete_checkpoint(output_dir: Path) -> Path | None:
    """The highest-step complete `checkpoint-N` under `output_dir`; broken ones above it are logged and skipped."""
    steps = sorted((int(p.name.split("-")[1]), p) for p in output_dir.glob("checkpoint-*")
                   if p.name.split("-")[1].isdigit())
    for _, path in reversed(steps):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        logger.warning("skipping the incomplete checkpoint %s: it %s", path, problem)
    return None


class ResumeError(ValueError):
    """--resume_from_checkpoint names a checkpoint that cannot be resumed from."""


def resolve_resume(value: str | None, output_dir: str) -> str | None:
    """--resume_from_checkpoint: a checkpoint path (must be complete), or `latest` (the latest complete one
    under --output_dir; none: start from scratch). Raises ValueError naming a broken explicit checkpoint."""
    if value is None:
        return None
    if value in RESUME_LATEST:
        latest = latest_complete_checkpoint(Path(output_dir))
        if latest is None:
            logger.info("no complete checkpoint under %s: training from the start", output_dir)
            return None
        logger.info("resuming from %s, the latest complete checkpoint", latest)
        return str(latest)
    problem = checkpoint_problem(Path(value))
    if problem:
        raise ResumeError(f"--resume_from_checkpoint {value} {problem}: pass a complete checkpoint, or "
                         "`latest` for the latest complete one under --output_dir")
    return value

