"""The output rule: where a CLI may write, checked before any work; outputs installed atomically without
deleting what this toolkit did not write; write faults as one line.

- `claim_outputs(outputs, inputs, overwrite)`: the pre-flight, called first and held for the run. It
  refuses (one-line `OutputError`), even with `overwrite`: the current directory or one above it, the
  home directory or one above it, a directory holding a git work tree, a mount point, a path equal to,
  inside or containing an input (`run_inputs`: the model as resolved, the data, the toolkit's cache, a
  resume checkpoint) or another output, a file where a directory goes (or the reverse). Without
  `overwrite` also content that is not this toolkit's output of the same kind. Then: not enough free
  space for the outputs' `Output.size`, a place that cannot be written, a path another process is
  writing (an exclusive lock beside each path). Temporaries a dead process left beside a path are removed.
- `atomic_dir(path, kind)`: a temporary sibling directory, installed at `path` when the block succeeds;
  `write_output_json(path, data, kind)`: the same for one JSON report; `staged_entries(dir)` and
  `in_place_dir(output)` for a directory another library writes into (the Trainer's --output_dir).

Ownership. A directory output holds the marker `MARKER_FILE` with its kind and a manifest of the entries
this toolkit wrote (name -> size and mtime_ns; for a sub-directory a digest of its files'); a JSON report
holds the key `MARKER_KEY`. Only an entry identical to its manifest record counts as ours, so a marker
planted in a foreign directory makes nothing deletable. Installing a directory output at `path`:

- missing, empty, or our output of the same kind holding only its manifest's entries, unchanged: the new
  directory replaces it atomically (rename aside, rename in, remove the old one);
- our output of the same kind with other entries: the new entries are moved in, our earlier entries that
  the new output lacks are removed, every other entry is kept (a same-named one needs `overwrite`);
- another kind, or a directory this toolkit did not write: refused without `overwrite`; with it the new
  entries are moved in (each replaced same-named entry is logged), nothing else is touched and no
  marker is written there.

So `overwrite` (every CLI's `--overwrite`, the fine-tune CLIs' `--overwrite_output_dir`) replaces, never
deletes. Write faults (an OSError, or a safetensors / torch error reporting one) inside these blocks
become one `OutputError` line naming the path and the cause; the temporary is removed and the path is as
it was. Temporaries are `.NAME.partial-PID`, `.NAME.old-PID` and `.NAME.tmp-PID` beside the target, the
lock `.NAME.lock`. `kept_summary()` says which outputs this process finished (for an interrupted run).

A CLI adds an output in two places (see main_block_three_tier.py):

    outputs = [Output("--save", args.save, "results"), Output("--save_model", args.save_model, "model", size=n)]
    with claim_outputs(outputs, run_inputs(args.model, data_dir=args.data_dir), overwrite=args.overwrite):
        ...  # load, prune, evaluate
        with atomic_dir(args.save, "results", args.overwrite, "--save") as tmp:
            write_json(tmp / "results.json", report)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import resource
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

logger = logging.getLogger(__name__)

MARKER_FILE = ".wanda_hybrid.json"
MARKER_KEY = "wanda_hybrid_output"
_TEMPORARY = re.compile(r"\.(partial|old|tmp)-(\d+)$")
_LEGACY_TEMPORARY = re.compile(r"\.tmp(\d+)$")  # NAME.tmpPID: model-cache conversions of earlier versions
_EMBEDDED_ERRNO = re.compile(r"\(os error (\d+)\)|\[Errno (\d+)\]")  # safetensors' and Python's wording
_TORCH_WRITE_FAILURE = re.compile(r"unexpected pos|file write failed|PytorchStreamWriter failed")
_GIT_SEARCH_LIMIT = 100_000  # directories looked at for a .git below an output before giving up
_LOCKS: dict[Path, int] = {}  # target path (absolute) -> file descriptor of its held lock
_WRITTEN: dict[str, None] | None = None  # outputs finished in the current CLI run, in order ("--save out/r")


class OutputError(ValueError):
    """An output path that must not or cannot be written; the message says what to do."""


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


# ---------------------------------------------------------------- markers and manifests


def entry_identity(path: Path) -> dict[str, Any]:
    """Cheap identity of one directory entry: {"size", "mtime_ns"} of a file or link, {"tree"} of a directory
    (a digest of the relative paths, sizes and mtimes below it). A rename keeps it; a rewrite changes it."""
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        return {"size": info.st_size, "mtime_ns": info.st_mtime_ns}
    digest = hashlib.sha1()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(dirs + files):
            sub = os.lstat(os.path.join(root, name))
            size = 0 if stat.S_ISDIR(sub.st_mode) else sub.st_size
            digest.update(f"{os.path.relpath(os.path.join(root, name), path)}\0{size}\0{sub.st_mtime_ns}\n".encode())
    return {"tree": digest.hexdigest()}


def manifest(directory: str | Path, names: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """{entry name: entry_identity} for `names` (default: every entry but the marker) of `directory`."""
    directory = Path(directory)
    if names is None:
        names = [name for name in os.listdir(directory) if name != MARKER_FILE]
    return {name: entry_identity(directory / name) for name in sorted(names)}


def marker(kind: str, entries: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What identifies an output of this toolkit: {"tool", "kind", "written", "pid"} (+ "entries": a manifest)."""
    found = {"tool": "wanda_hybrid", "kind": kind, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pid": os.getpid()}
    if entries is not None:
        found["entries"] = dict(entries)
    return found


def write_marker(directory: str | Path, kind: str, entries: Mapping[str, Any] | None = None) -> None:
    """Mark `directory` as a `kind` output of this toolkit whose own entries are `entries` (a `manifest`)."""
    write_text_atomic(Path(directory, MARKER_FILE), json.dumps(marker(kind, entries if entries is not None else {}),
                                                               indent=1) + "\n")


def read_marker(path: str | Path) -> dict[str, Any] | None:
    """The marker of this toolkit's output at `path` (a directory's MARKER_FILE, a JSON report's MARKER_KEY), else None."""
    path = Path(path)
    try:
        if path.is_dir():
            found = json.loads((path / MARKER_FILE).read_text())
        elif path.suffix == ".json":
            found = json.loads(path.read_text()).get(MARKER_KEY)
        else:
            return None
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return None
    return found if isinstance(found, dict) else None


def is_own_output(path: str | Path) -> bool:
    """True for a directory holding MARKER_FILE or a JSON file holding MARKER_KEY (of any kind)."""
    return read_marker(path) is not None


def add_to_manifest(directory: str | Path, kind: str, names: Sequence[str]) -> None:
    """Record `names` (just written into `directory`) in its manifest, when it is a `kind` output of this toolkit."""
    found = read_marker(directory)
    if found is None or found.get("kind") != kind:
        return
    names = [name for name in names if os.path.lexists(Path(directory, name))]
    write_marker(directory, kind, {**(found.get("entries") or {}), **manifest(directory, names)})


@dataclass
class _Existing:
    """What a directory at an output path holds, judged by its marker."""

    kind: str | None = None  # the marker's kind; None without a marker
    marked: bool = False
    listed: bool = False  # the marker has a manifest (markers of earlier versions have none)
    ours: list[str] = field(default_factory=list)  # entries identical to their manifest record
    changed: list[str] = field(default_factory=list)  # manifest entries changed since
    foreign: list[str] = field(default_factory=list)  # every other entry

    @property
    def entries(self) -> list[str]:
        return self.ours + self.changed + self.foreign


def _inspect_dir(path: Path) -> _Existing:
    found = read_marker(path)
    names = sorted(name for name in os.listdir(path) if name != MARKER_FILE)
    state = _Existing(kind=(found or {}).get("kind"), marked=found is not None,
                      listed=isinstance((found or {}).get("entries"), dict))
    recorded = found["entries"] if state.listed else {}
    for name in names:
        if name not in recorded:
            state.foreign.append(name)
        elif recorded[name] == entry_identity(path / name):
            state.ours.append(name)
        else:
            state.changed.append(name)
    return state


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
    state = _inspect_dir(path)
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


def run_inputs(model: str | None = None, model_flag: str = "--model", data_dir: str | Path | None = None,
               extra: Mapping[str, Any] = {}) -> dict[str, Any]:
    """Every input of a run, for `claim_outputs` / `check_outputs`: {flag: path or list of paths}.

    The model as resolved (lib.models.model_input_paths: a local directory; a .gguf file or alias and its
    cache directory; a Hub id's download cache), the data directory (`data_dir`, else env WANDA_DATA_DIR),
    the toolkit's cache (lib.models.cache_root) and `extra` (e.g. {"--resume_from_checkpoint": path}).
    Nothing is converted or downloaded.
    """
    from lib.models import cache_root, model_input_paths

    inputs: dict[str, Any] = {}
    if model:
        inputs[model_flag] = model_input_paths(model)
    if data_dir:
        inputs["--data_dir"] = Path(data_dir)
    elif os.environ.get("WANDA_DATA_DIR"):
        inputs["WANDA_DATA_DIR"] = Path(os.environ["WANDA_DATA_DIR"])
    inputs["the toolkit's cache (WANDA_CACHE)"] = cache_root()
    inputs.update(extra)
    return inputs


def check_outputs(outputs: Sequence[Output], inputs: Mapping[str, Any] = {}, overwrite: bool = False) -> None:
    """The read-only part of `claim_outputs`: protected places, overlaps and existing content (OutputError)."""
    outputs = [o for o in outputs if o.path]
    check_conflicts(outputs, inputs)
    for output in outputs:
        problem = existing_problem(output, Path(output.path).expanduser(), overwrite)
        if problem:
            raise OutputError(problem)


# ---------------------------------------------------------------- free space and write faults


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: str | Path) -> int:
    """Bytes an unprivileged process may still write on the file system of `path` (or its nearest existing parent)."""
    info = os.statvfs(_existing_ancestor(Path(path).absolute()))
    return info.f_bavail * info.f_frsize


def _size_text(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def check_free_space(outputs: Sequence[Output]) -> None:
    """OutputError when the outputs' `size` estimates, summed per file system, exceed its free space."""
    needs: dict[int, tuple[Path, int, list[str]]] = {}
    for output in outputs:
        if output.path and output.size > 0:
            place = _existing_ancestor(Path(output.path).expanduser().absolute())
            device = os.stat(place).st_dev
            where, total, flags = needs.get(device, (place, 0, []))
            needs[device] = (where, total + output.size, flags + [f"{output.flag} {output.path}"])
    for where, total, flags in needs.values():
        free = free_bytes(where)
        if free < total:
            raise OutputError(f"not enough free space for {' and '.join(flags)}: about {_size_text(total)} needed, "
                              f"{_size_text(free)} free on the file system of {where}; free some space or choose "
                              "another place")


def _errno_text(code: int) -> str:
    text = os.strerror(code)
    return f"{text[:1].lower()}{text[1:]} ({errno.errorcode.get(code, code)})"


def _probable_errno(path: Path) -> int | None:
    """Why a write under `path` failed when the library did not say (torch.save): the file-size limit or a full disk."""
    if resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY:
        return errno.EFBIG
    if free_bytes(path) < 2**20:
        return errno.ENOSPC
    return None


def write_cause(err: BaseException, path: Path) -> str | None:
    """"no space left on device (ENOSPC)" for a write failure (an OSError, a safetensors or torch error
    reporting one) under `path`, None for any other exception."""
    code = err.errno if isinstance(err, OSError) else None
    if not code:
        match = _EMBEDDED_ERRNO.search(str(err))
        code = int(match.group(1) or match.group(2)) if match else None
    if not code and _TORCH_WRITE_FAILURE.search(str(err)):
        code = _probable_errno(path)
        if not code:
            return f"the write failed ({str(err).splitlines()[0]})"
    if not code:
        return None
    where = getattr(err, "filename", None)
    return _errno_text(code) + (f" at {where}" if where and Path(where) != path else "")


@contextlib.contextmanager
def write_faults(flag: str, path: Path, after: str | None = None) -> Iterator[None]:
    """Turn a write failure inside the block into one OutputError line: "cannot write FLAG PATH: CAUSE; AFTER"
    (AFTER by default: nothing was written, PATH is as it was). Other exceptions pass unchanged."""
    existed = os.path.lexists(path)
    try:
        yield
    except OutputError:
        raise
    except Exception as err:
        cause = write_cause(err, path)
        if cause is None:
            raise
        logger.debug("write failure under %s", path, exc_info=True)
        if after is None:
            after = f"nothing was written, {path} is as it was" if existed else "nothing was written"
        finished = f" (finished before it: {', '.join(_WRITTEN)})" if _WRITTEN else ""
        raise OutputError(f"cannot write {flag} {path}: {cause}; {after}{finished}") from None


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` to `.NAME.tmp-PID` beside `path`, then rename it over `path`; the temporary never survives a failure."""
    path = Path(path)
    tmp = _temporary(path, "tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def record_written(description: str) -> None:
    """Note an output the current run finished (shown by `kept_summary`); nothing outside `recording_outputs`."""
    if _WRITTEN is not None:
        _WRITTEN[description] = None


@contextlib.contextmanager
def recording_outputs() -> Iterator[None]:
    """Record the outputs finished inside the block (a CLI run) for `kept_summary` and the write-fault line."""
    global _WRITTEN
    _WRITTEN = {}
    try:
        yield
    finally:
        _WRITTEN = None


def kept_summary() -> str:
    """What an interrupted run leaves: the outputs it finished, or that nothing was written."""
    if not _WRITTEN:
        return "nothing was written; every output is as it was"
    return f"kept {', '.join(_WRITTEN)} (finished before it); nothing else was written"


# ---------------------------------------------------------------- temporaries and locks


def _temporary(path: Path, what: str) -> Path:
    return path.with_name(f".{path.name}.{what}-{os.getpid()}")


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


def _glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _temporaries(path: Path) -> Iterator[tuple[Path, str, int]]:
    """(temporary, "partial" | "old" | "tmp", pid) for each temporary named after `path` beside it."""
    for temp in path.parent.glob(f".{_glob_escape(path.name)}.*-*"):
        match = _TEMPORARY.search(temp.name)
        if match and temp.name[: match.start() + 1] == f".{path.name}.":
            yield temp, match.group(1), int(match.group(2))
    for temp in path.parent.glob(f"{_glob_escape(path.name)}.tmp*"):
        match = _LEGACY_TEMPORARY.search(temp.name)
        if match and temp.name[: match.start()] == path.name:
            yield temp, "tmp", int(match.group(1))


def remove_stale_temporaries(path: Path) -> None:
    """Delete the temporaries beside `path` whose process is gone (`.NAME.partial-PID`, `.NAME.tmp-PID`,
    `.NAME.old-PID`, and `NAME.tmpPID` of earlier cache conversions).

    A stale `.old-PID` while `path` is missing is the previous output of a run killed between its two
    renames: it is moved back to `path`. Call with the lock of `path` held.
    """
    for temp, what, pid in list(_temporaries(path)):
        if pid != os.getpid() and _pid_alive(pid):
            continue
        try:
            if what == "old" and not os.path.lexists(path):
                temp.rename(path)
                logger.warning("restored %s from %s (left by the interrupted process %d)", path, temp.name, pid)
            else:
                _remove(temp)
                logger.info("removed %s (left by the process %d, which has ended)", temp, pid)
        except OSError as err:  # cleaning up is a courtesy: never a reason to fail the run
            logger.warning("could not remove the stale %s: %s", temp, err)


def _acquire(path: Path, waiting: str | None = None) -> None:
    """Exclusive lock `.NAME.lock` beside `path` for this process. When another process holds it: OutputError,
    or with `waiting` that message is logged and the lock awaited."""
    lock = _lock_path(path)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.read(fd, 32).decode(errors="replace").strip() or "?"
                if waiting is None:
                    raise OutputError(f"{path} is being written by another process (pid {owner}); wait for it to "
                                      "finish or choose another path") from None
                logger.info("%s (pid %s)", waiting, owner)
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
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


@contextlib.contextmanager
def locked(path: str | Path, waiting: str) -> Iterator[Path]:
    """Hold the lock of `path` (waiting for another process that holds it, logging `waiting`), with the
    temporaries of dead processes beside it removed; yields the absolute path. Released (and its file
    removed) on exit."""
    path = Path(path).expanduser().absolute()
    if path in _LOCKS:
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    _acquire(path, waiting)
    try:
        remove_stale_temporaries(path)
        yield path
    finally:
        _release(path)


def _make_parents(path: Path) -> list[Path]:
    """mkdir -p the parent of `path`; returns the directories it created, deepest first."""
    created = []
    parent = path.parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    return created


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
                created += _make_parents(path)
                if path not in _LOCKS:
                    _acquire(path)
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


# ---------------------------------------------------------------- installing outputs


def _move_in(source: Path, target: Path, note: str = "") -> None:
    """Move the entry `source` to `target`, replacing a same-named entry there (logged with `note`)."""
    existed = os.path.lexists(target)
    if existed and (source.is_dir() or (target.is_dir() and not target.is_symlink())):
        old = _temporary(target, "old")
        _remove(old)
        target.rename(old)
        try:
            source.rename(target)
        except BaseException:
            old.rename(target)
            raise
        _remove(old)
    else:
        os.replace(source, target)
    if existed:
        (logger.warning if note else logger.info)("replaced %s%s", target, note)


def _swap(tmp: Path, path: Path) -> None:
    """Rename `tmp` to `path`, moving an existing `path` (empty, or wholly our earlier output) aside first and removing it after."""
    old = _temporary(path, "old")
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
        _remove(old)


def _merge(tmp: Path, path: Path, output: Output, state: _Existing, overwrite: bool) -> None:
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
        _remove(path / name)
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
    state = _inspect_dir(path)
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
    with _claimed(output, overwrite) as target:
        tmp = _temporary(target, "partial")
        try:
            with write_faults(flag, target):
                _remove(tmp)
                tmp.mkdir()
                yield tmp
                write_marker(tmp, kind, manifest(tmp))
                _install(tmp, target, output, overwrite)
        finally:
            _remove(tmp)  # gone after a swap; only the marker left after a merge
        record_written(f"{flag} {target}")


def write_output_json(path: str | Path, data: dict, kind: str, overwrite: bool = False, flag: str = "--output") -> None:
    """Write a JSON report (with MARKER_KEY added) atomically under the output rule; see `atomic_dir`.

    It replaces a missing path or a `kind` report of this toolkit; anything else only with `overwrite` (logged).
    """
    from lib.results import json_text

    output = Output(flag, path, kind, is_file=True)
    with _claimed(output, overwrite) as target:
        problem = existing_problem(output, target, overwrite)
        if problem:
            raise OutputError(f"{problem} (it appeared while this run was working; nothing was written)")
        found = read_marker(target) if os.path.lexists(target) else None
        foreign = os.path.lexists(target) and (found is None or found.get("kind") != kind)
        with write_faults(flag, target):
            write_text_atomic(target, json_text({**data, MARKER_KEY: marker(kind)}))
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
    tmp = _temporary(target, "partial")
    try:
        with write_faults(output.flag, target, after):
            _remove(tmp)
            tmp.mkdir()
            yield tmp
            state = _inspect_dir(target) if target.is_dir() else _Existing()
            ours = state.ours if state.kind == output.kind else []
            for name in sorted(os.listdir(tmp)):
                _move_in(tmp / name, target / name, "" if name in ours else f" ({output.force}; not written by this toolkit)")
    finally:
        _remove(tmp)


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
        state = _inspect_dir(path)
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
