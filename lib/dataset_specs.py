"""The dataset registry: one `DatasetSpec` per dataset, read by calibration (lib.data), the readers
(lib.data_sources), fine-tuning (lib.finetune_data), evaluation (lib.tasks), the experiment summary
(lib.experiments) and the CLIs' --help.

Two kinds:
- "text": running text. Calibration draws seqlen windows ("windows": random windows of the joined
  train text, Wanda's WikiText-2 recipe; "documents": a random long-enough document, then a window,
  Wanda's C4 recipe); evaluation is perplexity over the joined evaluation text.
- "examples": records (SQuAD v2, GSM8K, BoolQ). Calibration packs `calibration_text(example)`;
  fine-tuning trains on `prompt(example)` + `target(example)`; with an `evaluate` it is an
  evaluation task (--tasks) whose `metrics` the experiment summary shows.

Adding a dataset, or an evaluation task, is one `register(DatasetSpec(...))`, from here or from
outside `lib`. Whatever needs torch is imported inside small functions, so this module stays light.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

from lib.core.registry import register_unique
from lib.prompts import boolq_prompt, gsm8k_calibration_text, gsm8k_prompt, gsm8k_target, squad_prompt, squad_target

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
    corpus: text only; corpus(role, data_dir) -> lib.data_sources.Corpus for role "calibration" or "evaluation".
    eval_separator / eval_windows: text only; how the evaluation texts are joined, and the cap of the
        evaluation text in seqlen windows (None: all of it).
    files: examples only; {"train" | "eval": (local file name under <data_dir>/<name>/, Hub split)}.
    read_file: examples only; path -> examples, for a whole-file format (SQuAD's JSON). Without it the
        local file is JSON Lines and `parse_record(record, "file:line")` turns each line into an example.
    from_hub: examples only; one Hub row (dict) -> an example.
    calibration_text / prompt / target: example -> str (prompt and target: None when not fine-tunable).
    evaluate: examples only; (model, tokenizer, examples, **options) -> a task report (`lib.task_report`:
        {"metrics", "counts", "per_example", "samples"}); None: not an evaluation task. The options are
        batch_size, log_samples, progress, and what the next three fields declare.
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
    evaluate: Callable[..., dict] | None = None
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


# ---------------------------------------------------------------- the built-in datasets


def _wikitext2_corpus(role: str, data_dir: Path | None):
    from lib.data_sources import wikitext2_lines

    return wikitext2_lines("train" if role == "calibration" else "test", data_dir)


def _c4_corpus(role: str, data_dir: Path | None):
    from lib.data_sources import c4_documents

    return c4_documents(role, data_dir)


def _squad_file(path: Path) -> list[dict]:
    from lib.data_sources import read_squad_json

    return read_squad_json(path)


def _task_eval(name: str) -> Callable[..., dict]:
    """`lib.task_evals.<name>` as a spec's `evaluate`, imported when first called (this module stays torch-free)."""
    def evaluate(model, tokenizer, examples: list[dict], **options) -> dict:
        from lib import task_evals

        return getattr(task_evals, name)(model, tokenizer, examples, **options)

    return evaluate


def _gsm8k_record(record: dict, where: str) -> dict:
    answer = require_field(record, "answer", str, where)
    if "####" not in answer:
        raise DataError(f"{where}: field 'answer' has no '#### <number>' line (official GSM8K schema)")
    return {"question": require_field(record, "question", str, where), "answer": answer}


def _boolq_record(record: dict, where: str) -> dict:
    return {
        "question": require_field(record, "question", str, where),
        "passage": require_field(record, "passage", str, where),
        "answer": require_field(record, "answer", bool, where),
    }


register(DatasetSpec(
    "wikitext2", "WikiText2", "text", "wikitext2/wiki.{train,valid,test}.raw", ("wikitext", "wikitext-2-raw-v1"),
    corpus=_wikitext2_corpus, sampling="windows", eval_separator="\n\n",
))
register(DatasetSpec(
    "c4", "C4", "text", "c4/*.json[l][.gz] with 'train' or 'validation' in the file name", ("allenai/c4", None),
    corpus=_c4_corpus, sampling="documents", eval_separator=" ", eval_windows=256,  # Wanda: 256 x seqlen tokens
))
register(DatasetSpec(
    "squad", "SQuAD", "examples", "squad/{train,dev}-v2.0.json", ("rajpurkar/squad_v2", None),
    files={"train": ("train-v2.0.json", "train"), "eval": ("dev-v2.0.json", "validation")},
    read_file=_squad_file,
    from_hub=lambda r: {"id": r["id"], "title": r["title"], "context": r["context"], "question": r["question"],
                        "answers": list(r["answers"]["text"])},
    calibration_text=lambda ex: squad_prompt(ex["context"], ex["question"]),
    prompt=lambda ex: squad_prompt(ex["context"], ex["question"]), target=lambda ex: squad_target(ex["answers"]),
    evaluate=_task_eval("evaluate_squad"), answer_nll=True, max_new_tokens=32,
    metrics=(Metric("exact", "SQuAD EM"), Metric("f1", "SQuAD F1"), Metric("answer_nll", "SQuAD NLL ↓", "nll")),
    behaviour=(Metric("HasAns_f1", "SQuAD F1 answerable"), Metric("NoAns_exact", "SQuAD EM unanswerable"),
               Metric("no_answer_rate", "SQuAD no-answer rate"),
               Metric("HasAns_answer_nll", "SQuAD NLL answerable ↓", "nll"),
               Metric("NoAns_answer_nll", "SQuAD NLL unanswerable ↓", "nll")),
))
register(DatasetSpec(
    "gsm8k", "GSM8K", "examples", "gsm8k/{train,test}.jsonl", ("openai/gsm8k", "main"),
    files={"train": ("train.jsonl", "train"), "eval": ("test.jsonl", "test")},
    parse_record=_gsm8k_record, from_hub=lambda r: {"question": r["question"], "answer": r["answer"]},
    calibration_text=lambda ex: gsm8k_calibration_text(ex["question"], ex["answer"]),
    prompt=lambda ex: gsm8k_prompt(ex["question"]), target=lambda ex: gsm8k_target(ex["answer"]),
    evaluate=_task_eval("evaluate_gsm8k"), answer_nll=True, max_new_tokens=256, fewshot=True,
    metrics=(Metric("strict_accuracy", "GSM8K acc (strict)"), Metric("flexible_accuracy", "GSM8K acc (flex)"),
             Metric("answer_nll", "GSM8K NLL ↓", "nll")),
))
register(DatasetSpec(
    "boolq", "BoolQ", "examples", "boolq/{train,dev}.jsonl", ("google/boolq", None),
    files={"train": ("train.jsonl", "train"), "eval": ("dev.jsonl", "validation")},
    parse_record=_boolq_record,
    from_hub=lambda r: {"question": r["question"], "passage": r["passage"], "answer": bool(r["answer"])},
    calibration_text=lambda ex: boolq_prompt(ex["passage"], ex["question"]),
    evaluate=_task_eval("evaluate_boolq"), metrics=(Metric("accuracy", "BoolQ acc"),),
    behaviour=(Metric("yes_rate", "BoolQ yes rate"),),
))
