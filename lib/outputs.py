"""The output rule: where a CLI may write, checked before any work, and atomic replacement.

Every results / model / report path a CLI writes goes through this module:

- `claim_outputs(outputs, inputs, overwrite)`: the pre-flight, called first and held for the run.
  It refuses (one-line `OutputError`) an output that is a file where a directory goes (or the
  reverse), an existing directory or file this toolkit did not write, a path equal to, inside or
  containing an input (the model) or another output, and a place that cannot be written. It
  takes an exclusive lock beside each path (a second writer gets an error at once) and removes
  temporaries that a dead process left beside it.
- `atomic_dir(path, kind)`: yields a temporary sibling directory that replaces `path` when the
  block succeeds; `write_output_json(path, data, kind)`: the same for one JSON report file.

An output counts as this toolkit's own when it carries a marker: the file `MARKER_FILE` inside a
directory, the key `MARKER_KEY` in a JSON report. Only such an output, an empty directory or a
missing path is replaced; `overwrite=True` (the CLIs' `--overwrite`) replaces anything else.
Temporaries are `.NAME.partial-PID` and `.NAME.old-PID` beside the target, the lock `.NAME.lock`.

A CLI adds an output in two places (see main_block_three_tier.py):

    outputs = [Output("--save", args.save, "results"), Output("--save_model", args.save_model, "model")]
    with claim_outputs(outputs, inputs={"--model": args.model}, overwrite=args.overwrite):
        ...  # load, prune, evaluate
        with atomic_dir(args.save, "results", args.overwrite, "--save") as tmp:
            write_json(tmp / "results.json", report)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

logger = logging.getLogger(__name__)

MARKER_FILE = ".wanda_hybrid.json"
MARKER_KEY = "wanda_hybrid_output"
_TEMPORARY = re.compile(r"\.(partial|old|tmp)-(\d+)$")
_LOCKS: dict[Path, int] = {}  # target path (absolute) -> file descriptor of its held lock


class OutputError(ValueError):
    """An output path that must not or cannot be written; the message says what to do."""


@dataclass(frozen=True)
class Output:
    """One path a CLI writes: `flag` names it in messages, `kind` goes into its marker; `force` is how to override."""

    flag: str
    path: str | Path | None
    kind: str
    is_file: bool = False
    force: str = "pass --overwrite to replace it"


def marker(kind: str) -> dict[str, Any]:
    """What identifies an output of this toolkit: {"tool", "kind", "written", "pid"}."""
    return {"tool": "wanda_hybrid", "kind": kind, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pid": os.getpid()}


def write_marker(directory: str | Path, kind: str) -> None:
    """Mark `directory` as an output of this toolkit (for outputs written in place, e.g. a Trainer's)."""
    Path(directory, MARKER_FILE).write_text(json.dumps(marker(kind)) + "\n")


def is_own_output(path: str | Path) -> bool:
    """True for a directory holding MARKER_FILE or a JSON file holding MARKER_KEY."""
    path = Path(path)
    if path.is_dir():
        return (path / MARKER_FILE).is_file()
    if path.suffix != ".json":
        return False
    try:
        return MARKER_KEY in json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, TypeError):
        return False


def existing_problem(output: Output, path: Path) -> str | None:
    """Why `path` must not be replaced without --overwrite, or None (missing, empty dir, or our own output)."""
    if not os.path.lexists(path):
        return None
    what = f"{output.flag} {path}"
    if output.is_file and path.is_dir():
        return f"{what} is a directory; name a file (e.g. {path / 'report.json'})"
    if not output.is_file and not path.is_dir():
        return f"{what} is an existing file; choose another path, or {output.force}"
    if is_own_output(path):
        return None
    if path.is_dir():
        entries = sorted(p.name for p in path.iterdir())
        if not entries:
            return None
        return (f"{what} holds {len(entries)} entries this toolkit did not write (e.g. {entries[0]!r}); "
                f"choose another path, or {output.force}")
    return f"{what} is a file this toolkit did not write; choose another path, or {output.force}"


def _overlap(a: Path, b: Path) -> str | None:
    if a == b:
        return "is the same path as"
    if b in a.parents:
        return "is inside"
    if a in b.parents:
        return "contains"
    return None


def check_conflicts(outputs: Sequence[Output], inputs: Mapping[str, str | Path | None] = {}) -> None:
    """Raise OutputError when an output equals, is inside or contains an input path or another output.

    Inputs that do not exist locally (Hub ids, aliases) are ignored.
    """
    resolved = [(o.flag, Path(o.path).expanduser().resolve()) for o in outputs if o.path]
    local_inputs = [(flag, Path(p).expanduser().resolve()) for flag, p in inputs.items()
                    if p and Path(p).expanduser().exists()]
    for i, (flag, path) in enumerate(resolved):
        for other_flag, other in resolved[i + 1:] + local_inputs:
            relation = _overlap(path, other)
            if relation:
                raise OutputError(f"{flag} {path} {relation} {other_flag} {other}: a write there would replace it; "
                                  "use separate paths")


def _lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temporaries(path: Path) -> None:
    """Delete `.NAME.partial-PID` / `.tmp-PID` / `.old-PID` beside `path` whose process is gone.

    A stale `.old-PID` while `path` is missing is the previous output of a run killed between
    its two renames: it is moved back to `path`. Call with the lock of `path` held.
    """
    prefix = f".{path.name}."
    for temp in path.parent.glob(f".{_glob_escape(path.name)}.*-*"):
        match = _TEMPORARY.search(temp.name)
        if not match or temp.name[: match.start() + 1] != prefix:
            continue
        pid = int(match.group(2))
        if pid != os.getpid() and _pid_alive(pid):
            continue
        try:
            if match.group(1) == "old" and not os.path.lexists(path):
                temp.rename(path)
                logger.warning("restored %s from %s (left by the interrupted process %d)", path, temp.name, pid)
            else:
                _remove(temp)
                logger.info("removed %s (left by the process %d, which has ended)", temp, pid)
        except OSError as err:  # cleaning up is a courtesy: never a reason to fail the run
            logger.warning("could not remove the stale %s: %s", temp, err)


def _glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _acquire(path: Path) -> None:
    """Exclusive lock `.NAME.lock` beside `path` for this process; OutputError when another process holds it."""
    lock = _lock_path(path)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise OutputError(f"{path} is being written by another process (pid {owner}); wait for it to finish "
                              "or choose another path") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:  # else the previous holder removed the file between our open and flock: retry
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _LOCKS[path] = fd


def _release(path: Path) -> None:
    fd = _LOCKS.pop(path, None)
    if fd is not None:
        _lock_path(path).unlink(missing_ok=True)  # while still holding it, so no one locks a removed file
        os.close(fd)


def _make_parents(path: Path) -> list[Path]:
    """mkdir -p the parent of `path`; returns the directories it created, deepest first."""
    created = []
    parent = path.parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    return created


def check_outputs(outputs: Sequence[Output], inputs: Mapping[str, str | Path | None] = {},
                  overwrite: bool = False) -> None:
    """The read-only part of `claim_outputs`: overlaps and existing content (OutputError), no lock, no writes."""
    outputs = [o for o in outputs if o.path]
    check_conflicts(outputs, inputs)
    for output in outputs:
        path = Path(output.path).expanduser()
        problem = existing_problem(output, path)
        if problem and (not overwrite or output.is_file and path.is_dir()):
            raise OutputError(problem)


@contextlib.contextmanager
def claim_outputs(outputs: Sequence[Output], inputs: Mapping[str, str | Path | None] = {},
                  overwrite: bool = False) -> Iterator[None]:
    """Pre-flight for a CLI, before loading anything: check, lock and clean every output; hold for the run.

    Raises OutputError (one line) for overlapping paths, existing content that is not this toolkit's
    (unless `overwrite`), an unwritable location, or a path another process is writing. Outputs with
    path None are skipped. Parent directories are created; those created here are removed again on
    failure. Locks are released (and their files removed) on exit.
    """
    outputs = [o for o in outputs if o.path]
    check_conflicts(outputs, inputs)
    claimed: list[Path] = []
    created: list[Path] = []
    try:
        for output in outputs:
            path = Path(output.path).expanduser().absolute()
            try:
                created += _make_parents(path)
                if path not in _LOCKS:
                    _acquire(path)
                    claimed.append(path)
            except OSError as err:
                raise OutputError(f"cannot write {output.flag} {path}: {err.strerror or err}") from None
            remove_stale_temporaries(path)
        check_outputs(outputs, overwrite=overwrite)  # under the locks: no writer of ours is mid-swap
        yield
    finally:
        for path in claimed:
            _release(path)
        for directory in created:
            with contextlib.suppress(OSError):
                directory.rmdir()  # only if still empty


@contextlib.contextmanager
def _claimed(output: Output, overwrite: bool) -> Iterator[Path]:
    """`claim_outputs` for one output, unless this process already holds it."""
    path = Path(output.path).expanduser().absolute()
    if path in _LOCKS:
        yield path
    else:
        with claim_outputs([output], overwrite=overwrite):
            yield path


def _replace(tmp: Path, path: Path, output: Output, overwrite: bool) -> None:
    """Rename `tmp` over `path` under the output rule (re-checked now: the path may have changed meanwhile)."""
    problem = existing_problem(output, path)
    if problem and not overwrite:
        _remove(tmp)
        raise OutputError(f"{problem} (it appeared while this run was working; nothing was written)")
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    moved = False
    if os.path.lexists(path) and not output.is_file:
        path.rename(old)
        moved = True
    try:
        os.replace(tmp, path) if output.is_file else tmp.rename(path)
    except OSError as err:
        _remove(tmp)
        if moved and not os.path.lexists(path):
            old.rename(path)
        raise OutputError(f"cannot write {output.flag} {path}: {err.strerror or err}") from None
    if moved:
        _remove(old)


@contextlib.contextmanager
def atomic_dir(path: str | Path, kind: str = "output", overwrite: bool = False, flag: str = "output") -> Iterator[Path]:
    """Yield a temporary sibling directory that replaces `path` only when the block succeeds.

    Under the output rule (see the module docstring): the finished directory gets MARKER_FILE
    (`kind` in it) and replaces only a missing path, an empty directory or an earlier output of
    this toolkit, unless `overwrite`. An interrupted or failed block leaves `path` as it was and
    removes the temporary. Locks `path` for the block unless `claim_outputs` already holds it.
    """
    output = Output(flag, path, kind)
    with _claimed(output, overwrite) as target:
        tmp = target.with_name(f".{target.name}.partial-{os.getpid()}")
        _remove(tmp)
        tmp.mkdir()
        try:
            yield tmp
            write_marker(tmp, kind)
        except BaseException:
            _remove(tmp)
            raise
        _replace(tmp, target, output, overwrite)


def write_output_json(path: str | Path, data: dict, kind: str, overwrite: bool = False, flag: str = "--output") -> None:
    """Write a JSON report (with MARKER_KEY added) atomically under the output rule; see `atomic_dir`."""
    output = Output(flag, path, kind, is_file=True)
    with _claimed(output, overwrite) as target:
        tmp = target.with_name(f".{target.name}.partial-{os.getpid()}")
        try:
            from lib.results import json_text

            tmp.write_text(json_text({**data, MARKER_KEY: marker(kind)}))
        except BaseException:
            _remove(tmp)
            raise
        _replace(tmp, target, output, overwrite)
