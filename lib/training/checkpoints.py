"""Trainer checkpoints: which `checkpoint-N` directories are complete, and --resume_from_checkpoint."""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

CHECKPOINT_STATE = "trainer_state.json"
CHECKPOINT_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
CHECKPOINT_ZIPS = ("optimizer.pt", "scheduler.pt")  # torch.save zip archives the Trainer needs to resume exactly
RNG_STATES = "rng_state*.pth"  # optional (the Trainer warns when absent), but loaded when present
RESUME_LATEST = ("latest", "true", "True")


def checkpoint_problem(path: Path) -> str | None:
    """Why the Trainer checkpoint directory `path` cannot be resumed from, or None when it is complete.

    Checks what a kill during `_save_checkpoint` or a damaged disk leaves broken: trainer_state.json
    parses and holds global_step, the weights file is non-empty with a readable safetensors header
    that covers the file, optimizer.pt, scheduler.pt and any rng_state*.pth are complete zip archives
    (torch.save's format) whose members match their CRC-32 (a flipped byte loads silently otherwise;
    reading them costs about a second per GB).
    """
    if not path.is_dir():
        return "is not a directory"
    try:
        state = json.loads((path / CHECKPOINT_STATE).read_text())
    except (OSError, ValueError) as err:
        return f"has no readable {CHECKPOINT_STATE} ({err.__class__.__name__})"
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return f"has a {CHECKPOINT_STATE} without global_step"
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
        if not (path / name).is_file():
            return f"has a missing, empty or truncated {name}"
    for archive in [path / name for name in CHECKPOINT_ZIPS] + sorted(path.glob(RNG_STATES)):
        problem = zip_problem(archive)
        if problem:
            return f"has {problem} {archive.name}"
    return None


def zip_problem(path: Path) -> str | None:
    """What is wrong with the torch.save archive `path` (e.g. "a corrupt (CRC mismatch in MEMBER)"), or None."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return "a missing, empty or truncated"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        return f"an unreadable ({err.__class__.__name__})"
    return None if bad is None else f"a corrupt (CRC mismatch in {bad})"


def latest_complete_checkpoint(output_dir: Path) -> Path | None:
    """The highest-step complete `checkpoint-N` under `output_dir`; broken ones above it are logged and skipped."""
    steps = sorted((int(p.name.split("-")[1]), p) for p in output_dir.glob("checkpoint-*")
                   if p.name.split("-")[1].isdigit())
    for _, path in reversed(steps):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        logger.warning("skipping the incomplete checkpoint %s: it %s", path, problem)
    if steps:
        logger.warning("none of the %d checkpoints under %s is complete", len(steps), output_dir)
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

