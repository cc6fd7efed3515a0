"""The dataset registry: one `DatasetSpec` per dataset, read by calibration (lib.data.calibration), the readers
(lib.data.sources), fine-tuning (lib.training.data), evaluation (lib.eval.runner), the experiment summary
(lib.experiments.summary) and the CLIs' --help. The built-in specs are `lib.data.builtin`'s.

Two kinds:
- "text": running text. Calibration draws seqlen windows ("windows": random windows of the joined
  train text, Wanda's WikiText-2 recipe; "documents": a random long-enough document, then a window,
  Wanda's C4 recipe); evaluation is perplexity over the joined evaluation text.
- "examples": records (SQuAD v2, GSM8K, BoolQ). Calibration packs `calibration_text(example)`;
  fine-tuning trains on `prompt(example)` + `target(example)`; with an `evaluate` it is an
  evaluation task (--tasks) whose `metrics` the experiment summary shows.

Adding a dataset, or an evaluation task, is one `register(DatasetSpec(...))`, from `lib.data.builtin` or
from outside `lib`. Data only: no torch, no readers, no evaluation code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

from lib.core.registry import register_unique

KINDS = ("text", "examples")
SAMPLING = ("windows", "documents")
SPLITS = ("train", "eval")


class Metric(NamedTuple):
    """One metric of a task report as the experiment summary shows it.

    key: its key in the report's metrics. header: the column header. kind: "pct" (a fraction shown
    as 100 x value), "nll" (3 decimals) or "ppl" (2 decimals, log axis in the figure).
    """

    key: str
    header: str
    kind: str = "pct"


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

    name: the CLI spelling (--calibration_dataset, --tasks, --dataset_name). display: its name in tables.
    layout: the local files under --data_dir, as the error messages show them.
    hub: (Hub id, config) loaded when no --data_dir is given.
    corpus: text only; corpus(role, data_dir) -> lib.data.sources.Corpus for role "calibration" or "evaluation".
    eval_separator / eval_windows: text only; how the evaluation texts are joined, and the cap of the
        evaluation text in seqlen windows (None: all of it).
    files: examples only; {"train" | "eval": (local file name under <data_dir>/<name>/, Hub split)}.
    read_file: examples only; path -> examples, for a whole-file format (SQuAD's JSON). Without it the
        local file is JSON Lines and `parse_record(record, "file:line")` turns each line into an example.
    from_hub: examples only; one Hub row (dict) -> an example.
    calibration_text / prompt / target: example -> str (prompt and target: None when not fine-tunable).
    evaluate: examples only; (model, tokenizer, examples, **options) -> a task report (`lib.eval.report`:
        {"metrics", "counts", "per_example", "samples"}), or the name of a built-in evaluator of
        `lib.eval.tasks.examples` (EVALUATORS: the evaluation layer binds it, so no evaluation code is
        imported here); None: not an evaluation task. The options are batch_size, log_samples, progress,
        and what the next three fields declare.
    answer_nll: evaluate scores a gold-answer NLL on `nll_examples` (--nll_limit applies).
    max_new_tokens: evaluate generates; its default length, passed as `max_new_tokens` (--max_new_tokens
        overrides it). None: it does not generate.
    fewshot: evaluate takes `fewshot_examples`, the first --num_fewshot train examples.
    metrics: what the experiment summary's tables show (text datasets: their perplexity, implied);
        behaviour: what a degenerate model does instead of answering, shown in a table of its own.
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
    evaluate: Callable[..., dict] | str | None = None
    answer_nll: bool = False
    max_new_tokens: int | None = None
    fewshot: bool = False
    metrics: tuple[Metric, ...] = ()
    behaviour: tuple[Metric, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"dataset {self.name!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.kind == "text" and (self.corpus is None or self.sampling not in SAMPLING):
            raise ValueError(f"text dataset {self.name!r} needs corpus and a sampling in {', '.join(SAMPLING)}")
        if self.kind == "examples" and (set(self.files) != set(SPLITS) or self.calibration_text is None
                                        or (self.read_file is None) == (self.parse_record is None)):
            raise ValueError(f"example dataset {self.name!r} needs files for {', '.join(SPLITS)}, calibration_text "
                             "and exactly one of read_file / parse_record")
        declared = self.answer_nll or self.fewshot or self.max_new_tokens is not None or self.metrics or self.behaviour
        if (self.evaluate is not None or declared) and (self.kind != "examples" or self.evaluate is None):
            raise ValueError(f"dataset {self.name!r}: only an example dataset evaluates, and answer_nll, "
                             "max_new_tokens, fewshot, metrics and behaviour describe its evaluate")

    @property
    def finetunable(self) -> bool:
        return self.kind == "text" or (self.prompt is not None and self.target is not None)

    @property
    def summary_metrics(self) -> tuple[Metric, ...]:
        """The metrics of the summary's main table: a text dataset's perplexity, else `metrics`."""
        return (Metric("ppl", f"{self.display} PPL ↓", "ppl"),) if self.kind == "text" else self.metrics


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


def evaluation_tasks(answer_nll: bool = False) -> tuple[str, ...]:
    """The example datasets with an `evaluate` (only those with a gold-answer NLL when `answer_nll`)."""
    return tuple(name for name, spec in DATASETS.items()
                 if spec.evaluate is not None and (spec.answer_nll or not answer_nll))


def display_name(name: str) -> str:
    """'squad' -> 'SQuAD'; an unknown name is shown as it is."""
    return DATASETS[name].display if name in DATASETS else name
