"""Installing outputs under the output rule (`lib.core.outputs`): a directory or a JSON report appears whole or not
at all, and nothing this toolkit did not write is deleted.

- `atomic_dir(path, kind)`: a temporary sibling directory, installed at `path` when the block succeeds;
  `write_output_json(path, data, kind)`: the same for one JSON report; `staged_entries(output)` and
  `in_place_dir(output)` for a directory another library writes into (the Trainer's --output_dir).

Installing a directory output at `path`:

- missing, empty, or our output of the same kind holding only its manifest's entries, unchanged: the new
  directory replaces it atomically (rename aside, rename in, remove the old one);
- our output of the same kind with other entries: the new entries are moved in, our earlier entries that
  the new output lacks are removed, every other entry is kept (a same-named one needs `overwrite`);
- another kind, or a directory this toolkit did not write: refused without `overwrite`; with it the new
  entries are moved in (each replaced same-named entry is logged), nothing else is touched and no
  marker is written there.

Write faults inside these blocks become one `OutputError` line (`lib.core.files.write_faults`); the
temporary is removed and the path is as it was.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator

from lib.core.errors import OutputError
from lib.core.files import (atomic_write_text, record_written, remove_path, remove_stale_temporaries, temporary_path,
                            write_faults)
from lib.core.markers import Existing, MARKER_FILE, MARKER_KEY, inspect_dir, manifest, marker, read_marker, write_marker
from lib.core.outputs import Output, claimed_output, existing_problem
from lib.core.results import json_text

logger = logging.getLogger(__name__)


def _move_in(source: Path, target: Path, note: str = "") -> None:
    """Move the entry `source` to `target`, replacing a same-named entry there (logged with `note`)."""
    existed = os.path.lexists(target)
    if existed and (source.is_dir() or (target.is_dir() and not target.is_symlink())):
        old = temporary_path(target, "old")
        remove_path(old)
        target.rename(old)
        try:
            source.rename(target)
        except BaseException:
            old.rename(target)
            raise
        remove_path(old)
    else:
        os.replace(source, target)
    if existed:
        (logger.warning if note else logger.info)("replaced %s%s", target, note)


def _swap(tmp: Path, path: Path) -> None:
    """Rename `tmp` to `path`, moving an existing `path` (empty, or wholly our earlier output) aside first and removing it after."""
    old = temporary_path(path, "old")
    moved = os.path.lexists(path)
    if moved:
        path.rename(old)
    try:
        tmp.rename(path)
    except BaseException:
        if moved and not os.path.lexists(path):
            old.rename(path)
        raise
    if moved:
        remove_path(old)


def _merge(tmp: Path, path: Path, output: Output, state: Existing, overwrite: bool) -> None:
    """Move the entries of `tmp` into the existing directory `path` that holds entries not ours (module docstring)."""
    names = sorted(name for name in os.listdir(tmp) if name != MARKER_FILE)
    own = state.marked and state.kind == output.kind
    ours = set(state.ours) if own else set()  # entries of another kind's output count as foreign here
    clashes = [name for name in names if os.path.lexists(path / name) and name not in ours]
    if clashes and not overwrite:
        raise OutputError(f"{output.flag} {path / clashes[0]} exists and this toolkit did not write it; nothing was "
                          f"written; move it away, or pass {output.force} to replace it")
    for name in names:
        remove_stale_temporaries(path / name)
        _move_in(tmp / name, path / name, "" if name in ours else f" ({output.force}; not written by this toolkit)")
    removed = sorted(ours - set(names))
    for name in removed:
        remove_path(path / name)
        logger.info("removed %s: an earlier output of this toolkit that this run does not write", path / name)
    if own:
        write_marker(path, output.kind, manifest(path, names))
    kept = [name for name in state.entries if name not in names and name not in removed]
    if kept:
        (logger.info if own else logger.warning)("%s %s: wrote %d entries and kept the %d others there (e.g. %r)",
                                                 output.flag, path, len(names), len(kept), kept[0])


def _install(tmp: Path, path: Path, output: Output, overwrite: bool) -> None:
    """Put the finished directory `tmp` (with its marker) at `path` under the output rule, re-checked now."""
    problem = existing_problem(output, path, overwrite)
    if problem:
        raise OutputError(f"{problem} (it appeared while this run was working; nothing was written)")
    if not os.path.lexists(path):
        _swap(tmp, path)
        return
    state = inspect_dir(path)
    if not state.entries or (state.kind == output.kind and state.listed and not state.changed and not state.foreign):
        if state.entries:
            logger.info("replacing %s, an earlier %s output of this toolkit (%d entries)", path, output.kind,
                        len(state.entries))
        _swap(tmp, path)
    else:
        _merge(tmp, path, output, state, overwrite)


@contextlib.contextmanager
def atomic_dir(path: str | Path, kind: str = "output", overwrite: bool = False, flag: str = "output") -> Iterator[Path]:
    """Yield a temporary sibling directory that is installed at `path` only when the block succeeds.

    Under the output rule (module docstring): the finished directory gets MARKER_FILE (`kind` and a
    manifest of its entries) and replaces only what is ours; with foreign entries there it is merged in,
    which `overwrite` allows. A failed or interrupted block (or a write fault: one OutputError line) leaves
    `path` as it was and removes the temporary. Locks `path` unless `claim_outputs` already holds it.
    """
    output = Output(flag, path, kind)
    with claimed_output(output, overwrite) as target:
        tmp = temporary_path(target, "partial")
        try:
            with write_faults(flag, target):
                remove_path(tmp)
                tmp.mkdir()
                yield tmp
                write_marker(tmp, kind, manifest(tmp))
                _install(tmp, target, output, overwrite)
        finally:
            remove_path(tmp)  # gone after a swap; only the marker left after a merge
        record_written(f"{flag} {target}")


def write_output_json(path: str | Path, data: dict, kind: str, overwrite: bool = False, flag: str = "--output") -> None:
    """Write a JSON report (with MARKER_KEY added) atomically under the output rule; see `atomic_dir`.

    It replaces a missing path or a `kind` report of this toolkit; anything else only with `overwrite` (logged).
    """
    output = Output(flag, path, kind, is_file=True)
    with claimed_output(output, overwrite) as target:
        problem = existing_problem(output, target, overwrite)
        if problem:
            raise OutputError(f"{problem} (it appeared while this run was working; nothing was written)")
        found = read_marker(target) if os.path.lexists(target) else None
        foreign = os.path.lexists(target) and (found is None or found.get("kind") != kind)
        with write_faults(flag, target):
            atomic_write_text(target, json_text({**data, MARKER_KEY: marker(kind)}))
        if foreign:
            logger.warning("replaced %s (%s; it was not a %s report of this toolkit)", target, output.force, kind)
        record_written(f"{flag} {target}")


@contextlib.contextmanager
def staged_entries(output: Output, after: str | None = None) -> Iterator[Path]:
    """A temporary sibling of the directory `output.path` (`.NAME.partial-PID`) to write into; when the block
    succeeds its entries are moved into the directory, each replacing a same-named entry (logged, as a
    warning when it was not this toolkit's), nothing else touched.

    For a directory already claimed and allowed to be written into (`in_place_dir`). A failed block leaves
    the directory as it was; a write fault becomes one OutputError line ending in `after`.
    """
    target = Path(output.path).expanduser().absolute()
    tmp = temporary_path(target, "partial")
    try:
        with write_faults(output.flag, target, after):
            remove_path(tmp)
            tmp.mkdir()
            yield tmp
            state = inspect_dir(target) if target.is_dir() else Existing()
            ours = state.ours if state.kind == output.kind else []
            for name in sorted(os.listdir(tmp)):
                _move_in(tmp / name, target / name, "" if name in ours else f" ({output.force}; not written by this toolkit)")
    finally:
        remove_path(tmp)


@contextlib.contextmanager
def in_place_dir(output: Output) -> Iterator[Path]:
    """A directory output that a library writes in place (the Trainer's --output_dir), claimed by `claim_outputs`.

    It is marked as this toolkit's (MARKER_FILE with `output.kind`) only when it is new, empty or already a
    `kind` output; into a directory with other content (allowed by `output.force`) no marker is written.
    When the block fails, a directory marked here that holds nothing but the marker loses the marker again
    and, when this block created it, is removed.
    """
    path = Path(output.path).expanduser().absolute()
    created = not os.path.lexists(path)
    with write_faults(output.flag, path):
        path.mkdir(parents=True, exist_ok=True)
        state = inspect_dir(path)
        fresh = not state.entries and not state.marked
        if fresh:
            write_marker(path, output.kind)
    try:
        yield path
    except BaseException:
        if fresh and os.listdir(path) == [MARKER_FILE]:
            (path / MARKER_FILE).unlink()
            if created:
                path.rmdir()
        raise
