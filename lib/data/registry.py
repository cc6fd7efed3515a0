"""The dataset registry: one `DatasetSpec` per dataset, read by calibration (lib.data.calibration), the readers
(lib.data.sources), fine-tuning (lib.training.data), evaluation (lib.eval: every task names a dataset) and the
CLIs' --help. The built-in specs are `lib.data.builtin`'s.

Two kinds:
- "text": running text. Calibration draws seqlen windows ("windows": random windows of the joined
  train text, Wanda's WikiText-2 recipe; "documents": a random long-enough document, then a window,
  Wanda's C4 recipe); evaluation is perplexity over the joined evaluation text.
- "examples": records (SQuAD v2, GSM8K, BoolQ, the zero-shot sets). With `calibration_text` a dataset is a
  calibration source (packs `calibration_text(example)`); with `prompt` and `target` it is fine-tunable
  (`prompt(example)` + `target(example)`); its "eval" split is what the evaluation tasks that name it score.

Adding a dataset is one `register(DatasetSpec(...))`, from `lib.data.builtin` or from outside `lib`. Data
only: no torch, no readers, no evaluation (how a task scores a dataset is lib.eval.tasks').
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lib.core.registry import register_unique

KINDS = ("text", "examples")
SAMPLING = ("windows", "documents")
SPLITS = ("train", "eval")


class DataError(ValueError):
    """Missing, unreachable or malformed data; the message names the file (and line) and the fix."""


def require_field(record: Any, name: str, kind: type, where: str):
    """record[name], checked to be a `kind`; a DataError naming `where` otherwise."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object with field {name!r}, got {type(record).__name__}")
    value = record.get(name)
    if not isinstance(value, kind):
        got = "missing" if name not in record else f"a {type(value).__name__}"
        raise DataError(f"{where}: field {name!r} is {got}, expected a {kind.__name__} (official schema)")
    return value


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the toolkit knows about one dataset.

    name: the CLI spelling (--calibration_dataset, --dataset_name; the evaluation tasks' `dataset`).
    display: its name in tables. layout: the local files under --data_dir, as the error messages show them.
    hub: (Hub id, config) loaded when no --data_dir is given.
    corpus: text only; corpus(role, data_dir) -> lib.data.sources.Corpus for role "calibration" or "evaluation".
    eval_separator / eval_windows: text only; how the evaluation texts are joined, and the cap of the
        evaluation text in seqlen windows (None: all of it).
    files: examples only; {"eval" (required) | "train": (local file name under <data_dir>/<name>/, Hub split)}.
    read_file: examples only; path -> examples, for a whole-file format (SQuAD's JSON). Without it the
        local file is JSON Lines and `parse_record(record, "file:line")` turns each line into an example.
    from_hub: examples only; one Hub row (dict) -> an example (None: rows in the local schema, `parse_record`ed).
    calibration_text / prompt / target: example -> str; None when the dataset is no calibration source /
        not fine-tunable (both need a "train" file).
    """

    name: str
    display: str
    kind: str
    layout: str
    hub: tuple[str, str | None]
    corpus: Callable[[str, Path | None], Any] | None = None
    sampling: str = "windows"
    eval_separator: str = "\n\n"
    eval_windows: int | None = None
    files: dict[str, tuple[str, str]] = field(default_factory=dict)
    read_file: Callable[[Path], list[dict]] | None = None
    parse_record: Callable[[dict, str], dict] | None = None
    from_hub: Callable[[dict], dict] | None = None
    calibration_text: Callable[[dict], str] | None = None
    prompt: Callable[[dict], str] | None = None
    target: Callable[[dict], str] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"dataset {self.name!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.kind == "text" and (self.corpus is None or self.sampling not in SAMPLING):
            raise ValueError(f"text dataset {self.name!r} needs corpus and a sampling in {', '.join(SAMPLING)}")
        if self.kind == "examples" and ("eval" not in self.files or not set(self.files) <= set(SPLITS)
                                        or (self.read_file is None) == (self.parse_record is None)):
            raise ValueError(f"example dataset {self.name!r} needs files for eval (and train), and exactly one of "
                             "read_file / parse_record")
        if self.kind == "examples" and (self.calibration_text or self.prompt) and "train" not in self.files:
            raise ValueError(f"example dataset {self.name!r}: calibration_text and prompt need files for train")

    @property
    def finetunable(self) -> bool:
        return self.kind == "text" or (self.prompt is not None and self.target is not None)

    @property
    def calibration_source(self) -> bool:
        """Calibration can draw from it: running text, or examples with a calibration text."""
        return self.kind == "text" or self.calibration_text is not None


DATASETS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    """Add `spec` to the registry (a second spec with the same name is an error)."""
    return register_unique(DATASETS, spec.name, spec, "dataset")


def names(kind: str | None = None) -> tuple[str, ...]:
    """Registered dataset names in registration order, optionally of one kind."""
    return tuple(name for name, spec in DATASETS.items() if kind is None or spec.kind == kind)


def get(name: str, kind: str | None = None) -> DatasetSpec:
    """The spec of `name`; a one-line ValueError listing the choices when there is none (of that kind)."""
    spec = DATASETS.get(name)
    if spec is None or (kind is not None and spec.kind != kind):
        what = {"text": "text dataset", "examples": "task"}.get(kind, "dataset")
        raise ValueError(f"{what} {name!r} is not one of {', '.join(names(kind))}")
    return spec


def calibration_sources() -> tuple[str, ...]:
    """The registered datasets calibration can draw from (see DatasetSpec.calibration_source), in order."""
    return tuple(name for name, spec in DATASETS.items() if spec.calibration_source)


def display_name(name: str) -> str:
    """'squad' -> 'SQuAD'; an unknown name is shown as it is."""
    return DATASETS[name].display if name in DATASETS else name
