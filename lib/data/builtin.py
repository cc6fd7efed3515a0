"""The built-in datasets, registered in this order when `lib.data` is imported: WikiText-2 and C4 (text),
SQuAD v2, GSM8K and BoolQ (examples; calibration sources), then the zero-shot multiple-choice sets (RTE,
HellaSwag, WinoGrande, ARC-Easy, ARC-Challenge, OpenBookQA, PIQA: one validation file of Hub rows each).
Their readers are `lib.data.sources`', their prompts `lib.data.prompts`'; the evaluation tasks that score
them are `lib.eval.tasks`'.
"""

from __future__ import annotations

from pathlib import Path

from lib.data.prompts import (boolq_prompt, gsm8k_calibration_text, gsm8k_prompt, gsm8k_target, squad_prompt,
                              squad_target)
from lib.data.registry import DataError, DatasetSpec, register, require_field
from lib.data.sources import Corpus, c4_documents, read_squad_json, wikitext2_lines


def _wikitext2_corpus(role: str, data_dir: Path | None) -> Corpus:
    return wikitext2_lines("train" if role == "calibration" else "test", data_dir)


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
    corpus=c4_documents, sampling="documents", eval_separator=" ", eval_windows=256,  # Wanda: 256 x seqlen tokens
))
register(DatasetSpec(
    "squad", "SQuAD", "examples", "squad/{train,dev}-v2.0.json", ("rajpurkar/squad_v2", None),
    files={"train": ("train-v2.0.json", "train"), "eval": ("dev-v2.0.json", "validation")},
    read_file=read_squad_json,
    from_hub=lambda r: {"id": r["id"], "title": r["title"], "context": r["context"], "question": r["question"],
                        "answers": list(r["answers"]["text"])},
    calibration_text=lambda ex: squad_prompt(ex["context"], ex["question"]),
    prompt=lambda ex: squad_prompt(ex["context"], ex["question"]), target=lambda ex: squad_target(ex["answers"]),
))
register(DatasetSpec(
    "gsm8k", "GSM8K", "examples", "gsm8k/{train,test}.jsonl", ("openai/gsm8k", "main"),
    files={"train": ("train.jsonl", "train"), "eval": ("test.jsonl", "test")},
    parse_record=_gsm8k_record, from_hub=lambda r: {"question": r["question"], "answer": r["answer"]},
    calibration_text=lambda ex: gsm8k_calibration_text(ex["question"], ex["answer"]),
    prompt=lambda ex: gsm8k_prompt(ex["question"]), target=lambda ex: gsm8k_target(ex["answer"]),
))
register(DatasetSpec(
    "boolq", "BoolQ", "examples", "boolq/{train,dev}.jsonl", ("google/boolq", None),
    files={"train": ("train.jsonl", "train"), "eval": ("dev.jsonl", "validation")},
    parse_record=_boolq_record,
    from_hub=lambda r: {"question": r["question"], "passage": r["passage"], "answer": bool(r["answer"])},
    calibration_text=lambda ex: boolq_prompt(ex["passage"], ex["question"]),
))


def hub_rows(name: str, fields: tuple[str, ...], id_field: str | None = None):
    """The parse_record of a dataset kept as Hub rows: each row must have `fields`, and is kept as it is (with
    "id" = row[id_field], the example's identity in reports, when the row has it)."""
    def parse(record: dict, where: str) -> dict:
        missing = [f for f in fields if f not in record]
        if missing:
            raise DataError(f"{where}: {name} record lacks field(s) {', '.join(missing)} (Hub schema: {', '.join(fields)})")
        return record if record.get(id_field) is None else {**record, "id": record[id_field]}

    return parse


def register_validation_rows(name: str, display: str, hub: tuple[str, str | None], fields: tuple[str, ...],
                             id_field: str | None = None) -> DatasetSpec:
    """A zero-shot set: DATA_DIR/<name>/validation.jsonl, one Hub row per line (the Hub's validation split)."""
    return register(DatasetSpec(name, display, "examples", f"{name}/validation.jsonl", hub,
                                files={"eval": ("validation.jsonl", "validation")},
                                parse_record=hub_rows(name, fields, id_field)))


register_validation_rows("rte", "RTE", ("nyu-mll/glue", "rte"), ("sentence1", "sentence2", "label"), "idx")
register_validation_rows("hellaswag", "HellaSwag", ("Rowan/hellaswag", None),
                         ("activity_label", "ctx_a", "ctx_b", "endings", "label"), "ind")
register_validation_rows("winogrande", "WinoGrande", ("allenai/winogrande", "winogrande_xl"),
                         ("sentence", "option1", "option2", "answer"))
register_validation_rows("arc_easy", "ARC-e", ("allenai/ai2_arc", "ARC-Easy"), ("question", "choices", "answerKey"), "id")
register_validation_rows("arc_challenge", "ARC-c", ("allenai/ai2_arc", "ARC-Challenge"),
                         ("question", "choices", "answerKey"), "id")
register_validation_rows("openbookqa", "OBQA", ("allenai/openbookqa", "main"), ("question_stem", "choices", "answerKey"),
                         "id")
register_validation_rows("piqa", "PIQA", ("baber/piqa", None), ("goal", "sol1", "sol2", "label"))
