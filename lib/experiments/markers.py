"""The step markers of an experiment run (OUT/markers/), in the format the bash runner wrote, so that a run it
started resumes here:

    markers/<step>.done      line 1: the step's signature; line 2: "seconds N"; then "output PATH" per output
                             (PATH relative to OUT)
    markers/<step>.started   the signature of a step under way (removed when it finishes)

A signature is the command from its script on: the script's file name, then each argument quoted as bash's
`printf %q` quotes it, each followed by one space; an argument that is OUT or a path under it is spelled '$OUT'
+ the rest, so a moved OUT still matches and the interpreter or launcher before the script may change.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from lib.core.files import atomic_write_text

_BACKSLASHED = set(" !\"$&'()*,;<>?[\\]^`{|}")
_ANSI_C = {"\a": "\\a", "\b": "\\b", "\x1b": "\\E", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
           "\\": "\\\\", "'": "\\'"}


def bash_quote(word: str) -> str:
    """`word` as bash 5's `printf %q` writes it (in a UTF-8 locale): '' for empty, $'...' when it holds a control
    character, else each shell-special character backslashed ('#' at the start, '~' at the start or after = / :)."""
    if word == "":
        return "''"
    if any(ord(c) < 32 or ord(c) == 127 for c in word):
        return "$'" + "".join(_ANSI_C.get(c) or (f"\\{ord(c):03o}" if ord(c) < 32 or ord(c) == 127 else c)
                              for c in word) + "'"
    quoted = []
    for i, c in enumerate(word):
        special = (c in _BACKSLASHED or (c == "#" and i == 0)
                   or (c == "~" and (i == 0 or word[i - 1] in "=:")))
        quoted.append("\\" + c if special else c)
    return "".join(quoted)


def signature(command: Sequence[str], out: str) -> str:
    """The signature of `command` (see the module docstring): from the first word ending in .py on."""
    start = next((i for i, word in enumerate(command) if word.endswith(".py")), len(command))
    script, args = (command[start], command[start + 1:]) if start < len(command) else ("", ())
    words = [bash_quote(os.path.basename(script))]
    for word in args:
        if word == out:
            words.append("$OUT")
        elif word.startswith(out + "/"):
            words.append("$OUT" + bash_quote(word[len(out):]))
        else:
            words.append(bash_quote(word))
    return "".join(word + " " for word in words)


@dataclass(frozen=True)
class Marker:
    """A finished step's marker: its signature, wall seconds and outputs (relative to OUT)."""

    signature: str
    seconds: int | None
    outputs: tuple[str, ...]


def read_marker(path: str | Path) -> Marker:
    """The marker at `path` (a .done file)."""
    lines = Path(path).read_text().splitlines()
    seconds = next((int(line.split()[1]) for line in lines[1:2] if re.fullmatch(r"seconds \d+", line)), None)
    outputs = tuple(line[len("output "):] for line in lines if line.startswith("output "))
    return Marker(lines[0] if lines else "", seconds, outputs)


def marker_text(marker: Marker) -> str:
    return "".join([f"{marker.signature}\n", f"seconds {marker.seconds}\n", *(f"output {p}\n" for p in marker.outputs)])


def write_marker(path: str | Path, marker: Marker) -> None:
    """Write the .done marker (atomically: a marker is there whole or not at all)."""
    atomic_write_text(path, marker_text(marker))


def write_started(path: str | Path, signature: str) -> None:
    atomic_write_text(path, signature + "\n")


def read_signature(path: str | Path) -> str | None:
    """Line 1 of a marker or .started file; None when there is none."""
    try:
        return Path(path).read_text().split("\n", 1)[0]
    except FileNotFoundError:
        return None
