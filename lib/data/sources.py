"""Where calibration and evaluation text comes from: local files or the Hugging Face Hub.

Readers return plain records (strings, dicts) plus an `origin` string that changes whenever the
underlying file's bytes change (a content hash), so that token caches can be keyed on it. A file
that is not UTF-8, or a task file without examples, is a DataError naming it. Tokenization and sampling live
in `lib.data.calibration`.

Local copies sit under one data directory, named as the official releases name them:

    wikitext2/wiki.{train,valid,test}.raw
    c4/*.json[l][.gz]              one JSON object per line; "train" / "validation" in the file name
    squad/{train,dev}-v2.0.json
    gsm8k/{train,test}.jsonl
    boolq/{train,dev}.jsonl
    <zero-shot set>/validation.jsonl   one Hub row per line (rte, hellaswag, winogrande, arc_easy, ...)

Without a data directory the `datasets` library (imported lazily) loads the Hub copies. Names, layouts,
Hub ids and record parsers come from the dataset registry (lib.data.registry).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from lib.core.paths import chosen_data_dir
from lib.data import registry
from lib.data.registry import DataError, require_field

logger = logging.getLogger(__name__)

C4_HUB_FILES = {  # the shards Wanda uses
    "train": "en/c4-train.00000-of-01024.json.gz",
    "validation": "en/c4-validation.00000-of-00008.json.gz",
}
WIKITEXT2_FILES = {"train": "wiki.train.raw", "validation": "wiki.valid.raw", "test": "wiki.test.raw"}
C4_EVAL_DOCUMENTS = 1100  # Wanda evaluates on the first 1100 validation documents


@dataclass(frozen=True)
class Corpus:
    """Texts of one split and where they came from.

    texts: documents (C4) or lines (WikiText-2), in file order; a Hub column may be lazy.
    origin: changes whenever the source's content changes ("sha256:<digest>", or the Hub dataset fingerprint).
    label: short description for logs, e.g. "wikitext2/wiki.valid.raw".
    """

    texts: Sequence[str]
    origin: str
    label: str


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """The local data directory: `data_dir`, else env WANDA_DATA_DIR, else None (= the Hub)."""
    chosen = chosen_data_dir(data_dir)
    if chosen is None:
        return None
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise DataError(
            f"data directory {str(path)!r} does not exist; pass a folder laid out as "
            f"{', '.join(spec.layout for spec in registry.DATASETS.values())} (e.g. sample_data), or omit --data_dir to use the Hub"
        )
    return path


_DIGESTS: dict[tuple, str] = {}  # (resolved path, inode, size, mtime, ctime) -> content digest, once per process
_PARSED: dict[tuple, object] = {}  # (reader, file origins) -> what it read, so each file is parsed once per process


def file_origin(path: Path) -> str:
    """The origin of a file: "sha256:" + the digest of its bytes (the same content gives the same origin).

    Hashed once per process and file version (data files are a few MB: milliseconds); a rewrite
    changes the ctime even when it keeps the size and the mtime.
    """
    stat = path.stat()
    key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _DIGESTS[key] = "sha256:" + digest.hexdigest()
    return _DIGESTS[key]


def _parsed(reader: str, paths: Sequence[Path], read):
    """`read()`, once per process for the current content of `paths` (keyed by `reader` and their origins)."""
    key = (reader, *(file_origin(path) for path in paths))
    if key not in _PARSED:
        _PARSED[key] = read()
    return _PARSED[key]


def not_utf8(path: Path, err: UnicodeDecodeError) -> DataError:
    """A DataError naming `path` and the byte offset (of the decompressed text for .gz) where UTF-8 decoding fails."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    try:
        raw.decode("utf-8")  # the offset of `err` counts from the start of a read chunk, not of the file
    except UnicodeDecodeError as whole:
        err = whole
    byte = err.object[err.start : err.start + 1]
    return DataError(f"{path}: not UTF-8 text (byte 0x{byte.hex()} at offset {err.start}); convert it to UTF-8, "
                     "e.g. with iconv -f latin1 -t utf-8")


def _hub(dataset: str) -> tuple[str, str | None]:
    return registry.get(dataset).hub


def _missing(dataset: str, data_dir: Path, what: str) -> DataError:
    return DataError(
        f"{what} for {dataset} is missing under {data_dir}; expected {registry.get(dataset).layout} "
        f"(official file names), or omit --data_dir to load {_hub(dataset)[0]} from the Hub"
    )


# ---------------------------------------------------------------- Hub


def _load_hub(dataset: str, split: str, data_files: dict[str, str] | None = None):
    """One split of a registered dataset's Hub copy via `datasets`; network failures become a single DataError."""
    spec = registry.get(dataset)
    return load_hub_split(dataset, *spec.hub, split, spec.layout, data_files)


def load_hub_split(
    dataset: str, hub_id: str, config: str | None, split: str, layout: str, data_files: dict[str, str] | None = None
):
    """`datasets.load_dataset(hub_id, config, split=split)`; a missing package or network is one DataError.

    `dataset` names the data in the message; `layout` says which local files --data_dir must hold instead.
    """
    try:
        import datasets
        from datasets.exceptions import DatasetsError
    except ImportError as err:
        raise DataError(
            f"loading {dataset} from the Hub needs the `datasets` package ({err}); install it "
            f"or pass --data_dir DIR holding {layout}"
        ) from err
    try:
        return datasets.load_dataset(hub_id, config, split=split, data_files=data_files)
    except (OSError, DatasetsError) as err:  # ConnectionError, OfflineModeIsEnabled, HTTP and not-found errors
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise DataError(
            f"cannot load {dataset} ({hub_id}{' ' + config if config else ''}, split {split}) from the "
            f"Hugging Face Hub: {err.__class__.__name__}: {first_line}; without network pass --data_dir DIR "
            f"(or env WANDA_DATA_DIR) holding {layout}, e.g. --data_dir sample_data"
        ) from err


def _hub_origin(dataset: str, split: str, ds) -> str:
    return f"hub:{_hub(dataset)[0]}:{_hub(dataset)[1]}:{split}:{getattr(ds, '_fingerprint', '')}"


class _HubColumn(Sequence):
    """A lazy view of one string column of a Hub dataset (C4 train has 356k documents)."""

    def __init__(self, ds, column: str):
        self.ds, self.column = ds, column

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index):
        return self.ds[index][self.column]


# ---------------------------------------------------------------- WikiText-2


def _wikitext_lines(path: Path) -> list[str]:
    """Lines as the Hub dataset stores them: with their trailing newline, blank lines as ""."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line if line.strip() else "" for line in f]
    except UnicodeDecodeError as err:
        raise not_utf8(path, err) from err
    if not any(lines):
        raise DataError(f"{path} has no text; pass the official WikiText-2 raw file")
    return lines


def wikitext2_lines(split: str, data_dir: Path | None) -> Corpus:
    """WikiText-2 raw lines of "train", "validation" or "test"; a missing local train falls back to validation."""
    if split not in WIKITEXT2_FILES:
        raise ValueError(f"wikitext2 split {split!r} is not one of {', '.join(WIKITEXT2_FILES)}")
    if data_dir is None:
        ds = _load_hub("wikitext2", split)
        return Corpus(list(ds["text"]), _hub_origin("wikitext2", split, ds), f"{_hub('wikitext2')[0]} {split}")
    path = data_dir / "wikitext2" / WIKITEXT2_FILES[split]
    if not path.is_file() and split == "train":
        fallback = path.with_name(WIKITEXT2_FILES["validation"])
        if fallback.is_file():
            logger.warning("%s is missing; calibrating on the WikiText-2 validation split %s instead", path, fallback)
            path = fallback
    if not path.is_file():
        raise _missing("wikitext2", data_dir, f"{path.name}")
    return Corpus(_parsed("wikitext2", [path], lambda: _wikitext_lines(path)), file_origin(path), f"wikitext2/{path.name}")


# ---------------------------------------------------------------- C4


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a .jsonl / .json(l).gz file."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(
                        f"{path}:{lineno}: invalid JSON ({err.msg}); each line must be one JSON object"
                    ) from err
                if not isinstance(record, dict):
                    raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
                yield lineno, record
    except UnicodeDecodeError as err:
        raise not_utf8(path, err) from err
    except (OSError, EOFError) as err:  # a damaged .gz
        raise DataError(f"{path}: unreadable ({err.__class__.__name__}: {err})") from err


def _c4_files(data_dir: Path, split: str) -> list[Path]:
    folder = data_dir / "c4"
    if not folder.is_dir():
        return []
    patterns = ("*.json", "*.jsonl", "*.json.gz", "*.jsonl.gz")
    files = {p for pattern in patterns for p in folder.glob(pattern) if split in p.name}
    return sorted(files)


def _c4_local(files: list[Path]) -> Corpus:
    texts = _parsed("c4", files, lambda: [
        require_field(record, "text", str, f"{path}:{lineno}") for path in files for lineno, record in read_jsonl(path)
    ])
    origin = "|".join(file_origin(p) for p in files)
    return Corpus(texts, origin, "+".join(f"c4/{p.name}" for p in files))


def c4_holdout(n_documents: int) -> int:
    """Documents at the end of a C4 train sample held out for evaluation when no validation file exists."""
    return min(C4_EVAL_DOCUMENTS, n_documents // 2)


def c4_documents(role: str, data_dir: Path | None) -> Corpus:
    """C4 documents for "calibration" (the train shard) or "evaluation" (first 1100 validation documents).

    A local copy without a validation file holds out the last `c4_holdout(n)` train documents:
    they are the evaluation documents, and calibration draws only from the ones before them.
    """
    if role not in ("calibration", "evaluation"):
        raise ValueError(f"c4 role {role!r} is not one of calibration, evaluation")
    if data_dir is None:
        split = "train" if role == "calibration" else "validation"
        ds = _load_hub("c4", split, data_files={split: C4_HUB_FILES[split]})
        origin = _hub_origin("c4", split, ds)
        if role == "calibration":
            return Corpus(_HubColumn(ds, "text"), origin, f"{_hub('c4')[0]} {C4_HUB_FILES[split]}")
        texts = ds.select(range(min(C4_EVAL_DOCUMENTS, len(ds))))["text"]
        return Corpus(list(texts), origin, f"{_hub('c4')[0]} {C4_HUB_FILES[split]}")
    validation = _c4_files(data_dir, "validation")
    if role == "evaluation" and validation:
        corpus = _c4_local(validation)
        return Corpus(corpus.texts[:C4_EVAL_DOCUMENTS], corpus.origin, corpus.label)
    train = _c4_files(data_dir, "train")
    if not train:
        raise _missing("c4", data_dir, "a train file (c4/*train*.json[l][.gz])")
    corpus = _c4_local(train)
    if validation:
        return corpus
    n = len(corpus.texts)
    held = c4_holdout(n)
    if role == "evaluation":
        logger.warning(
            "no C4 validation file under %s; evaluating on the last %d of %d documents of %s, "
            "which calibration never uses",
            data_dir / "c4", held, n, corpus.label,
        )
        return Corpus(corpus.texts[n - held :], corpus.origin + ":holdout", corpus.label + " (held-out documents)")
    logger.warning(
        "no C4 validation file under %s; calibrating on the first %d of %d documents of %s "
        "(the last %d are held out for evaluation)", data_dir / "c4", n - held, n, corpus.label, held,
    )
    return Corpus(corpus.texts[: n - held], corpus.origin + ":calibration", corpus.label)


# ---------------------------------------------------------------- example datasets (SQuAD v2, GSM8K, BoolQ, ...)


def read_squad_json(path: Path) -> list[dict]:
    """The questions of a SQuAD v2.0 JSON file as {"id", "title", "context", "question", "answers"} dicts."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except UnicodeDecodeError as err:
        raise not_utf8(path, err) from err
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: invalid JSON ({err.msg}); expected the SQuAD v2.0 JSON format") from err
    if not isinstance(doc, dict):
        raise DataError(f"{path}: expected a JSON object with 'data' (SQuAD v2.0 format)")
    examples = []
    for a, article in enumerate(require_field(doc, "data", list, str(path))):
        where = f"{path}: data[{a}]"
        title = require_field(article, "title", str, where)
        for p, paragraph in enumerate(require_field(article, "paragraphs", list, where)):
            where_p = f"{where}.paragraphs[{p}]"
            context = require_field(paragraph, "context", str, where_p)
            for q, qa in enumerate(require_field(paragraph, "qas", list, where_p)):
                where_q = f"{where_p}.qas[{q}]"
                answers = [require_field(ans, "text", str, f"{where_q}.answers[{i}]")
                           for i, ans in enumerate(require_field(qa, "answers", list, where_q))]
                impossible = qa.get("is_impossible", not answers)
                examples.append({
                    "id": require_field(qa, "id", str, where_q),
                    "title": title,
                    "context": context,
                    "question": require_field(qa, "question", str, where_q),
                    "answers": [] if impossible else answers,
                })
    return examples


def _task_local(spec, path: Path) -> list[dict]:
    def read() -> list[dict]:
        if spec.read_file is not None:
            examples = spec.read_file(path)
        else:
            examples = [spec.parse_record(record, f"{path}:{lineno}") for lineno, record in read_jsonl(path)]
        if not examples:
            raise DataError(f"{path} has no examples; pass the official {spec.display} file ({spec.layout})")
        return examples

    return _parsed(spec.name, [path], read)


def task_examples(task: str, split: str, data_dir: Path | None) -> tuple[list[dict], str]:
    """All examples of a task split in file order, and their origin (see `load_task_examples`).

    The returned list is shared with later calls: treat it as read-only.
    """
    spec = registry.get(task, "examples")
    if split not in spec.files:
        raise ValueError(f"split {split!r} is not one of {', '.join(spec.files)} of {task} (eval = the official dev/test split)")
    local_name, hub_split = spec.files[split]
    if data_dir is None:
        ds = _load_hub(task, hub_split)
        rows = [spec.from_hub(row) if spec.from_hub else spec.parse_record(row, f"{spec.hub[0]} {hub_split} row {i}")
                for i, row in enumerate(ds.to_list())]
        return rows, _hub_origin(task, hub_split, ds)
    path = data_dir / task / local_name
    if not path.is_file() and split == "train":
        fallback = path.with_name(spec.files["eval"][0])
        if fallback.is_file():
            logger.warning(
                "%s is missing (no %s train split locally); using the eval split %s instead, "
                "so training/calibration data overlaps the evaluation data", path, task, fallback,
            )
            path = fallback
    if not path.is_file():
        raise _missing(task, data_dir, path.name)
    return _task_local(spec, path), file_origin(path)


def load_task_examples(task: str, split: str, data_dir=None, limit: int | None = None,
                       flag: str | None = None) -> list[dict]:
    """Examples of an example dataset (SQuAD v2, GSM8K, BoolQ, a zero-shot set) as plain dicts, the first `limit`.

    Args:
        task: a registered example dataset ("squad", "gsm8k", "boolq", "rte", ...).
        split: "train", or "eval" (SQuAD/BoolQ dev = Hub validation, GSM8K test). A local copy
            without a train file falls back to the eval file with a warning.
        data_dir: local data directory (else env WANDA_DATA_DIR, else the Hub).
        limit: keep only the first N examples (None = all).
        flag: the option that set `limit` (e.g. "--num_fewshot"): a limit above the split's size logs one
            warning naming it and the cap.
    Returns: squad {"id", "title", "context", "question", "answers" (gold texts, [] if unanswerable)}; gsm8k
        {"question", "answer" (ending "#### <number>")}; boolq {"question", "passage", "answer" (bool)}; a
        zero-shot set: the Hub row, plus "id" (its id field, where it has one).
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be None or >= 0, got {limit}")
    examples, _ = task_examples(task, split, resolve_data_dir(data_dir))
    if flag is not None and limit is not None and limit > len(examples):
        logger.warning("%s %d exceeds the %d examples of the %s %s split; using %d", flag, limit, len(examples),
                       task, split, len(examples))
    return [dict(ex) for ex in examples[:limit]]
