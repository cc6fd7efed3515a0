"""Files written safely: THE atomic writer, temporaries and their removal, locks, and write faults as one line.

- `atomic_write(path, write)` / `atomic_write_text(path, text)`: write a temporary `.NAME.tmp-PID` beside
  `path`, then rename it over `path`; the temporary never survives a failure. Every single file this
  toolkit writes in place of another goes through it (JSON reports, markers, the token cache).
- Temporaries are `.NAME.partial-PID`, `.NAME.old-PID` and `.NAME.tmp-PID` beside the target;
  `remove_stale_temporaries` deletes those of processes that are gone.
- `locked(path)`: the exclusive lock `.NAME.lock` beside a path (one writer per path across processes).
- `write_faults(flag, path)`: a write failure (an OSError, or a safetensors / torch error reporting one)
  becomes one `OutputError` line naming the path and the cause.
- `recording_outputs()` / `record_written` / `kept_summary()`: what a CLI run finished, for the line an
  interrupted or failed run ends with.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import resource
import shutil
from pathlib import Path
from typing import Callable, Iterator

from lib.core.errors import OutputError

logger = logging.getLogger(__name__)

_TEMPORARY = re.compile(r"\.(partial|old|tmp)-(\d+)$")
_LEGACY_TEMPORARY = re.compile(r"\.tmp(\d+)$")  # NAME.tmpPID: model-cache conversions of earlier versions
_EMBEDDED_ERRNO = re.compile(r"\(os error (\d+)\)|\[Errno (\d+)\]")  # safetensors' and Python's wording
_TORCH_WRITE_FAILURE = re.compile(r"unexpected pos|file write failed|PytorchStreamWriter failed")
_LOCKS: dict[Path, int] = {}  # target path (absolute) -> file descriptor of its held lock
_WRITTEN: dict[str, None] | None = None  # outputs finished in the current CLI run, in order ("--save out/r")


# ---------------------------------------------------------------- free space and write faults


def existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: str | Path) -> int:
    """Bytes an unprivileged process may still write on the file system of `path` (or its nearest existing parent)."""
    info = os.statvfs(existing_ancestor(Path(path).absolute()))
    return info.f_bavail * info.f_frsize


def size_text(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


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


# ---------------------------------------------------------------- the atomic writer


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """THE atomic writer: `write(tmp)` fills the temporary `.NAME.tmp-PID` beside `path`, which is then renamed
    over `path`; the temporary never survives a failure (the exception propagates)."""
    path = Path(path)
    tmp = temporary_path(path, "tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` atomically (`atomic_write`)."""
    atomic_write(path, lambda tmp: tmp.write_text(text))


# ---------------------------------------------------------------- what a run finished


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


def temporary_path(path: Path, what: str) -> Path:
    """This process's temporary `.NAME.WHAT-PID` beside `path` (WHAT: partial, old or tmp)."""
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


def remove_path(path: Path) -> None:
    """Remove a file, link or directory tree; a missing path is fine."""
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
                remove_path(temp)
                logger.info("removed %s (left by the process %d, which has ended)", temp, pid)
        except OSError as err:  # cleaning up is a courtesy: never a reason to fail the run
            logger.warning("could not remove the stale %s: %s", temp, err)


def acquire_lock(path: Path, waiting: str | None = None) -> None:
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


def release_lock(path: Path) -> None:
    """Release this process's lock of `path` (taken by `acquire_lock`) and remove its file."""
    fd = _LOCKS.pop(path, None)
    if fd is not None:
        _lock_path(path).unlink(missing_ok=True)  # while still holding it, so no one locks a removed file
        os.close(fd)


def holds_lock(path: Path) -> bool:
    """Whether this process holds the lock of the absolute `path`."""
    return path in _LOCKS


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
    acquire_lock(path, waiting)
    try:
        remove_stale_temporaries(path)
        yield path
    finally:
        release_lock(path)


def make_parents(path: Path) -> list[Path]:
    """mkdir -p the parent of `path`; returns the directories it created, deepest first."""
    created = []
    parent = path.parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    return created
