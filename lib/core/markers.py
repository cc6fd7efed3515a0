"""Which outputs are this toolkit's: markers and manifests.

A directory output holds the marker `MARKER_FILE` with its kind and a manifest of the entries this
toolkit wrote (name -> size and mtime_ns; for a sub-directory a digest of its files'); a JSON report
holds the key `MARKER_KEY`. Only an entry identical to its manifest record counts as ours, so a
marker planted in a foreign directory makes nothing deletable (`inspect_dir`). The rule that uses
them is `lib.core.outputs`.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from lib.core.files import atomic_write_text

MARKER_FILE = ".wanda_hybrid.json"
MARKER_KEY = "wanda_hybrid_output"


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
    atomic_write_text(Path(directory, MARKER_FILE), json.dumps(marker(kind, entries if entries is not None else {}),
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
class Existing:
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


def inspect_dir(path: Path) -> Existing:
    """Sort the entries of the directory `path` into ours (identical to the marker's manifest), changed and foreign."""
    found = read_marker(path)
    names = sorted(name for name in os.listdir(path) if name != MARKER_FILE)
    state = Existing(kind=(found or {}).get("kind"), marked=found is not None,
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
