"""The output rule: where a CLI may write, checked before any work, and the claim a run holds on its outputs.

- `claim_outputs(outputs, inputs, overwrite)`: the pre-flight, called first and held for the run. It
  refuses (one-line `OutputError`), even with `overwrite`: the current directory or one above it, the
  home directory or one above it, a directory holding a git work tree, a mount point, a path equal to,
  inside or containing an input (`lib.models.loading.run_inputs`: the model as resolved, the data, the
  toolkit's cache, a resume checkpoint) or another output, a file where a directory goes (or the
  reverse). Without `overwrite` also content that is not this toolkit's output of the same kind (judged
  by its marker: `lib.core.markers`). Then: not enough free space for the outputs' `Output.size`, a
  place that cannot be written, a path another process is writing (an exclusive lock beside each
  path). Temporaries a dead process left beside a path are removed (`lib.core.files`).
- The outputs are then written by `lib.core.writes` (`atomic_dir`, `write_output_json`, `staged_entries`,
  `in_place_dir`), which installs them atomically without deleting what this toolkit did not write.

So `overwrite` (every CLI's `--overwrite`, the fine-tune CLIs' `--overwrite_output_dir`) replaces, never
deletes. Write faults (an OSError, or a safetensors / torch error reporting one) become one `OutputError`
line naming the path and the cause. Temporaries are `.NAME.partial-PID`, `.NAME.old-PID` and
`.NAME.tmp-PID` beside the target, the lock `.NAME.lock` (`lib.core.files`, whose `kept_summary()` says
which outputs this process finished, for an interrupted run).

A CLI adds an output in two places (see main_block_three_tier.py):

    outputs = [Output("--save", args.save, "results"), Output("--save_model", args.save_model, "model", size=n)]
    with claim_outputs(outputs, run_inputs(args.model, data_dir=args.data_dir), overwrite=args.overwrite):
        ...  # load, prune, evaluate
        with atomic_dir(args.save, "results", args.overwrite, "--save") as tmp:
            write_json(tmp / "results.json", report)
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from lib.core.errors import OutputError
from lib.core.files import (acquire_lock, existing_ancestor, free_bytes, holds_lock, make_parents, release_lock,
                            remove_stale_temporaries, size_text, write_cause)
from lib.core.markers import inspect_dir, read_marker

logger = logging.getLogger(__name__)

_GIT_SEARCH_LIMIT = 100_000  # directories looked at for a .git below an output before giving up


@dataclass(frozen=True)
class Output:
    """One path a CLI writes.

    `flag` names it in messages, `kind` goes into its marker, `force` is the flag that lets it write into
    foreign content, `size` the bytes it needs at least (checked against the free space; 0: not checked),
    `may_contain` the input flags allowed inside it (a fine-tune's own resume checkpoint).
    """

    flag: str
    path: str | Path | None
    kind: str
    is_file: bool = False
    force: str = "--overwrite"
    size: int = 0
    may_contain: tuple[str, ...] = field(default=())


# ---------------------------------------------------------------- what may be written where


def existing_problem(output: Output, path: Path, overwrite: bool = False) -> str | None:
    """Why the existing `path` must not receive `output` (with or without `overwrite`), or None."""
    if not os.path.lexists(path):
        return None
    what = f"{output.flag} {path}"
    if output.is_file:
        if path.is_dir():
            return f"{what} is a directory; name a file (e.g. {path / 'report.json'})"
        found = read_marker(path)
        if overwrite or (found is not None and found.get("kind") == output.kind):
            return None
        owner = (f"a {found.get('kind')} report of this toolkit, not a {output.kind} one" if found is not None
                 else "a file this toolkit did not write")
        return f"{what} is {owner}; choose another path, or pass {output.force} to replace it"
    if not path.is_dir():
        return f"{what} is an existing file; choose another path (a directory output never replaces a file)"
    state = inspect_dir(path)
    into = f"pass {output.force} to write into it (same-named entries are replaced; nothing else is deleted)"
    if not state.entries or overwrite:
        return None
    if state.marked and state.kind == output.kind:
        if not state.listed:
            return (f"{what} was written by an earlier version of this toolkit (its marker lists no files); "
                    f"choose another path, or {into}")
        if state.changed:
            return (f"{what}/{state.changed[0]} changed since this toolkit wrote it; move it away, "
                    f"or pass {output.force} to replace it")
        return None
    if state.marked:
        return f"{what} is a {state.kind} output of this toolkit, not a {output.kind} one; choose another path, or {into}"
    return (f"{what} holds {len(state.entries)} entries this toolkit did not write (e.g. {state.entries[0]!r}); "
            f"choose another path, or {into}")


def _overlap(a: Path, b: Path) -> str | None:
    if a == b:
        return "is the same path as"
    if b in a.parents:
        return "is inside"
    if a in b.parents:
        return "contains"
    return None


def _git_work_tree(path: Path) -> Path | None:
    """A `.git` in `path` or below it (searched without following links; gives up after _GIT_SEARCH_LIMIT directories)."""
    for count, (root, dirs, files) in enumerate(os.walk(path)):
        if ".git" in dirs or ".git" in files:
            return Path(root) / ".git"
        if count >= _GIT_SEARCH_LIMIT:
            break
    return None


def protected_problem(output: Output, path: Path) -> str | None:
    """Why the resolved `path` must never receive an output, even with --overwrite, or None."""
    what = f"{output.flag} {path}"
    inside = "name a new directory inside it for the output"
    cwd = Path.cwd().resolve()
    if path == cwd or path in cwd.parents:
        return f"{what} is the current directory or contains it; {inside}"
    home = Path.home().resolve()
    if path == home or path in home.parents:
        return f"{what} is the home directory or contains it; {inside}"
    if path.is_dir():
        if os.path.ismount(path):
            return f"{what} is a mount point: a rename cannot replace it; choose a directory inside it"
        repo = _git_work_tree(path)
        if repo is not None:
            return f"{what} holds a git work tree ({repo}); choose another directory"
    return None


def _input_paths(inputs: Mapping[str, Any]) -> list[tuple[str, Path]]:
    """(flag, resolved path) of every local input: Path values always, strings only when they exist (not Hub ids)."""
    found = []
    for flag, values in inputs.items():
        for value in values if isinstance(values, (list, tuple)) else [values]:
            if value is None or value == "":
                continue
            if isinstance(value, Path) or Path(value).expanduser().exists():
                found.append((flag, Path(value).expanduser().resolve()))
    return found


def check_conflicts(outputs: Sequence[Output], inputs: Mapping[str, Any] = {}) -> None:
    """Raise OutputError for a protected output path (`protected_problem`), or one that equals, is inside or
    contains an input path or another output. `inputs`: {flag: path or list of paths} (see `run_inputs`)."""
    resolved = [(o, Path(o.path).expanduser().resolve()) for o in outputs if o.path]
    for output, path in resolved:
        problem = protected_problem(output, path)
        if problem:
            raise OutputError(problem)
    local_inputs = _input_paths(inputs)
    for i, (output, path) in enumerate(resolved):
        others = [(o.flag, p, ()) for o, p in resolved[i + 1:]] + [(f, p, output.may_contain) for f, p in local_inputs]
        for other_flag, other, allowed in others:
            relation = _overlap(path, other)
            if relation and not (relation == "contains" and other_flag in allowed):
                raise OutputError(f"{output.flag} {path} {relation} {other_flag} {other}: a write there would "
                                  "replace it; use separate paths")


def check_outputs(outputs: Sequence[Output], inputs: Mapping[str, Any] = {}, overwrite: bool = False) -> None:
    """The read-only part of `claim_outputs`: protected places, overlaps and existing content (OutputError)."""
    outputs = [o for o in outputs if o.path]
    check_conflicts(outputs, inputs)
    for output in outputs:
        problem = existing_problem(output, Path(output.path).expanduser(), overwrite)
        if problem:
            raise OutputError(problem)


# ---------------------------------------------------------------- free space


def check_free_space(outputs: Sequence[Output]) -> None:
    """OutputError when the outputs' `size` estimates, summed per file system, exceed its free space."""
    needs: dict[int, tuple[Path, int, list[str]]] = {}
    for output in outputs:
        if output.path and output.size > 0:
            place = existing_ancestor(Path(output.path).expanduser().absolute())
            device = os.stat(place).st_dev
            where, total, flags = needs.get(device, (place, 0, []))
            needs[device] = (where, total + output.size, flags + [f"{output.flag} {output.path}"])
    for where, total, flags in needs.values():
        free = free_bytes(where)
        if free < total:
            raise OutputError(f"not enough free space for {' and '.join(flags)}: about {size_text(total)} needed, "
                              f"{size_text(free)} free on the file system of {where}; free some space or choose "
                              "another place")


# ---------------------------------------------------------------- the claim


def _announce(output: Output, overwrite: bool) -> None:
    """Log, before the work, that `overwrite` lets `output` write into content this toolkit did not write."""
    path = Path(output.path).expanduser()
    if overwrite and existing_problem(output, path) is not None:
        logger.warning("%s %s: %s given; what this run writes replaces same-named entries there, every other "
                       "entry is kept", output.flag, path, output.force)


@contextlib.contextmanager
def claim_outputs(outputs: Sequence[Output], inputs: Mapping[str, Any] = {}, overwrite: bool = False) -> Iterator[None]:
    """Pre-flight for a CLI, before loading anything: check, lock and clean every output; hold for the run.

    Raises OutputError (one line) as the module docstring lists. Outputs with path None are skipped.
    Parent directories are created; those created here are removed again on failure. Locks are released
    (and their files removed) on exit.
    """
    outputs = [o for o in outputs if o.path]
    check_conflicts(outputs, inputs)
    claimed: list[Path] = []
    created: list[Path] = []
    try:
        for output in outputs:
            path = Path(output.path).expanduser().absolute()
            try:
                created += make_parents(path)
                if not holds_lock(path):
                    acquire_lock(path)
                    claimed.append(path)
            except OSError as err:
                raise OutputError(f"cannot write {output.flag} {path}: {write_cause(err, path) or err}") from None
            remove_stale_temporaries(path)
        check_outputs(outputs, overwrite=overwrite)  # under the locks: no writer of ours is mid-swap
        check_free_space(outputs)
        for output in outputs:
            _announce(output, overwrite)
        yield
    finally:
        for path in claimed:
            release_lock(path)
        for directory in created:
            with contextlib.suppress(OSError):
                directory.rmdir()  # only if still empty


@contextlib.contextmanager
def claimed_output(output: Output, overwrite: bool) -> Iterator[Path]:
    """`claim_outputs` for one output, unless this process already holds it."""
    path = Path(output.path).expanduser().absolute()
    if holds_lock(path):
        yield path
    else:
        with claim_outputs([output], overwrite=overwrite):
            yield path
